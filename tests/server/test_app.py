"""The ASGI app, driven in-process through httpx: routes, codec, errors, limits, auth, CORS,
thread offloading, event ids and the lifespan protocol."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from servegraph import Graph
from servegraph.engine.runner import AsyncRunner
from servegraph.event import EVENT_ID_HEADER, Event, Response
from servegraph.server import codec
from servegraph.server.app import ServingApp
from servegraph.settings import Limits, ServerSettings
from tests.models import models_steps
from tests.server.asgi import drive, lifespan, make_app, request, serve


def echo(body: Any) -> Any:
    return body


def echo_graph() -> Graph:
    graph = Graph()
    graph.to(echo).respond()
    return graph


def describe(event: Event) -> dict[str, Any]:
    body = event.body
    return {
        "method": event.method,
        "path": event.path,
        "query": dict(event.query),
        "header": event.headers.get("x-custom"),
        "content_type": event.content_type,
        "body_type": type(body).__name__,
        "body": body if not isinstance(body, bytes) else body.decode(),
        "id": event.id,
    }


def describe_graph() -> Graph:
    graph = Graph()
    graph.to(describe, full_event=True).respond()
    return graph


def summer_router() -> Graph:
    graph = Graph.router()
    graph.add_route("sum", models_steps.Summer)
    graph.add_route("label", models_steps.Label, class_args={"label": "x"})
    return graph


# -- flows: methods, event fields, codec ---------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_flow_answers_with_the_responder_result_and_the_event_fields(method: str) -> None:
    response = request(
        describe_graph(),
        method,
        "/some/path?a=1&b=two",
        json={"x": [1, 2]},
        headers={"x-custom": "yes"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["method"] == method
    assert answer["path"] == "/some/path"
    assert answer["query"] == {"a": "1", "b": "two"}
    assert answer["header"] == "yes"
    assert answer["content_type"] == "application/json"
    assert answer["body_type"] == "dict"
    assert answer["body"] == {"x": [1, 2]}


def test_get_without_a_body_is_an_event_with_no_body() -> None:
    response = request(describe_graph(), "GET", "/items?id=7")
    assert response.status_code == 200
    answer = response.json()
    assert answer["method"] == "GET"
    assert answer["query"] == {"id": "7"}
    assert answer["body"] is None


def test_json_body_is_decoded_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = codec._decode

    def counting(data: bytes) -> Any:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(codec, "_decode", counting)
    response = request(echo_graph(), "POST", "/", json={"a": 1})
    assert response.json() == {"a": 1}
    assert len(calls) == 1


def test_text_body_reaches_the_step_as_str_and_the_answer_is_text() -> None:
    response = request(
        describe_graph(),
        "POST",
        "/",
        content=b"hello",
        headers={"content-type": "text/plain; charset=utf-8"},
    )
    answer = response.json()
    assert (answer["body_type"], answer["body"]) == ("str", "hello")
    text = request(
        echo_graph(), "POST", "/", content=b"plain words", headers={"content-type": "text/plain"}
    )
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "plain words"


def test_binary_body_reaches_the_step_as_bytes_and_comes_back_as_bytes() -> None:
    payload = bytes(range(256))
    headers = {"content-type": "application/octet-stream"}
    response = request(echo_graph(), "POST", "/", content=payload, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == payload


def test_body_without_content_type_is_json_when_it_parses_else_bytes() -> None:
    parsed = request(describe_graph(), "POST", "/", content=b'{"n": 1}')
    assert parsed.json()["body"] == {"n": 1}
    raw = request(describe_graph(), "POST", "/", content=b"not json")
    assert (raw.json()["body_type"], raw.json()["body"]) == ("bytes", "not json")


def test_numpy_arrays_and_scalars_in_answers_are_encoded() -> None:
    def predict(body: Any) -> dict[str, Any]:
        return {
            "matrix": np.arange(6).reshape(2, 3),
            "mean": np.float32(1.5),
            "count": np.int64(3),
            "flag": np.bool_(True),
        }

    graph = Graph()
    graph.to(predict).respond()
    response = request(graph, "POST", "/", json={})
    assert response.status_code == 200
    assert response.json() == {
        "matrix": [[0, 1, 2], [3, 4, 5]],
        "mean": 1.5,
        "count": 3,
        "flag": True,
    }


def test_an_answer_that_cannot_be_encoded_is_a_500_not_a_crash() -> None:
    graph = Graph()
    graph.to(lambda body: object(), name="opaque").respond()
    response = request(graph, "POST", "/", json={})
    assert response.status_code == 500
    assert "cannot encode" in response.json()["error"]


# -- server routes ---------------------------------------------------------------------------


def test_server_routes_answer_health_metadata_and_models() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        live = await client.get("/v2/health/live")
        assert (live.status_code, live.json()) == (200, {"live": True})
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        metadata = (await client.get("/v2")).json()
        assert metadata["name"] == "servegraph"
        assert isinstance(metadata["version"], str)
        models = await client.get("/v2/models")
        assert models.json() == {"models": ["label", "sum"]}

    serve(summer_router(), scenario)


def test_ready_is_503_with_the_reason_when_a_model_failed_to_load() -> None:
    graph = Graph.router()
    graph.add_route("good", models_steps.Summer)
    graph.add_route("broken", models_steps.NeverLoads)
    response = request(graph, "GET", "/v2/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert "broken" in body["error"]
    assert "FileNotFoundError: weights missing" in body["error"]
    assert request(graph, "GET", "/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models", "/metrics"]
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_server_routes_refuse_other_methods_with_405(path: str, method: str) -> None:
    response = request(echo_graph(), method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert "not allowed" in response.json()["error"]


def test_methods_a_graph_does_not_take_are_405() -> None:
    response = request(echo_graph(), "OPTIONS", "/")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_metrics_count_answers_by_status() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> tuple[str, str]:
        for value in range(3):
            assert (await client.post("/", json=value)).status_code == 200
        assert (await client.get("/v2/health/live")).status_code == 200
        bad = await client.post("/", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400
        assert (await client.post("/v2/health/live")).status_code == 405
        first = await client.get("/metrics")
        assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
        second = await client.get("/metrics")
        return first.text, second.text

    first, second = serve(echo_graph(), scenario)
    assert 'servegraph_http_requests_total{status="200"} 4\n' in first
    assert 'servegraph_http_requests_total{status="400"} 1\n' in first
    assert 'servegraph_http_requests_total{status="405"} 1\n' in first
    assert "servegraph_http_in_flight 0\n" in first
    assert "# TYPE servegraph_http_requests_total counter" in first
    assert 'servegraph_http_requests_total{status="200"} 5\n' in second  # the first scrape


def test_openapi_document_describes_the_server_and_model_routes() -> None:
    graph = Graph.router()
    graph.add_route("sum", models_steps.Summer)
    graph.add_route("m:v2", models_steps.Label, class_args={"label": "x"})
    response = request(graph, "GET", "/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "servegraph"
    assert isinstance(document["info"]["version"], str)
    paths = document["paths"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models", "/metrics"):
        assert "get" in paths[path]
    assert "post" in paths["/v2/models/sum/infer"]
    assert "get" in paths["/v2/models/sum"]
    assert "get" in paths["/v2/models/sum/ready"]
    assert "post" in paths["/v2/models/m/versions/v2/infer"]
    for path, operations in paths.items():
        assert path.startswith("/")
        for method, operation in operations.items():
            assert method in {"get", "put", "post", "delete", "patch"}
            assert operation["responses"], (path, method)
            for status, answer in operation["responses"].items():
                assert status == "default" or status.isdigit()
                assert answer["description"]
            for parameter in operation.get("parameters", []):
                assert parameter["in"] == "path"
                assert "{" + parameter["name"] + "}" in path


def test_openapi_documents_every_method_of_the_graph_entry() -> None:
    paths = request(echo_graph(), "GET", "/openapi.json").json()["paths"]
    assert {"get", "post", "put"} <= set(paths["/{path}"])
    assert "echo" in paths["/{path}"]["post"]["summary"]


def test_docs_page_is_html_listing_the_operations() -> None:
    response = request(summer_router(), "GET", "/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith("<!doctype html>")
    assert "/v2/models/sum/infer" in page
    assert "href='/openapi.json'" in page


# -- model routes --------------------------------------------------------------------------


def test_model_infer_through_a_router() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        answer = await client.post("/v2/models/sum/infer", json={"inputs": [[1, 2], [3, 4]]})
        assert answer.status_code == 200
        assert answer.json()["outputs"] == [3, 7]
        assert answer.json()["model_name"] == "sum"
        label = await client.post("/v2/models/label/infer", json={"inputs": [[1]]})
        assert label.json()["outputs"] == ["x"]
        ready = await client.get("/v2/models/sum/ready")
        assert ready.status_code == 200

    serve(summer_router(), scenario)


def test_unknown_model_is_404_naming_the_known_ones() -> None:
    response = request(summer_router(), "POST", "/v2/models/nope/infer", json={"inputs": [[1]]})
    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]
    assert "known routes: sum, label" in response.json()["error"]


# -- error bodies ------------------------------------------------------------------------------


def explode(body: Any) -> Any:
    message = "boom"
    raise RuntimeError(message)


def test_step_exception_is_500_naming_the_step_without_a_traceback() -> None:
    graph = Graph()
    graph.to(explode).respond()
    response = request(graph, "POST", "/", json={}, headers={EVENT_ID_HEADER: "e-500"})
    assert response.status_code == 500
    assert response.json() == {"error": "RuntimeError: boom", "step": "explode"}
    assert "Traceback" not in response.text
    assert response.headers[EVENT_ID_HEADER] == "e-500"


def test_error_handler_result_is_a_200_answer() -> None:
    def recover(event: Event) -> dict[str, Any]:
        assert event.error is not None
        return {"recovered": event.error.step}

    graph = Graph()
    graph.to(explode).respond().error_handler(recover, full_event=True)
    response = request(graph, "POST", "/", json={})
    assert response.status_code == 200
    assert response.json() == {"recovered": "explode"}


def test_a_step_can_answer_with_its_own_status_and_headers() -> None:
    def teapot(body: Any) -> Response:
        return Response(418, {"short": "stout"}, (("x-teapot", "1"),))

    graph = Graph()
    graph.to(teapot).respond()
    response = request(graph, "POST", "/", json={})
    assert response.status_code == 418
    assert response.json() == {"short": "stout"}
    assert response.headers["x-teapot"] == "1"


def test_a_step_response_with_its_own_content_type_is_encoded_by_kind() -> None:
    def answer(body: Any) -> Response:
        kind = body["kind"]
        if kind == "csv":
            return Response(200, "a,b\n1,2\n", (("Content-Type", "text/csv"),))
        if kind == "bytes":
            return Response(200, b"\x00\x01", (("content-type", "image/x-test"),))
        return Response(201, {"x": 1}, (("content-type", "application/vnd.api+json"),))

    graph = Graph()
    graph.to(answer).respond()

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        csv = await client.post("/", json={"kind": "csv"})
        assert csv.headers.get_list("content-type") == ["text/csv"]
        assert csv.text == "a,b\n1,2\n"
        raw = await client.post("/", json={"kind": "bytes"})
        assert (raw.headers["content-type"], raw.content) == ("image/x-test", b"\x00\x01")
        data = await client.post("/", json={"kind": "json"})
        assert data.status_code == 201
        assert data.headers["content-type"] == "application/vnd.api+json"
        assert msgspec.json.decode(data.content) == {"x": 1}

    serve(graph, scenario)


def test_bad_json_is_400() -> None:
    headers = {"content-type": "application/json"}
    response = request(echo_graph(), "POST", "/", content=b'{"a": ', headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not valid JSON")


# -- limits --------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_with_a_content_length() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        small = await client.post("/", content=b"x" * 64)
        assert small.status_code == 200
        big = await client.post("/", content=b"x" * 65)
        assert big.status_code == 413
        assert "64 bytes" in big.json()["error"]

    serve(echo_graph(), scenario, max_body_bytes=64)


def test_body_over_the_limit_is_413_when_streamed_in_chunks() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 10

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        response = await client.post("/", content=chunks())
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert app.in_flight == 0

    serve(echo_graph(), scenario, max_body_bytes=64)


def test_chunked_body_under_the_limit_is_joined() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"a"', b": [1, ", b"2]}"):
            yield part

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        response = await client.post("/", content=chunks())
        assert response.json() == {"a": [1, 2]}

    serve(echo_graph(), scenario, max_body_bytes=64)


def test_a_slow_step_is_504_and_the_app_keeps_serving() -> None:
    async def slow(body: Any) -> Any:
        if body == "slow":
            await asyncio.sleep(5)
        return body

    graph = Graph()
    graph.to(slow).respond()

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        started = time.monotonic()
        late = await client.post("/", json="slow")
        assert time.monotonic() - started < 2
        assert late.status_code == 504
        assert "0.1 s" in late.json()["error"]
        assert EVENT_ID_HEADER in late.headers
        fast = await client.post("/", json="fast")
        assert (fast.status_code, fast.text) == (200, "fast")
        assert app.in_flight == 0

    serve(graph, scenario, timeout_s=0.1)


def test_a_slow_blocking_sync_step_is_504_too() -> None:
    def sleepy(body: Any) -> Any:
        time.sleep(0.3)
        return body

    graph = Graph()
    graph.to(sleepy).respond()
    response = request_with(graph, timeout_s=0.05)
    assert response.status_code == 504


def request_with(graph: Graph, **settings: Any) -> httpx.Response:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> httpx.Response:
        return await client.post("/", json={})

    return serve(graph, scenario, **settings)


def test_requests_beyond_max_in_flight_are_503_with_retry_after() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        both_held = asyncio.Event()
        held_count = 0

        async def held(body: Any) -> Any:
            nonlocal held_count
            held_count += 1
            if held_count == 2:
                both_held.set()
            await gate.wait()
            return body

        graph = Graph()
        graph.to(held).respond()

        async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
            async with asyncio.TaskGroup() as group:
                first = group.create_task(client.post("/", json=1))
                second = group.create_task(client.post("/", json=2))
                await both_held.wait()
                assert app.in_flight == 2
                refused = await client.post("/", json=3)
                metrics = await client.get("/metrics")
                gate.set()
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "limit of 2" in refused.json()["error"]
            assert "servegraph_http_in_flight 2\n" in metrics.text
            answers = [first.result(), second.result()]
            assert [(a.status_code, a.json()) for a in answers] == [(200, 1), (200, 2)]
            assert app.in_flight == 0
            assert (await client.post("/", json=4)).status_code == 200

        await drive(make_app(graph, max_in_flight=2), scenario)

    asyncio.run(main())


# -- auth and CORS -------------------------------------------------------------------------------


def test_bearer_token_is_required_except_for_liveness() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        missing = await client.post("/", json=1)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.post("/", json=1, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 403
        good = await client.post("/", json=1, headers={"authorization": "Bearer s3cret"})
        assert (good.status_code, good.json()) == (200, 1)
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401

    serve(echo_graph(), scenario, token="s3cret")


def test_cors_is_off_by_default() -> None:
    response = request(echo_graph(), "POST", "/", json=1, headers={"origin": "http://a.test"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = request(
        echo_graph(),
        "OPTIONS",
        "/",
        headers={"origin": "http://a.test", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 405


def test_cors_allowed_origin_gets_headers_and_others_do_not() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        allowed = await client.post("/", json=1, headers={"origin": "http://a.test"})
        assert allowed.headers["access-control-allow-origin"] == "http://a.test"
        assert allowed.headers["vary"] == "Origin"
        other = await client.post("/", json=1, headers={"origin": "http://evil.test"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers
        failed = await client.post(
            "/",
            content=b"{",
            headers={"origin": "http://a.test", "content-type": "application/json"},
        )
        assert failed.status_code == 400
        assert failed.headers["access-control-allow-origin"] == "http://a.test"

    serve(echo_graph(), scenario, cors_origins=("http://a.test",))


def test_cors_preflight_is_204_without_a_token() -> None:
    headers = {"origin": "http://a.test", "access-control-request-method": "POST"}

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        response = await client.options("/", headers=headers)
        assert response.status_code == 204
        assert response.content == b""
        assert "content-length" not in response.headers
        assert response.headers["access-control-allow-origin"] == "http://a.test"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert EVENT_ID_HEADER in response.headers["access-control-allow-headers"]
        assert "authorization" in response.headers["access-control-allow-headers"]

    serve(echo_graph(), scenario, cors_origins=("http://a.test",), token="s3cret")


def test_cors_any_origin_answers_star() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        response = await client.post("/", json=1, headers={"origin": "http://any.test"})
        assert response.headers["access-control-allow-origin"] == "*"

    serve(echo_graph(), scenario, cors_origins=("*",))


# -- threads -------------------------------------------------------------------------------------


class FastStep:
    """A sync class step that says it never blocks."""

    blocking = False

    def do(self, body: Any) -> str:
        return threading.current_thread().name


def thread_name(body: Any) -> str:
    return threading.current_thread().name


def test_blocking_sync_steps_run_in_the_thread_pool() -> None:
    graph = Graph()
    graph.to(thread_name).respond()

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> tuple[str, str]:
        answer = await client.post("/", json={})
        return answer.text, threading.current_thread().name

    step_thread, loop_thread = serve(graph, scenario)
    assert step_thread.startswith("servegraph-step")
    assert step_thread != loop_thread


@pytest.mark.parametrize("how", ["step option", "class attribute"])
def test_non_blocking_sync_steps_run_on_the_loop_thread(how: str) -> None:
    graph = Graph()
    if how == "step option":
        graph.to(thread_name, blocking=False).respond()
    else:
        graph.to(FastStep).respond()

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> tuple[str, str]:
        answer = await client.post("/", json={})
        return answer.text, threading.current_thread().name

    step_thread, loop_thread = serve(graph, scenario)
    assert step_thread == loop_thread


# -- event ids -----------------------------------------------------------------------------------


def test_event_id_header_goes_in_and_comes_back() -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        given = await client.post("/", json={}, headers={EVENT_ID_HEADER: "order-42"})
        assert given.json()["id"] == "order-42"
        assert given.headers[EVENT_ID_HEADER] == "order-42"
        fresh = await client.post("/", json={})
        assert re.fullmatch("[0-9a-f]{32}", fresh.headers[EVENT_ID_HEADER])
        assert fresh.json()["id"] == fresh.headers[EVENT_ID_HEADER]
        server_route = await client.get("/v2/health/live")
        assert EVENT_ID_HEADER not in server_route.headers

    serve(describe_graph(), scenario)


# -- lifespan ------------------------------------------------------------------------------------


class Closable:
    """Records that its close hook ran."""

    closed: list[str] = []  # noqa: RUF012 - a class-level log the test reads

    def do(self, body: Any) -> Any:
        return body

    def close(self) -> None:
        Closable.closed.append("closed")


class BrokenConstructor:
    def __init__(self) -> None:
        message = "no database"
        raise ConnectionError(message)

    def do(self, body: Any) -> Any:  # pragma: no cover - never built
        return body


def test_lifespan_startup_failure_reports_the_message() -> None:
    graph = Graph()
    graph.to(BrokenConstructor, name="db").respond()
    app = make_app(graph)
    sent = asyncio.run(lifespan(app, "startup"))
    assert len(sent) == 1
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "no database" in sent[0]["message"]
    assert "'db'" in sent[0]["message"]


def test_lifespan_startup_and_shutdown_run_the_close_hooks() -> None:
    Closable.closed.clear()
    graph = Graph()
    graph.to(Closable).respond()
    app = make_app(graph)

    async def main() -> list[str]:
        replies = await lifespan(app, "startup", "shutdown")
        return [reply["type"] for reply in replies]

    assert asyncio.run(main()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.plan is not None
    assert Closable.closed == ["closed"]


def test_first_request_starts_an_app_that_got_no_lifespan() -> None:
    app = make_app(echo_graph())

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            try:
                return await client.post("/", json=5)
            finally:
                await app.shutdown()

    response = asyncio.run(main())
    assert (response.status_code, response.json()) == (200, 5)


def test_an_unexpected_engine_error_is_a_500_and_the_app_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_run = AsyncRunner.run

    async def flaky_run(self: AsyncRunner, event: Event) -> Any:
        if event.body == "break":
            message = "engine bug"
            raise KeyError(message)
        return await real_run(self, event)

    monkeypatch.setattr(AsyncRunner, "run", flaky_run)

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> None:
        broken = await client.post("/", json="break")
        assert broken.status_code == 500
        assert broken.json() == {"error": "KeyError: 'engine bug'"}
        assert EVENT_ID_HEADER in broken.headers
        assert app.in_flight == 0
        fine = await client.post("/", json={"ok": True})
        assert (fine.status_code, fine.json()) == (200, {"ok": True})

    serve(echo_graph(), scenario)


def test_a_body_that_never_ends_times_out_and_frees_its_slot() -> None:
    graph = Graph()
    graph.to(lambda body: body, name="echo").respond()
    limits = Limits(timeout_s=0.1, max_in_flight=1)
    app = ServingApp(graph.spec, settings=ServerSettings(limits=limits))
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    chunks = [{"type": "http.request", "body": b'{"a":', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await asyncio.Event().wait()  # the rest of the body never comes
        raise AssertionError

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def main() -> None:
        await app.startup()
        await asyncio.wait_for(app(scope, receive, send), 2)
        assert app.in_flight == 0
        await app.shutdown()

    asyncio.run(main())
    assert sent[0]["status"] == 504
