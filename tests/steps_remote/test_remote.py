"""RemoteStep and BatchHttpRequests against a real HTTP service on 127.0.0.1 (uvicorn, in a thread
of the test process): answers, paths, expressions, retries, timeouts, concurrency and closing."""

from __future__ import annotations

import asyncio
import doctest
import itertools
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec
import pytest
import uvicorn

from servegraph import Event, Graph, StepError
from servegraph.errors import GraphError
from servegraph.event import EVENT_ID_HEADER
from servegraph.steps import remote
from servegraph.steps.remote import BatchHttpRequests, RemoteError, RemoteStep, RemoteTimeout

pytestmark = pytest.mark.integration

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]

_keys = itertools.count()


def unique(prefix: str) -> str:
    """A key of the service's counters that no other test uses."""
    return f"{prefix}-{next(_keys)}-{time.monotonic_ns()}"


class Service:
    """The HTTP service the steps call. Routes:

    - ``/echo...``: answers JSON ``{method, path, query, body, content_type, event_id, token}``;
    - ``/delay?s=&key=``: sleeps ``s`` seconds, counting requests of ``key`` in flight;
    - ``/flaky?key=&fail=&status=``: answers ``status`` ``fail`` times per key, then 200;
    - ``/status/CODE?key=``: answers CODE with a text body, counting hits per key;
    - ``/text``, ``/bytes``, ``/html``: answers of those kinds; ``/redirect``: 307 to /echo.
    """

    def __init__(self) -> None:
        self.hits: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most: dict[str, int] = defaultdict(int)
        self.base = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path: str = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        key = query.get("key", "")
        if path.startswith("/echo"):
            content_type = headers.get("content-type")
            decoded: Any = body.decode() if body else None
            if content_type == "application/json":
                decoded = msgspec.json.decode(body)
            answer = {
                "method": scope["method"],
                "path": path,
                "query": query,
                "body": decoded,
                "content_type": content_type,
                "event_id": headers.get(EVENT_ID_HEADER),
                "token": headers.get("x-token"),
            }
            await _answer(send, 200, msgspec.json.encode(answer))
        elif path == "/delay":
            self.hits[key] += 1
            self.in_flight[key] += 1
            self.most[key] = max(self.most[key], self.in_flight[key])
            try:
                await asyncio.sleep(float(query["s"]))
            finally:
                self.in_flight[key] -= 1
            await _answer(send, 200, msgspec.json.encode({"slept": float(query["s"])}))
        elif path == "/flaky":
            self.hits[key] += 1
            if self.hits[key] <= int(query["fail"]):
                await _answer(send, int(query.get("status", "503")), b"try again", "text/plain")
            else:
                await _answer(send, 200, msgspec.json.encode({"attempts": self.hits[key]}))
        elif path.startswith("/status/"):
            self.hits[key] += 1
            await _answer(send, int(path.rsplit("/", 1)[1]), b"no such thing", "text/plain")
        elif path == "/text":
            await _answer(send, 200, b"hello", "text/plain; charset=utf-8")
        elif path == "/bytes":
            await _answer(send, 200, b"\x00\x01", "application/octet-stream")
        elif path == "/html":
            await _answer(send, 200, b"<html>" + b"oops " * 100 + b"</html>", "text/html")
        elif path == "/redirect":
            await _answer(send, 307, b"", "text/plain", [(b"location", b"/echo/redirected")])
        else:
            await _answer(send, 404, b"unknown route", "text/plain")


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The service, listening on a free port of 127.0.0.1 for the whole module."""
    app = Service()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        http="h11",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the test HTTP service did not start on 127.0.0.1")
        time.sleep(0.01)
    app.base = f"http://127.0.0.1:{port}"
    yield app
    server.should_exit = True
    thread.join(10)
    sock.close()


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def call(step: RemoteStep | BatchHttpRequests, body: Any, **fields: Any) -> Any:
    """Run one event through the step in a fresh loop, close it, and return the new body."""

    async def run() -> Any:
        try:
            event = await step.do_event(Event(body, **fields))
            return event.body
        finally:
            await step.aclose()

    return asyncio.run(run())


def serve(graph: Graph, body: Any, **options: Any) -> Any:
    server = graph.mock_server()
    try:
        return server.test(body=body, **options)
    finally:
        server.close()


# -- RemoteStep: requests and answers ---------------------------------------------------------


def test_graph_posts_the_body_as_json_and_answers_the_parsed_reply(service: Service) -> None:
    graph = Graph()
    graph.to(RemoteStep, class_args={"url": f"{service.base}/echo"}, name="call").respond()
    answer = serve(graph, {"x": 1}, event_id="ev-1")
    assert answer["method"] == "POST"
    assert answer["body"] == {"x": 1}
    assert answer["content_type"] == "application/json"
    assert answer["event_id"] == "ev-1"  # the event's id goes along


def test_import_path_and_object_forms_build_the_same_step(service: Service) -> None:
    by_path = Graph()
    by_path.to("servegraph.steps.remote:RemoteStep", class_args={"url": f"{service.base}/echo"})
    by_object = Graph()
    by_object.to(RemoteStep(f"{service.base}/echo", headers={"X-Token": "t1"}))
    assert serve(by_path, [1, 2])["body"] == [1, 2]
    assert by_object.spec.step("remote").class_args == {
        "url": f"{service.base}/echo",
        "headers": {"X-Token": "t1"},
    }
    assert serve(by_object, {"a": 1})["token"] == "t1"


def test_no_body_is_a_get_and_method_subpath_and_path_are_applied(service: Service) -> None:
    assert call(RemoteStep(f"{service.base}/echo"), None)["method"] == "GET"
    put = call(RemoteStep(service.base, subpath="/echo/put", method="put"), {"a": 1})
    assert (put["method"], put["path"], put["body"]) == ("PUT", "/echo/put", {"a": 1})
    get = call(RemoteStep(f"{service.base}/echo", method="GET"), {"dropped": True})
    assert (get["method"], get["body"]) == ("GET", None)  # MLRun sends no body with GET
    by_path = call(RemoteStep(service.base, subpath="$path"), 1, path="/echo/from/event")
    assert by_path["path"] == "/echo/from/event"


def test_str_and_bytes_bodies_go_as_they_are(service: Service) -> None:
    text = call(RemoteStep(f"{service.base}/echo"), "plain words")
    assert (text["body"], text["content_type"]) == ("plain words", "text/plain; charset=utf-8")
    raw = call(RemoteStep(f"{service.base}/echo"), b"abc")
    assert (raw["body"], raw["content_type"]) == ("abc", "application/octet-stream")
    typed = RemoteStep(f"{service.base}/echo", headers={"Content-Type": "application/x-ndjson"})
    assert call(typed, "{}\n{}")["content_type"] == "application/x-ndjson"


def test_return_json_false_gives_text_or_bytes_and_still_parses_json(service: Service) -> None:
    assert call(RemoteStep(f"{service.base}/text", return_json=False), None) == "hello"
    assert call(RemoteStep(f"{service.base}/bytes", return_json=False), None) == b"\x00\x01"
    echoed = call(RemoteStep(f"{service.base}/echo", return_json=False), {"a": 1})
    assert echoed["body"] == {"a": 1}


def test_an_answer_that_is_not_json_fails_with_an_excerpt(service: Service) -> None:
    with pytest.raises(RemoteError, match="not JSON") as failure:
        call(RemoteStep(f"{service.base}/html", name="parse"), None)
    message = str(failure.value)
    assert "step 'parse': GET" in message
    assert "return_json=False" in message
    assert "oops" in message
    assert len(message) < 600  # an excerpt, not the whole page


def test_redirects_are_followed(service: Service) -> None:
    assert call(RemoteStep(f"{service.base}/redirect"), None)["path"] == "/echo/redirected"


def test_input_path_and_result_path(service: Service) -> None:
    step = RemoteStep(f"{service.base}/echo", input_path="req.data", result_path="resp.echo")
    body = call(step, {"req": {"data": {"a": 5}}, "other": 2})
    assert body["req"] == {"data": {"a": 5}}
    assert body["other"] == 2
    assert body["resp"]["echo"]["body"] == {"a": 5}  # intermediate dicts are created


def test_url_and_body_expressions(service: Service) -> None:
    graph = Graph()
    graph.to(
        RemoteStep,
        class_args={
            "url": service.base,
            "url_expression": "endpoint + '/echo/' + str(event['id'])",
            "body_expression": "{'value': event['value'] * 2}",
            "result_path": "answer",
        },
    )
    body = serve(graph, {"id": 7, "value": 21})
    assert body["answer"]["path"] == "/echo/7"
    assert body["answer"]["body"] == {"value": 42}


def test_mlrun_f_string_is_refused_with_the_spelling_to_use() -> None:
    with pytest.raises(GraphError) as failure:
        RemoteStep(url_expression="f'http://svc/{event[\"id\"]}'", name="call")
    message = str(failure.value)
    assert "step 'call'" in message
    assert "f-string" in message
    rewrite = "'http://svc/' + str(event['id'])"
    assert repr(rewrite) in message
    assert RemoteStep(url_expression=rewrite).url_of is not None  # the suggestion compiles
    with pytest.raises(GraphError, match=r"str\(\) and \+"):
        RemoteStep(url_expression="f'http://svc/{event!r}'")  # no exact rewrite: the rule


def test_expressions_are_checked_at_build_time() -> None:
    with pytest.raises(GraphError, match=r"body_expression: .*calling 'open' is not allowed"):
        RemoteStep("http://svc", body_expression="open('/etc/passwd')")
    graph = Graph()
    graph.to(RemoteStep, class_args={"url_expression": "__import__('os')"}, name="bad")
    with pytest.raises(GraphError, match="step 'bad'"):
        graph.mock_server()


def test_url_expression_must_give_a_str(service: Service) -> None:
    with pytest.raises(TypeError, match="url_expression gave a int"):
        call(RemoteStep(url_expression="event['id']"), {"id": 3})


def test_docstring_examples_run() -> None:
    result = doctest.testmod(remote, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "give url"),
        ({"url": "project/function"}, "not resolved: give the function's URL"),
        ({"url": "http://"}, "has no host"),
        ({"url": "http://svc", "headers_expression": "event"}, "unknown argument"),
        ({"url": "http://svc", "retries": -1}, "retries must be an int of at least 0"),
        ({"url": "http://svc", "max_in_flight": 0}, "max_in_flight must be an int"),
        ({"url": "http://svc", "timeout": 0}, "timeout must be a number of seconds"),
        ({"url": "http://svc", "backoff_factor": "1"}, "backoff_factor must be a number"),
        ({"url": "http://svc", "input_path": "a..b"}, "input_path must be a dotted path"),
        ({"url": "http://svc", "method": "PO ST"}, "method must be an HTTP method"),
        ({"url": "http://svc", "headers": {"X-N": 1}}, "headers must map header names"),
        ({"url_expression": "event", "subpath": "x"}, "subpath needs url"),
    ],
)
def test_bad_arguments_fail_at_build_naming_the_step(
    arguments: dict[str, Any], expected: str
) -> None:
    with pytest.raises(GraphError, match="step 'call'") as failure:
        RemoteStep(**arguments, name="call")
    assert expected in str(failure.value)


# -- failures, retries and timeouts -----------------------------------------------------------


def test_5xx_and_429_are_retried_until_they_succeed(service: Service) -> None:
    for status in (503, 429):
        key = unique("flaky")
        url = f"{service.base}/flaky?key={key}&fail=2&status={status}"
        step = RemoteStep(url, backoff_factor=0.01)  # the default 0.5 s would slow the test
        assert call(step, None) == {"attempts": 3}


def test_5xx_after_the_retries_names_step_method_url_status_and_excerpt(service: Service) -> None:
    key = unique("flaky")
    step = RemoteStep(
        f"{service.base}/flaky?key={key}&fail=5&token=secret",
        retries=1,
        backoff_factor=0.01,
        name="score",
    )
    with pytest.raises(RemoteError) as failure:
        call(step, {"x": 1})
    error = failure.value
    assert str(error) == (
        f"step 'score': POST {service.base}/flaky answered 503 Service Unavailable "
        "after 2 attempts: 'try again'"
    )
    assert (error.status, error.retryable, error.item) == (503, True, None)
    assert "secret" not in str(error)  # no query string: it may hold tokens
    assert service.hits[key] == 2


def test_4xx_is_never_retried(service: Service) -> None:
    key = unique("missing")
    step = RemoteStep(f"{service.base}/status/404?key={key}", backoff_factor=0.01, name="get")
    with pytest.raises(RemoteError, match="answered 404 Not Found \\(4xx answers are not retried"):
        call(step, None)
    assert service.hits[key] == 1


def test_connection_failures_are_retried_then_fail() -> None:
    step = RemoteStep(f"http://127.0.0.1:{closed_port()}/x", retries=2, backoff_factor=0.01)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="failed after 3 attempts: ConnectError") as failure:
        call(step, None)
    assert failure.value.retryable
    assert time.monotonic() - started < 5


def test_timeout_fails_the_event_quickly_with_a_clear_error(service: Service) -> None:
    step = RemoteStep(f"{service.base}/delay?s=2", timeout=0.2, name="slow")
    started = time.monotonic()
    with pytest.raises(RemoteTimeout) as failure:
        call(step, None)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0  # one attempt: timeouts are not retried
    assert str(failure.value) == (
        f"step 'slow': GET {service.base}/delay timed out after 0.2 s (timeouts are not "
        "retried; raise the step's timeout argument if the service is slow)"
    )
    assert isinstance(failure.value, TimeoutError)


def test_timeout_answers_504_through_a_server_and_the_client_still_works(
    service: Service,
) -> None:
    graph = Graph()
    graph.to(
        RemoteStep,
        class_args={"url_expression": "event['url']", "timeout": 0.2, "body_expression": "None"},
        name="slow",
    ).respond()
    server = graph.mock_server()
    try:
        failed = server.request("POST", "/", {"url": f"{service.base}/delay?s=1"})
        assert failed.status == 504
        assert failed.body["step"] == "slow"
        assert "timed out after 0.2 s" in failed.body["error"]
        with pytest.raises(StepError, match="step 'slow' failed: RemoteTimeout"):
            server.test(body={"url": f"{service.base}/delay?s=1"})
        # the cancelled requests left the connection pool usable
        assert server.test(body={"url": f"{service.base}/echo"})["method"] == "GET"
    finally:
        server.close()


# -- concurrency and closing ------------------------------------------------------------------


def test_max_in_flight_limits_requests_across_events(service: Service) -> None:
    key = unique("events")
    graph = Graph()
    url = f"{service.base}/delay?s=0.1&key={key}"
    graph.to(RemoteStep, class_args={"url": url, "max_in_flight": 3}).respond()

    async def run() -> list[Any]:
        server = graph.mock_server()
        try:
            return await asyncio.gather(*(server.atest(body={"n": n}) for n in range(9)))
        finally:
            await server.aclose()

    started = time.monotonic()
    answers = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert answers == [{"slept": 0.1}] * 9
    assert service.most[key] == 3
    assert elapsed >= 0.3  # 9 requests, 3 at a time, 0.1 s each


def test_aclose_closes_the_client_and_a_later_event_opens_a_new_one(service: Service) -> None:
    step = RemoteStep(f"{service.base}/echo")

    async def run() -> tuple[bool, bool, Any]:
        await step.do_event(Event({"a": 1}))
        first = step._client
        assert first is not None
        await step.aclose()
        again = await step.do_event(Event({"b": 2}))
        await step.aclose()
        return first.is_closed, step._client is None, again.body["body"]

    assert asyncio.run(run()) == (True, True, {"b": 2})


# -- BatchHttpRequests ------------------------------------------------------------------------


def test_batch_answers_in_item_order_with_bounded_concurrency(service: Service) -> None:
    key = unique("batch")
    step = BatchHttpRequests(url_expression="event['url']", max_in_flight=3)
    # The first items are the slowest: the answers still come back in item order.
    delays = [0.15, 0.1, 0.05, 0.0, 0.05, 0.1, 0.0, 0.05, 0.0, 0.0, 0.05, 0.0]
    items = [{"url": f"{service.base}/delay?s={s}&key={key}"} for s in delays]
    started = time.monotonic()
    answers = call(step, items)
    elapsed = time.monotonic() - started
    assert answers == [{"slept": s} for s in delays]
    assert service.most[key] == 3
    assert service.hits[key] == len(items)
    assert elapsed < 1.0  # concurrent: the delays add up to 0.55 s


def test_batch_in_a_graph_with_paths_and_expressions(service: Service) -> None:
    graph = Graph()
    graph.to(
        BatchHttpRequests,
        class_args={
            "url": f"{service.base}/echo",
            "url_expression": "endpoint + '/' + str(event['id'])",
            "body_expression": "event['data']",
            "input_path": "req",
            "result_path": "resp",
        },
    ).respond()
    body = serve(graph, {"req": [{"id": i, "data": i * 10} for i in range(3)]})
    assert [answer["path"] for answer in body["resp"]] == ["/echo/0", "/echo/1", "/echo/2"]
    assert [answer["body"] for answer in body["resp"]] == [0, 10, 20]
    assert all(answer["event_id"] is None for answer in body["resp"])  # items share the event


def test_batch_failing_item_fails_the_event_naming_its_index(service: Service) -> None:
    key = unique("batch-fail")
    items: list[Any] = [
        {"url": f"{service.base}/echo"},
        {"url": f"{service.base}/status/404?key={key}"},
        {"url": f"{service.base}/delay?s=2"},
    ]
    step = BatchHttpRequests(url_expression="event['url']", body_expression="None", name="fan")
    started = time.monotonic()
    with pytest.raises(RemoteError) as failure:
        call(step, items)
    assert time.monotonic() - started < 1.0  # the slow item's request was cancelled
    assert failure.value.item == 1
    assert str(failure.value).startswith(f"step 'fan', item 1: GET {service.base}/status/404 ")


def test_batch_of_nothing_and_of_a_non_list() -> None:
    step = BatchHttpRequests("http://127.0.0.1:9/never", name="fan")
    assert call(step, []) == []
    with pytest.raises(TypeError, match="step 'fan': BatchHttpRequests needs a list"):
        call(step, {"not": "a list"})


def test_batch_items_are_retried_one_by_one(service: Service) -> None:
    keys = [unique("batch-flaky") for _ in range(3)]
    items = [f"{service.base}/flaky?key={key}&fail={n}" for n, key in enumerate(keys)]
    step = BatchHttpRequests(url_expression="event", backoff_factor=0.01, method="GET")
    assert call(step, items) == [{"attempts": 1}, {"attempts": 2}, {"attempts": 3}]
