"""The ASGI application of a graph: a plain ASGI callable, lean on the request path.

Routes: the server routes of ``responses.py`` (health, server metadata, model list), ``GET
/metrics``, ``GET /openapi.json`` and ``GET /docs``; every other path is an event for the graph
(its Open Inference Protocol model routes included). Steps and models are built and loaded at
startup (the ASGI lifespan, or the first request when a server sends none); sync steps that may
block run in a bounded thread pool; at shutdown every step's close hook runs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..context import Context
from ..engine.lifecycle import await_all, close_steps, start_steps
from ..engine.plan import Plan, compile_plan
from ..engine.runner import AsyncRunner
from ..errors import ProtocolError, ServegraphError
from ..event import EVENT_ID_HEADER, Event, Response
from ..graph.resolve import Namespace
from ..graph.segments import MAIN, has_queues
from ..graph.spec import EngineKind, GraphSpec
from ..monitoring.metrics import Metrics
from ..settings import ServerSettings

if TYPE_CHECKING:
    from ..monitoring.records import PredictionRecorder
    from ..streams.runtime import StreamRuntime

from .codec import BINARY, JSON, TEXT, encode_answer
from .codec import decode_body as decode_request_body
from .limits import Deadlines
from .openapi import docs_page, openapi_document
from .responses import (
    HEALTH_LIVE,
    SERVER_PATHS,
    as_response,
    error_response,
    server_response,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("servegraph.server")
ENTRY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(Exception):
    """Internal: the request body passed the size limit."""


class ServingApp:
    """Serves one graph over HTTP (an ASGI 3 application).

    Example:
        >>> from servegraph import Graph
        >>> graph = Graph()
        >>> _ = graph.to(lambda x: x, name="echo").respond()
        >>> app = ServingApp(graph.spec)  # run it with uvicorn, or `servegraph serve`
    """

    def __init__(
        self,
        spec: GraphSpec,
        *,
        settings: ServerSettings | None = None,
        namespace: Namespace = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings or ServerSettings()
        self.metrics: Metrics | None = Metrics() if self.settings.metrics else None
        self._recorder: PredictionRecorder | None = None
        """Per-step counters and custom metrics, served at ``/metrics`` (None: metrics off)."""
        self.namespace = namespace
        self.params = dict(params or {})
        self.plan: Plan | None = None
        self.streams: StreamRuntime | None = None
        self.statuses: Counter[int] = Counter()
        self._openapi: dict[str, Any] | None = None
        self._runner: AsyncRunner | None = None
        self._starting: asyncio.Lock | None = None
        self._in_flight = 0
        timeout_s = self.settings.limits.timeout_s
        self._deadlines = Deadlines(timeout_s) if timeout_s is not None else None
        self._executor = ThreadPoolExecutor(self.settings.limits.threads, "servegraph-step")
        self._token = self.settings.token
        self._expected_token = (self._token or "").encode()
        origins = self.settings.cors_origins
        self._cors_any = "*" in origins
        self._cors = frozenset(origins)

    @property
    def in_flight(self) -> int:
        """Events being served now."""
        return self._in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle ------------------------------------------------------------------------

    async def startup(self) -> None:
        """Build the steps and load the models (in a thread: loading may be slow)."""
        if self._runner is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._runner is None:
                self.plan = await asyncio.to_thread(self._compile)
                if self.streams is not None:
                    await self.streams.check(MAIN)  # an unreachable broker fails startup
                await start_steps(self.plan.instances)  # so does an unreachable table
                if self._recorder is not None:
                    await self._recorder.astart()
                if self._deadlines is not None:
                    self._deadlines.start()
                self._runner = AsyncRunner(self.plan)

    async def shutdown(self) -> None:
        """Stop the deadline watchdog, run every step's close hook, stop the thread pool."""
        if self._deadlines is not None:
            await self._deadlines.aclose()
        if self.plan is not None:
            await await_all(close_steps(self.plan.instances))
        if self._recorder is not None:
            await self._recorder.aclose()
        if self.streams is not None:
            await self.streams.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compile(self) -> Plan:
        tracing = None
        if self.settings.tracing:
            from ..monitoring.tracing import Tracing

            tracing = Tracing()
        context = Context(
            params={**self.spec.params, **self.params}, metrics=self.metrics, tracing=tracing
        )
        if self.spec.tracking is not None:
            from ..monitoring.records import install_recorder

            self._recorder = install_recorder(context, self.spec.tracking)
        if has_queues(self.spec):
            # The front runs the main segment: its queue steps answer once the event is written.
            from ..streams.runtime import StreamRuntime

            self.streams = StreamRuntime(
                self.spec, namespace=self.namespace, context=context, offload=self._executor
            )
            return self.streams.compile(MAIN, engine=EngineKind.ASYNC)
        return compile_plan(
            self.spec,
            namespace=self.namespace,
            context=context,
            engine=EngineKind.ASYNC,
            offload=self._executor,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("the graph could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests -------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        method: str = scope["method"]
        path: str = scope["path"]
        cors = self._cors_headers(headers) if self._cors else ()
        if cors and method == "OPTIONS" and "access-control-request-method" in headers:
            await self._send(send, Response(204, b"", cors + _PREFLIGHT), cors=())
            return
        denied = self._check_token(path, headers)
        if denied is not None:
            await self._send(send, denied, cors)
            return
        if self._runner is None:
            await self.startup()
        response = self._server_route(method, path)
        if response is not None:
            await self._send(send, response, cors)
            return
        response, event_id = await self._event_response(scope, receive, headers, method, path)
        await self._send(send, response, cors, event_id)

    def _server_route(self, method: str, path: str) -> Response | None:
        if path in _OWN_PATHS:
            return self._own_route(path) if method == "GET" else _not_allowed("GET")
        if method not in ENTRY_METHODS:
            return _not_allowed(", ".join(sorted(ENTRY_METHODS)))
        return None

    def _own_route(self, path: str) -> Response:
        assert self.plan is not None
        answered = server_response(path, self.plan.instances)
        if answered is not None:
            return answered
        if path == "/metrics":
            return Response(200, self._metrics(), (("content-type", _PROMETHEUS),))
        if self._openapi is None:
            self._openapi = openapi_document(self.spec, self.plan)
        if path == "/openapi.json":
            return Response(200, self._openapi)
        page = docs_page(self._openapi)
        return Response(200, page.encode(), (("content-type", "text/html; charset=utf-8"),))

    async def _event_response(
        self, scope: Scope, receive: Receive, headers: dict[str, str], method: str, path: str
    ) -> tuple[Response, str | None]:
        """The graph's answer to one request, and the event's id (None: no event was made)."""
        limits = self.settings.limits
        if self._in_flight >= limits.max_in_flight:
            message = f"the server is at its limit of {limits.max_in_flight} events in flight"
            return Response(503, {"error": message}, (("retry-after", "1"),)), None
        self._in_flight += 1
        # The deadline covers reading the body too: a client that never finishes its body
        # must not hold an in-flight slot for ever.
        deadlines = self._deadlines
        task = asyncio.current_task()
        if deadlines is not None and task is not None:
            deadlines.enter(task)
        event: Event | None = None
        try:
            body = await _read_body(receive, headers, limits.max_body_bytes)
            content_type = headers.get("content-type")
            event = Event(
                decode_request_body(body, content_type),
                id=headers.get(EVENT_ID_HEADER),
                headers=headers,
                method=method,
                path=path,
                query=_query(scope["query_string"]),
                content_type=content_type,
                trigger="http",
            )
            assert self._runner is not None
            response = as_response(await self._runner.run(event))
        except asyncio.CancelledError:
            if deadlines is None or task is None or not deadlines.is_expired(task):
                raise
            task.uncancel()  # cancelled by the watchdog: the event took too long
            message = f"the event was not answered within {limits.timeout_s} s"
            response = Response(504, {"error": message})
            logger.error(
                "event %s timed out",
                event.id if event else "-",
                extra={"event_id": event.id if event else None},
            )
        except BodyTooLarge:
            message = f"the body is larger than the limit of {limits.max_body_bytes} bytes"
            response = Response(413, {"error": message})
        except ServegraphError as exc:
            response = error_response(exc)
            if response.status >= 500:
                logger.error(
                    "event %s failed",
                    event.id if event else "-",
                    exc_info=exc,
                    extra={
                        "event_id": event.id if event else None,
                        "step": getattr(exc, "step", None),
                    },
                )
        except Exception as exc:  # the request boundary: a bug, not the client's fault
            response = error_response(exc)
            logger.exception(
                "event %s failed unexpectedly",
                event.id if event else "-",
                extra={"event_id": event.id if event else None},
            )
        finally:
            if deadlines is not None and task is not None:
                deadlines.leave(task)
            self._in_flight -= 1
        return response, event.id if event is not None else None

    def _check_token(self, path: str, headers: Mapping[str, str]) -> Response | None:
        token = self._token
        if token is None or path == HEALTH_LIVE:
            return None
        given = headers.get("authorization")
        if given is None:
            challenge = (("www-authenticate", "Bearer"),)
            return Response(401, {"error": "a bearer token is required"}, challenge)
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.encode(), self._expected_token
        ):
            return Response(403, {"error": "the bearer token is not valid"})
        return None

    def _cors_headers(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        origin = headers.get("origin")
        if origin is None or not (self._cors_any or origin in self._cors):
            return ()
        return (
            ("access-control-allow-origin", "*" if self._cors_any else origin),
            ("vary", "Origin"),
        )

    async def _send(
        self,
        send: Send,
        response: Response,
        cors: tuple[tuple[str, str], ...],
        event_id: str | None = None,
    ) -> None:
        try:
            payload, raw = _encoded(response)
        except TypeError as exc:  # an answer that is not JSON-able (msgspec's error)
            logger.error(
                "the answer could not be encoded (status %d)", response.status, exc_info=exc
            )
            kept = tuple((k, v) for k, v in response.headers if k.lower() != "content-type")
            response = Response(500, {"error": f"the answer could not be encoded: {exc}"}, kept)
            payload, raw = _encoded(response)
        self.statuses[response.status] += 1
        if event_id is not None:
            raw.append((_EVENT_ID_HEADER, event_id.encode("latin-1")))
        if cors:
            raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in cors)
        await send({"type": "http.response.start", "status": response.status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    def _metrics(self) -> bytes:
        lines = [
            "# HELP servegraph_http_requests_total HTTP answers by status.",
            "# TYPE servegraph_http_requests_total counter",
            *(
                f'servegraph_http_requests_total{{status="{status}"}} {count}'
                for status, count in sorted(self.statuses.items())
            ),
            "# HELP servegraph_http_in_flight Events being served now.",
            "# TYPE servegraph_http_in_flight gauge",
            f"servegraph_http_in_flight {self._in_flight}",
        ]
        if self.metrics is not None:
            return self.metrics.render(lines)
        return ("\n".join(lines) + "\n").encode()


async def _read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            message_text = "the client closed the connection before sending the whole body"
            raise ProtocolError(message_text)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _encoded(response: Response) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of ``response``: encoded by kind, or as its own content type says.

    Raises:
        TypeError: the body is not JSON-able.
    """
    extra = response.headers
    if not extra and response.status not in _NO_BODY:  # the common answer
        payload, kind = encode_answer(response.body)
        return payload, [
            (b"content-type", _CONTENT_TYPES.get(kind) or kind.encode("latin-1")),
            (b"content-length", b"%d" % len(payload)),
        ]
    content_type: str | None = None
    for name, value in extra:
        if name.lower() == "content-type":
            content_type = value
    if response.status in _NO_BODY:  # no content-type or content-length (RFC 9110)
        return b"", [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]
    if content_type is None:
        payload, content_type = encode_answer(response.body)
    else:
        payload = encode_answer(response.body)[0]
        extra = tuple((k, v) for k, v in extra if k.lower() != "content-type")
    return payload, [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra),
    ]


def _query(raw: bytes) -> dict[str, str] | None:
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else None


def _not_allowed(allowed: str) -> Response:
    return Response(
        405, {"error": f"method not allowed here; allowed: {allowed}"}, (("allow", allowed),)
    )


_EVENT_ID_HEADER = EVENT_ID_HEADER.encode("latin-1")
_CONTENT_TYPES = {kind: kind.encode("latin-1") for kind in (JSON, TEXT, BINARY)}
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_OWN_PATHS = SERVER_PATHS | {"/metrics", "/openapi.json", "/docs"}
_NO_BODY = frozenset({204, 304})
_PREFLIGHT = (
    ("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ("access-control-allow-headers", "authorization, content-type, " + EVENT_ID_HEADER),
    ("access-control-max-age", "600"),
)
