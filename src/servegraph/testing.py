"""The mock server: run a graph in-process, with no network, for tests and notebooks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .context import Context
from .engine.lifecycle import (
    await_all,
    close_steps,
    has_start_hooks,
    shutdown_loop,
    start_steps,
)
from .engine.plan import Plan, compile_plan
from .engine.runner import AsyncRunner, SyncRunner
from .errors import ProtocolError, ServegraphError
from .event import EVENT_ID_HEADER, Event
from .graph.resolve import Namespace
from .graph.segments import MAIN, has_queues
from .graph.spec import EngineKind, GraphSpec
from .monitoring.metrics import Metrics
from .monitoring.tracing import Tracing
from .server.responses import Response, as_response, error_response, server_response

if TYPE_CHECKING:
    from .monitoring.records import PredictionRecorder
    from .streams.consumer import SegmentConsumer
    from .streams.runtime import StreamRuntime

_decode_json = msgspec.json.decode


class MockServer:
    """Compile a graph once and send it events in-process.

    With the sync engine (the default when no step is async) events run with no event loop.
    With the async engine, events whose steps never suspend still finish without a loop round
    trip; the others are driven to completion on the server's own loop, so ``test`` always
    returns the finished answer. Inside a running loop, use ``await server.atest(...)``.

    Example:
        >>> from servegraph import Graph
        >>> graph = Graph()
        >>> _ = graph.to(lambda x: x * 10, name="times_ten").respond()
        >>> server = graph.mock_server()
        >>> server.test(body=4)
        40
    """

    def __init__(
        self,
        spec: GraphSpec,
        *,
        engine: EngineKind | str | None = None,
        namespace: Namespace = None,
        params: Mapping[str, Any] | None = None,
        verbose: bool = False,
        metrics: bool = False,
        tracing: bool | Tracing = False,
    ) -> None:
        chosen = EngineKind(engine) if engine is not None else spec.engine
        self.metrics: Metrics | None = Metrics() if metrics else None
        """Per-step counters and custom metrics (``metrics=True``), ``render()`` for the text."""
        self.context = Context(
            params={**spec.params, **(params or {})},
            is_mock=True,
            verbose=verbose,
            metrics=self.metrics,
            tracing=tracing if isinstance(tracing, Tracing) else Tracing() if tracing else None,
        )
        self.streams: StreamRuntime | None = None
        self.results: dict[str, list[Any]] = {}
        """The answers of each segment after a queue, in the order its events finished."""
        self._consumers: list[SegmentConsumer] = []
        self._instances: tuple[object, ...] = ()
        if has_queues(spec):
            self.plan: Plan = self._compile_streams(spec, namespace, chosen)
        else:
            self.plan = compile_plan(spec, namespace=namespace, context=self.context, engine=chosen)
        self.engine = (
            EngineKind.ASYNC
            if chosen is EngineKind.ASYNC or (chosen is EngineKind.AUTO and self.plan.is_async)
            else EngineKind.SYNC
        )
        self._sync = None if self.plan.is_async else SyncRunner(self.plan)
        self._async = AsyncRunner(self.plan)
        self._run: Callable[[Event], Awaitable[Any]] = (
            self._async.run if self.streams is None else self._run_through_streams
        )
        self.recorder: PredictionRecorder | None = None
        """The prediction recorder when the graph tracks models (``graph.track``)."""
        if spec.tracking is not None:
            from .monitoring.records import install_recorder

            broker = self.streams.broker if self.streams is not None else None
            self.recorder = install_recorder(self.context, spec.tracking, broker=broker)
            if self.recorder is not None:
                self.recorder.start()
        self._starting: asyncio.Future[None] | None = None
        if has_start_hooks(self._instances or self.plan.instances):
            self._running = self._run
            self._run = self._start_then_run
        self._loop: asyncio.AbstractEventLoop | None = None

    def _compile_streams(self, spec: GraphSpec, namespace: Namespace, engine: EngineKind) -> Plan:
        """Run every queue on a broker of this server's own; consumers drain after each event."""
        from .streams.memory import MemoryBroker
        from .streams.runtime import StreamRuntime

        self.streams = StreamRuntime(
            spec,
            namespace=namespace,
            context=self.context,
            broker=MemoryBroker(),
            options={"retry_delay_s": 0.0},
        )
        engine = EngineKind.ASYNC if engine is EngineKind.AUTO else engine
        plan = self.streams.compile(MAIN, engine=engine)
        instances = list(plan.instances)
        for segment in self.streams.segments:
            if segment == MAIN:
                continue
            segment_plan = self.streams.compile(segment)
            instances.extend(segment_plan.instances)
            consumer = self.streams.consumer(segment, consumer="mock", plan=segment_plan)
            consumer.answers = self.results[segment] = []
            self._consumers.append(consumer)
        self._instances = tuple(instances)
        return plan

    async def _start_then_run(self, event: Event) -> Any:
        """Events start the steps (``astart`` hooks: tables, clients) before they run; every
        event that arrives while they start waits for the same start."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(
                start_steps(self._instances or self.plan.instances)
            )
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except BaseException:
            if starting.done() and self._starting is starting:
                self._starting = None  # failed: the next event tries again
            raise
        self._run = self._running
        return await self._running(event)

    async def _run_through_streams(self, event: Event) -> Any:
        answer = await self._async.run(event)
        await self.drain_streams()
        return answer

    async def drain_streams(self) -> None:
        """Run the segments after the queues until their streams are empty (``test`` does it
        after every event)."""
        moved = True
        while moved:
            moved = False
            for consumer in self._consumers:
                while await consumer.poll(block_ms=0):
                    moved = True
                await consumer.drain()

    def test(
        self,
        path: str = "/",
        body: Any = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        event_id: str | None = None,
    ) -> Any:
        """Send one event and return the graph's answer.

        ``method`` defaults to POST with a body and GET without. A ``str`` or ``bytes`` body is
        decoded as JSON when the content type is empty or JSON.

        Raises:
            StepError: a step raised and had no error handler; it names the step, and the
                original exception is its ``__cause__``.
            ProtocolError: the body is not valid JSON.
        """
        event = self._event(path, body, method, headers, content_type, event_id)
        if self.engine is EngineKind.SYNC:
            assert self._sync is not None  # the sync engine is only chosen for sync plans
            return self._sync.run(event)
        return self._drive(self._run(event))

    async def atest(
        self,
        path: str = "/",
        body: Any = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        event_id: str | None = None,
    ) -> Any:
        """Like ``test``, awaited inside a running event loop."""
        event = self._event(path, body, method, headers, content_type, event_id)
        return await self._run(event)

    def run_event(self, event: Event) -> Any:
        """Run a ready-made Event and return its answer."""
        if self.engine is EngineKind.SYNC:
            assert self._sync is not None
            return self._sync.run(event)
        return self._drive(self._run(event))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Response:
        """Send one request and return the answer with its HTTP status, as the HTTP server
        would: errors become ``{"error": ..., "step": ...}`` answers (400 bad input, 404
        unknown model, 501, 503 not ready or overloaded, 504, 500), and the server routes
        (``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models``) are answered.

        Example:
            >>> from servegraph import Graph
            >>> graph = Graph()
            >>> _ = graph.to(lambda x: 1 / x, name="invert").respond()
            >>> server = graph.mock_server()
            >>> server.request("POST", "/", 4).body
            0.25
            >>> failed = server.request("POST", "/", 0)
            >>> failed.status, failed.body["step"], failed.body["error"]
            (500, 'invert', 'ZeroDivisionError: division by zero')
        """
        answered = server_response(path, self.plan.instances)
        if answered is not None:
            return answered
        try:
            event = self._event(path, body, method, headers, content_type, None)
            return as_response(self.run_event(event))
        except ServegraphError as exc:
            return error_response(exc)

    async def arequest(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Response:
        """Like ``request``, awaited inside a running event loop."""
        answered = server_response(path, self.plan.instances)
        if answered is not None:
            return answered
        try:
            event = self._event(path, body, method, headers, content_type, None)
            return as_response(await self._run(event))
        except ServegraphError as exc:
            return error_response(exc)

    def wait_for_completion(self) -> None:
        """Return once every event sent so far has finished (``test`` already waits for its)."""

    def close(self) -> None:
        """Release the server: run every step object's ``aclose()`` or ``close()`` hook (sync or
        async, last built first), then cancel what is left on the server's loop and close it."""
        pending = close_steps(self._instances or self.plan.instances)
        if pending:
            self._ensure_loop().run_until_complete(await_all(pending))
        if self.recorder is not None:
            self.recorder.close()
        if self.streams is not None:
            self._ensure_loop().run_until_complete(self.streams.aclose())
        if self._loop is not None:
            self._finalizer()
            self._loop = None

    async def aclose(self) -> None:
        """Like ``close``, awaited inside a running event loop (the server's own loop unused)."""
        await await_all(close_steps(self._instances or self.plan.instances))
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.streams is not None:
            await self.streams.aclose()
        if self._loop is not None:
            self._finalizer()
            self._loop = None

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _drive(self, coroutine: Any) -> Any:
        if not self.plan.is_async:
            # No step can suspend: the coroutine finishes on its first step, no loop needed.
            try:
                coroutine.send(None)
            except StopIteration as done:
                return done.value
            coroutine.close()  # pragma: no cover - a sync plan never suspends
            message = "a synchronous plan suspended"  # pragma: no cover
            raise RuntimeError(message)  # pragma: no cover
        return self._ensure_loop().run_until_complete(coroutine)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            # A mock server dropped without close() still releases its loop.
            self._finalizer = weakref.finalize(self, shutdown_loop, self._loop)
        return self._loop

    @staticmethod
    def _event(
        path: str,
        body: Any,
        method: str | None,
        headers: Mapping[str, str] | None,
        content_type: str | None,
        event_id: str | None,
    ) -> Event:
        # Only what differs from an Event's defaults is set: this runs once per test() call.
        if body.__class__ is str or body.__class__ is bytes:
            body = decode_body(body, content_type)
        event = Event(body)
        if path != "/":
            event.path = path
        if method is not None:
            event.method = method
        elif body is None:
            event.method = "GET"
        if headers:
            event.headers = dict(headers)
            event_id = event_id or headers.get(EVENT_ID_HEADER)
        if content_type is not None:
            event.content_type = content_type
        if event_id is not None:
            event.id = event_id
        return event


def decode_body(body: str | bytes, content_type: str | None) -> Any:
    """Decode a JSON text body: required with a JSON content type, tried with none.

    Raises:
        ProtocolError: the content type is JSON and the body does not parse.
    """
    if content_type and "json" not in content_type:
        return body
    try:
        return _decode_json(body)
    except msgspec.DecodeError as exc:
        if not content_type:
            return body
        message = f"the body is not valid JSON ({content_type}): {exc}"
        raise ProtocolError(message) from exc
