"""Remote calls: steps that call an HTTP service for each event (``RemoteStep``) or for each item
of a list body (``BatchHttpRequests``), servegraph's equivalents of MLRun's
``mlrun.serving.remote`` classes, with the same arguments.

Each step owns one ``httpx.AsyncClient`` (a connection pool), opened on the first event inside
the running loop and closed by ``aclose()`` when the server stops. At most ``max_in_flight``
requests of a step are in flight at once, across all its events. One attempt may take
``timeout`` seconds, from connecting to the last byte of the answer; a timed-out attempt fails
the event and is never retried (the service may have acted on the request, and retrying would
multiply the wait). Connection failures and 429/5xx answers are retried ``retries`` times,
``backoff_factor * 2 ** n`` seconds apart; 4xx answers never are. Failures raise ``RemoteError``
(``RemoteTimeout`` for timeouts) naming the step, the method, the URL without its query string
and, for answers, the status and the start of the answer's body.

Expressions (``url_expression``, ``body_expression``) go through the safe evaluator
(``servegraph.expressions``), compiled when the step is built; ``event`` is the request's input
(the body, or the part at ``input_path``; in a batch, each item). httpx is imported when a
client opens, so that importing this module stays cheap.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import msgspec

from ..context import Context
from ..engine.paths import get_path, set_path
from ..errors import BackendError, GraphError, Problem
from ..event import EVENT_ID_HEADER, Event
from ..expressions import ExpressionError, compile_expression
from .base import BuiltinStep

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT_S = 10.0
"""Seconds one attempt may take when ``timeout`` is not given."""
DEFAULT_RETRIES = 3
"""Retries after the first attempt when ``retries`` is not given."""
DEFAULT_BACKOFF_FACTOR = 0.5
"""Seconds before the first retry when ``backoff_factor`` is not given (then 1, 2, ...)."""
DEFAULT_MAX_IN_FLIGHT = 8
"""Requests a step has in flight at once when ``max_in_flight`` is not given (storey's default)."""
EXCERPT_CHARS = 200
"""Characters of an answer's body that an error quotes."""
PATH_SUBPATH = "$path"
"""The ``subpath`` that appends each event's path to ``url`` (MLRun's convention)."""

_encode_json = msgspec.json.encode
_decode_json = msgspec.json.decode
_JSON = {"content-type": "application/json"}
_TEXT = {"content-type": "text/plain; charset=utf-8"}
_BYTES = {"content-type": "application/octet-stream"}
_NONE: dict[str, str] = {}


class RemoteError(BackendError):
    """A remote call failed: the service answered 4xx/5xx (after the retries, for 429/5xx), or
    could not be reached, or its answer could not be read.

    Fields: ``step``, ``method``, ``url`` (without query string or credentials), ``status``
    (None when there was no answer), ``item`` (the index in a batch, else None) and
    ``retryable`` (whether trying the event again later may help: 429, 5xx, connection
    failures and timeouts).
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        method: str,
        url: str,
        status: int | None,
        item: int | None,
        retryable: bool,
    ) -> None:
        self.step = step
        self.method = method
        self.url = url
        self.status = status
        self.item = item
        super().__init__(message, retryable=retryable)


class RemoteTimeout(RemoteError, TimeoutError):
    """An attempt took longer than the step's ``timeout`` (servers answer such events 504)."""


class _HttpStep(BuiltinStep):
    """What both remote steps share: their configuration, client and request with retries."""

    default_name = "remote"

    def __init__(
        self,
        url: str | None,
        subpath: str | None,
        method: str | None,
        headers: Mapping[str, str] | None,
        url_expression: str | None,
        body_expression: str | None,
        return_json: bool,
        input_path: str | None,
        result_path: str | None,
        max_in_flight: int | None,
        retries: int | None,
        backoff_factor: float | None,
        timeout: float | None,
        name: str | None,
        unknown: Mapping[str, Any],
    ) -> None:
        given = {
            "url": url,
            "subpath": subpath,
            "method": method,
            "headers": headers,
            "url_expression": url_expression,
            "body_expression": body_expression,
            "input_path": input_path,
            "result_path": result_path,
            "max_in_flight": max_in_flight,
            "retries": retries,
            "backoff_factor": backoff_factor,
            "timeout": timeout,
        }
        self.arguments = {key: value for key, value in given.items() if value is not None}
        if return_json is not True:
            self.arguments["return_json"] = return_json
        self.name = name or self.default_name
        check = _Checker(self.name)
        if unknown:
            accepted = ", ".join([*given, "return_json"])
            check.fail(f"unknown argument(s) {', '.join(sorted(unknown))}; accepted: {accepted}")
        if url is None and url_expression is None:
            check.fail("give url (e.g. 'http://scorer:8080/predict') or url_expression")
        self.endpoint = _endpoint(check, url, subpath)
        self.append_path = subpath == PATH_SUBPATH
        self.method = None if method is None else check.method(method)
        self.headers = check.headers(headers)
        self.return_json = check.flag("return_json", return_json)
        self.input_keys = check.path("input_path", input_path)
        self.result_keys = check.path("result_path", result_path)
        self.max_in_flight = check.count("max_in_flight", max_in_flight, DEFAULT_MAX_IN_FLIGHT, 1)
        self.retries = check.count("retries", retries, DEFAULT_RETRIES, 0)
        self.backoff_factor = check.seconds(
            "backoff_factor", backoff_factor, DEFAULT_BACKOFF_FACTOR, zero=True
        )
        self.timeout = check.seconds("timeout", timeout, DEFAULT_TIMEOUT_S, zero=False)
        self.url_of: Callable[[Any, str], Any] | None = (
            None
            if url_expression is None
            else _expression(check, "url_expression", url_expression, ("event", "endpoint"))
        )
        self.body_of: Callable[[Any], Any] | None = (
            None
            if body_expression is None
            else _expression(check, "body_expression", body_expression, ("event",))
        )
        # Content headers per kind of body; none where the user's headers set the type.
        user_sets_type = any(key.lower() == "content-type" for key in self.headers)
        self._typed = (_NONE, _NONE, _NONE) if user_sets_type else (_JSON, _TEXT, _BYTES)
        self._sends_id = not any(key.lower() == EVENT_ID_HEADER for key in self.headers)
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._connect_errors: tuple[type[BaseException], ...] = ()
        self._bad_urls: tuple[type[BaseException], ...] = ()
        self._timeouts: tuple[type[BaseException], ...] = ()
        self._transport_errors: tuple[type[BaseException], ...] = ()
        self._http_errors: tuple[type[BaseException], ...] = ()

    # -- per request --------------------------------------------------------------------------

    def _url(self, data: Any, event: Event, item: int | None) -> str:
        if self.url_of is not None:
            url = self.url_of(data, self.endpoint)
            if not isinstance(url, str):
                where = _where(self.name, item)
                message = f"{where}: url_expression gave a {type(url).__name__}, not a str URL"
                raise TypeError(message)
            return url
        if self.append_path:
            return f"{self.endpoint}/{event.path.lstrip('/')}"
        return self.endpoint

    def _encode(self, payload: Any, item: int | None) -> tuple[bytes | None, dict[str, str]]:
        """The request's content and content headers: JSON, or str/bytes as they are."""
        if payload is None:
            return None, _NONE
        if isinstance(payload, bytes):
            return payload, self._typed[2]
        if isinstance(payload, str):
            return payload.encode(), self._typed[1]
        if isinstance(payload, bytearray | memoryview):
            return bytes(payload), self._typed[2]
        try:
            return _encode_json(payload), self._typed[0]
        except (TypeError, msgspec.EncodeError) as exc:
            message = (
                f"{_where(self.name, item)}: cannot send a {type(payload).__name__} as JSON "
                f"({exc}); make the body JSON-able (dicts, lists, str, numbers), or str or bytes"
            )
            raise TypeError(message) from exc

    async def _call(
        self, url: str, payload: Any, extra: Mapping[str, str] | None, item: int | None
    ) -> Any:
        """Send one request, retrying as the module doc says; return the decoded answer."""
        client = self._client or self._open()
        content, headers = self._encode(payload, item)
        method = self.method or ("GET" if content is None else "POST")
        if method == "GET":
            content, headers = None, _NONE  # MLRun sends no body with GET
        if extra:
            headers = {**headers, **extra}
        attempt = 0
        while True:
            async with self._slots:
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await client.request(
                            method, url, content=content, headers=headers
                        )
                except self._bad_urls as exc:
                    raise self._failure(method, url, item, None, str(exc), False) from exc
                except self._connect_errors as exc:
                    if attempt >= self.retries:
                        reason = f"{_attempts(attempt)}{type(exc).__name__}: {exc}"
                        raise self._failure(method, url, item, None, reason, True) from exc
                except self._timeouts as exc:
                    raise self._timed_out(method, url, item) from exc
                except self._http_errors as exc:  # read errors, protocol errors, redirects
                    reason = f"failed: {type(exc).__name__}: {exc}"
                    transient = isinstance(exc, self._transport_errors)
                    raise self._failure(method, url, item, None, reason, transient) from exc
                else:
                    status = response.status_code
                    if status < 400:
                        return self._decode(response, method, url, item)
                    transient = status >= 500 or status == 429
                    if not transient or attempt >= self.retries:
                        raise self._answer_error(response, method, url, item, attempt, transient)
            # A connection failure or a 429/5xx answer, with retries left: back off (not
            # holding a slot, so that other events' requests go meanwhile) and try again.
            await asyncio.sleep(self.backoff_factor * 2**attempt)
            attempt += 1

    def _decode(self, response: httpx.Response, method: str, url: str, item: int | None) -> Any:
        content = response.content
        kind = response.headers.get("content-type", "").lower()
        if self.return_json or kind.startswith("application/json"):
            if not content:
                return None
            try:
                return _decode_json(content)
            except msgspec.DecodeError as exc:
                reason = (
                    f"answered {response.status_code} with a body that is not JSON "
                    f"({exc}): {_excerpt(response)}; set return_json=False to get it as it is"
                )
                raise self._failure(method, url, item, response.status_code, reason, False) from exc
        if kind.startswith("text/"):
            return response.text
        return content

    # -- errors -------------------------------------------------------------------------------

    def _failure(
        self,
        method: str,
        url: str,
        item: int | None,
        status: int | None,
        reason: str,
        retryable: bool,
    ) -> RemoteError:
        shown = _shown_url(url)
        message = f"{_where(self.name, item)}: {method} {shown} {reason}"
        return RemoteError(
            message,
            step=self.name,
            method=method,
            url=shown,
            status=status,
            item=item,
            retryable=retryable,
        )

    def _answer_error(
        self,
        response: httpx.Response,
        method: str,
        url: str,
        item: int | None,
        attempt: int,
        transient: bool,
    ) -> RemoteError:
        status = response.status_code
        phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
        if transient:
            after = f" after {attempt + 1} attempt{'s' if attempt else ''}"
        else:
            after = " (4xx answers are not retried)"
        reason = f"answered {status}{phrase}{after}: {_excerpt(response)}"
        return self._failure(method, url, item, status, reason, transient)

    def _timed_out(self, method: str, url: str, item: int | None) -> RemoteTimeout:
        shown = _shown_url(url)
        message = (
            f"{_where(self.name, item)}: {method} {shown} timed out after {self.timeout:g} s "
            "(timeouts are not retried; raise the step's timeout argument if the service is "
            "slow)"
        )
        return RemoteTimeout(
            message,
            step=self.name,
            method=method,
            url=shown,
            status=None,
            item=item,
            retryable=True,
        )

    # -- life cycle ---------------------------------------------------------------------------

    def _open(self) -> httpx.AsyncClient:
        """Open the client on the first request, inside the loop that runs the step."""
        import httpx

        limits = httpx.Limits(
            max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
        )
        self._client = httpx.AsyncClient(
            headers=dict(self.headers),
            timeout=httpx.Timeout(self.timeout),
            limits=limits,
            follow_redirects=True,
        )
        self._slots = asyncio.Semaphore(self.max_in_flight)  # bound to this loop on first use
        self._bad_urls = (httpx.InvalidURL, httpx.UnsupportedProtocol)
        self._connect_errors = (httpx.ConnectError,)
        self._timeouts = (httpx.TimeoutException, TimeoutError)
        self._transport_errors = (httpx.TransportError,)
        self._http_errors = (httpx.HTTPError,)
        return self._client

    async def aclose(self) -> None:
        """Close the client and its connections (the server calls it when it stops)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RemoteStep(_HttpStep):
    """Call an HTTP service for each event; its answer becomes the body (or goes to
    ``result_path``).

    The request goes to ``url`` (plus ``subpath``; ``"$path"`` appends the event's path), or to
    the URL that ``url_expression`` computes. Its body is the event body (or the part at
    ``input_path``), or what ``body_expression`` computes: sent as JSON, str and bytes as they
    are. The method is ``method``, else POST when there is a body and GET when it is None. The
    event's id goes along in the ``servegraph-event-id`` header. See docs/steps-remote.md.

    Raises:
        GraphError: when built, for a bad argument or an expression outside the safe grammar
            (an MLRun f-string gets the ``str()`` and ``+`` spelling to use instead).
        RemoteError: per event, when the call fails (``RemoteTimeout`` when it times out).

    Example:
        >>> step = RemoteStep("http://scorer:8080", subpath="predict", timeout=2)
        >>> step.endpoint, step.timeout, step.retries
        ('http://scorer:8080/predict', 2.0, 3)
    """

    default_name = "remote"

    def __init__(
        self,
        url: str | None = None,
        subpath: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        url_expression: str | None = None,
        body_expression: str | None = None,
        return_json: bool = True,
        input_path: str | None = None,
        result_path: str | None = None,
        max_in_flight: int | None = None,
        retries: int | None = None,
        backoff_factor: float | None = None,
        timeout: float | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            url,
            subpath,
            method,
            headers,
            url_expression,
            body_expression,
            return_json,
            input_path,
            result_path,
            max_in_flight,
            retries,
            backoff_factor,
            timeout,
            name,
            kwargs,
        )

    async def do_event(self, event: Event) -> Event:
        body = event.body
        data = body if self.input_keys is None else get_path(body, self.input_keys, self.name)
        url = self._url(data, event, None)
        payload = data if self.body_of is None else self.body_of(data)
        extra = {EVENT_ID_HEADER: event.id} if self._sends_id else None
        answer = await self._call(url, payload, extra, None)
        if self.result_keys is None:
            event.body = answer
        else:
            set_path(body, self.result_keys, answer, self.name)
        return event


class BatchHttpRequests(_HttpStep):
    """Call an HTTP service once for each item of a list body (e.g. a ``Batch`` step's output),
    at most ``max_in_flight`` at once, and answer the list of answers in item order.

    Each item is a request's input, as the body is for ``RemoteStep`` (``url_expression`` and
    ``body_expression`` see one item as ``event``). One failing item fails the event, after its
    retries, with an error naming the item's index; the other requests are cancelled.

    Example:
        >>> step = BatchHttpRequests(url_expression="event['url']", body_expression="event['data']")
        >>> step.endpoint, step.max_in_flight
        ('', 8)
    """

    default_name = "batch_http"

    def __init__(
        self,
        url: str | None = None,
        subpath: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        url_expression: str | None = None,
        body_expression: str | None = None,
        return_json: bool = True,
        input_path: str | None = None,
        result_path: str | None = None,
        max_in_flight: int | None = None,
        retries: int | None = None,
        backoff_factor: float | None = None,
        timeout: float | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            url,
            subpath,
            method,
            headers,
            url_expression,
            body_expression,
            return_json,
            input_path,
            result_path,
            max_in_flight,
            retries,
            backoff_factor,
            timeout,
            name,
            kwargs,
        )

    async def do_event(self, event: Event) -> Event:
        body = event.body
        items = body if self.input_keys is None else get_path(body, self.input_keys, self.name)
        if not isinstance(items, list | tuple):
            where = "the body" if self.input_keys is None else "input_path"
            message = (
                f"step {self.name!r}: BatchHttpRequests needs a list at {where} (one request "
                f"per item, e.g. after a Batch step), got {type(items).__name__}"
            )
            raise TypeError(message)
        answers = await self._call_all(items, event)
        if self.result_keys is None:
            event.body = answers
        else:
            set_path(body, self.result_keys, answers, self.name)
        return event

    async def _call_all(self, items: Sequence[Any], event: Event) -> list[Any]:
        """Call for every item with at most ``max_in_flight`` workers; answers in item order."""
        answers: list[Any] = [None] * len(items)
        indices = iter(range(len(items)))

        async def work() -> None:
            for index in indices:  # shared: each index is taken by one worker
                data = items[index]
                url = self._url(data, event, index)
                payload = data if self.body_of is None else self.body_of(data)
                answers[index] = await self._call(url, payload, None, index)

        workers = min(len(items), self.max_in_flight)
        if workers <= 1:
            await work()
            return answers
        tasks = [asyncio.ensure_future(work()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One item failed (or the event was cancelled): stop the others' requests too.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return answers


# -- building ---------------------------------------------------------------------------------


class _Checker:
    """Checks a step's arguments when it is built; each failure is a GraphError naming it."""

    def __init__(self, step: str) -> None:
        self.step = step

    def fail(self, message: str) -> NoReturn:
        raise GraphError([Problem(self.step, message)])

    def method(self, method: object) -> str:
        if not isinstance(method, str) or not method.isalpha():
            self.fail(f"method must be an HTTP method such as 'POST' or 'GET', not {method!r}")
        return method.upper()

    def headers(self, headers: object) -> dict[str, str]:
        if headers is None:
            return {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
        ):
            self.fail(f"headers must map header names to str values, not {headers!r}")
        return dict(headers)

    def flag(self, argument: str, value: object) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{argument} must be True or False, not {value!r}")
        return bool(value)

    def path(self, argument: str, path: object) -> tuple[str, ...] | None:
        if path is None:
            return None
        if not isinstance(path, str) or not path or not all(path.split(".")):
            self.fail(f"{argument} must be a dotted path like 'data.features', not {path!r}")
        return tuple(path.split("."))

    def count(self, argument: str, value: object, default: int, least: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self.fail(f"{argument} must be an int of at least {least}, not {value!r}")
        return value

    def seconds(self, argument: str, value: object, default: float, *, zero: bool) -> float:
        if value is None:
            return default
        least = "0 or more" if zero else "more than 0"
        message = f"{argument} must be a number of seconds, {least}, not {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(message)
        if value < 0 or (value == 0 and not zero):
            self.fail(message)
        return float(value)


def _endpoint(check: _Checker, url: str | None, subpath: str | None) -> str:
    """``url`` joined with ``subpath`` (kept apart when it is ``$path``); '' without url."""
    if subpath is not None and not isinstance(subpath, str):
        check.fail(f"subpath must be a str, not {subpath!r}")
    if url is None:
        if subpath is not None:
            check.fail("subpath needs url (url_expression computes the whole URL)")
        return ""
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
        check.fail(
            f"url must be an http:// or https:// URL, not {url!r} (MLRun function names such "
            "as 'project/function' are not resolved: give the function's URL)"
        )
    if not urlsplit(url).netloc:
        check.fail(f"url {url!r} has no host")
    if subpath is None or subpath == PATH_SUBPATH:
        return url.rstrip("/")
    return f"{url.rstrip('/')}/{subpath.lstrip('/')}"


def _expression(
    check: _Checker, argument: str, text: object, names: tuple[str, ...]
) -> Callable[..., Any]:
    """Compile ``text`` once; an MLRun f-string gets the spelling that servegraph accepts."""
    if not isinstance(text, str):
        check.fail(f"{argument} must be an expression string, not {type(text).__name__}")
    try:
        expression = compile_expression(str(text), names=names)
    except ExpressionError as exc:
        if "f-string" in exc.reason:
            rewrite = _concatenation(str(text))
            instead = (
                f"rewrite it as {rewrite!r}"
                if rewrite is not None
                else "rewrite it with str() and +, e.g. \"'http://svc/' + str(event['id'])\""
            )
            message = (
                f"{argument} {text!r} is an f-string, which servegraph's safe expressions do "
                f"not run (they never reach eval); {instead}"
            )
        else:
            message = f"{argument}: " + "; ".join(problem.message for problem in exc.problems)
        raise GraphError([Problem(check.step, message)]) from exc
    evaluate = expression._evaluate  # the checked closure: no arity check per event
    if len(names) == 1:
        return lambda value: evaluate((value,))
    return lambda *values: evaluate(values)


def _concatenation(text: str) -> str | None:
    """The ``str()`` and ``+`` spelling of a plain f-string, or None when it has conversions or
    format specs (parsed, never run)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.JoinedStr):
        return None
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(repr(value.value))
        elif (
            isinstance(value, ast.FormattedValue)
            and value.conversion == -1
            and value.format_spec is None
        ):
            parts.append(f"str({ast.unparse(value.value)})")
        else:
            return None
    return " + ".join(parts) or "''"


# -- messages ---------------------------------------------------------------------------------


def _where(step: str, item: int | None) -> str:
    return f"step {step!r}" if item is None else f"step {step!r}, item {item}"


def _attempts(attempt: int) -> str:
    return f"failed after {attempt + 1} attempts: " if attempt else "failed: "


def _shown_url(url: str) -> str:
    """The URL as errors show it: no credentials, query string or fragment (they may hold
    secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "..."
    return repr(text)
