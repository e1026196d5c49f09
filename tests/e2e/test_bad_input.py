"""Bad input against a real ``servegraph serve`` process: each gets a clear JSON error (or,
where uvicorn answers before the app, uvicorn's own answer), and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server_process import Server, Start

TOTAL = "tests.e2e.bad_input_graphs:build_total"
MODELS = "tests.e2e.serve_graphs:build_models"
LIMIT = 10 * 1024 * 1024  # the server's default --max-body-bytes
MIB = 1024 * 1024
JSON = "application/json"


@pytest.fixture
def total_server(start: Start) -> Server:
    return start(TOTAL)


def assert_serving(server: Server) -> None:
    """A good request to the ``total`` graph answers 200."""
    response = httpx.post(server.url + "/", json={"a": 1, "b": 2}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"total": 3}


def assert_json_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == JSON
    assert response.json() == {"error": error}


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw ``request`` bytes; return the status, headers and body of the answer.

    The server must close the connection after answering (``connection: close``, or a 400 of
    uvicorn's own); the socket timeout bounds the wait.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split(" ")[1]), headers, body


# -- 1. JSON that does not parse ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b'{"a": 1, "b": ', JSON, "Input data was truncated"),
        (b'{"a": 1, "b": 2', JSON, "Input data was truncated"),
        (b"{a: 1}", JSON, "JSON is malformed: object keys must be strings (byte 1)"),
        (b'{"a": 1} {"b": 2}', JSON, "JSON is malformed: trailing characters (byte 10)"),
        (
            b"\xff\xfe",
            "application/json; charset=utf-8",
            "JSON is malformed: invalid character (byte 0)",
        ),
        (
            b"{'a': 1}",
            "application/vnd.api+json",
            "JSON is malformed: object keys must be strings (byte 1)",
        ),
    ],
    ids=[
        "truncated-object",
        "truncated-value",
        "unquoted-key",
        "trailing",
        "not-utf8",
        "json-suffix",
    ],
)
def test_json_that_does_not_parse_is_400(
    total_server: Server, body: bytes, content_type: str, detail: str
) -> None:
    response = httpx.post(
        total_server.url + "/", content=body, headers={"content-type": content_type}, timeout=5
    )
    assert_json_error(response, 400, f"the body is not valid JSON: {detail}")
    assert_serving(total_server)


# -- 2. a content type the graph does not expect ------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        # text/* reaches the step as a str, other types as bytes: the step fails (500, named)
        ("text/plain", "TypeError: string indices must be integers, not 'str'"),
        ("application/xml", "TypeError: byte indices must be integers or slices, not str"),
        ("application/octet-stream", "TypeError: byte indices must be integers or slices, not str"),
    ],
)
def test_a_body_of_another_content_type_fails_in_the_step_that_needs_a_dict(
    total_server: Server, content_type: str, error: str
) -> None:
    response = httpx.post(
        total_server.url + "/",
        content=b'{"a": 1, "b": 2}',
        headers={"content-type": content_type},
        timeout=5,
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == JSON
    assert response.json() == {"error": error, "step": "total"}
    assert response.headers["servegraph-event-id"]
    assert_serving(total_server)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_json_without_a_json_content_type_is_still_decoded(
    total_server: Server, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx.post(
        total_server.url + "/", content=b'{"a": 1, "b": 2}', headers=headers, timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"total": 3}


# -- 3. a body past the size limit --------------------------------------------------------------

TOO_LARGE = f"the body is larger than the limit of {LIMIT} bytes"


def test_a_20_mib_body_with_a_content_length_is_413(total_server: Server) -> None:
    body = b" " * (20 * MIB)
    with httpx.Client(base_url=total_server.url, timeout=10) as client:
        response = client.post("/", content=body, headers={"content-type": JSON})
        assert response.request.headers["content-length"] == str(20 * MIB)
        assert_json_error(response, 413, TOO_LARGE)
        # the same keep-alive connection still serves (the rest of the body was discarded)
        again = client.post("/", json={"a": 2, "b": 3})
        assert again.status_code == 200
        assert again.json() == {"total": 5}
    assert_serving(total_server)


def test_a_20_mib_body_streamed_without_a_content_length_is_413(total_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * MIB

    with httpx.Client(base_url=total_server.url, timeout=10) as client:
        response = client.post("/", content=chunks(), headers={"content-type": JSON})
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_json_error(response, 413, TOO_LARGE)
        again = client.post("/", json={"a": 2, "b": 3})
        assert again.status_code == 200
    assert_serving(total_server)


def test_a_body_just_within_the_limit_is_read(total_server: Server) -> None:
    body = b'{"a": 1, "b": 2}'
    padded = body + b" " * (LIMIT - len(body))  # JSON allows trailing whitespace
    response = httpx.post(
        total_server.url + "/", content=padded, headers={"content-type": JSON}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"total": 3}


# -- 4. slow-loris: partial requests that never finish ------------------------------------------

SLOW_REQUEST = (
    b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-slow: "
    + b"a" * 1000
)
"""A request whose headers never end: slow clients send it a byte at a time."""
PARTIAL_CUTS = (
    len(b"POST / HT"),  # in the request line
    len(b"POST / HTTP/1.1\r\n"),  # a request line, no header yet
    len(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty"),  # in a header name
    SLOW_REQUEST.index(b"x-slow: ") + 10,  # in a header value
)
KEEP_ALIVE_S = 5.0  # uvicorn's default timeout_keep_alive; `servegraph serve` keeps it
HEADER_TIMEOUT_S = 2.0


def is_closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        data = sock.recv(1024)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
    return data == b"" or data.startswith(b"HTTP/1.1 4")


def test_slow_clients_are_disconnected_after_the_header_timeout(start: Start) -> None:
    """Slow clients that never finish their headers hold no event slot while they dribble
    (with a limit of 4 events in flight, 16 of them leave the server answering 200), and are
    disconnected ``--header-timeout-s`` after they connected; an idle keep-alive connection is
    closed ``timeout_keep_alive`` seconds after its last answer."""
    server = start(TOTAL, "--max-in-flight", "4", "--header-timeout-s", str(HEADER_TIMEOUT_S))
    sockets: list[socket.socket] = []
    try:
        # an idle keep-alive connection: one complete request and its answer, then nothing
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sockets.append(idle)
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
        idle_since = time.monotonic()
        partial: list[tuple[socket.socket, int]] = []  # each socket and what it has sent
        connected = time.monotonic()
        for index in range(16):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sockets.append(sock)
            cut = PARTIAL_CUTS[index % len(PARTIAL_CUTS)]
            sock.sendall(SLOW_REQUEST[:cut])
            partial.append((sock, cut))
        closed: set[int] = set()
        with httpx.Client(base_url=server.url, timeout=5) as client:
            deadline = connected + HEADER_TIMEOUT_S + 2.0
            while time.monotonic() < deadline and len(closed) < len(partial):
                for index, (sock, sent) in enumerate(partial):  # dribble a header byte each
                    if index in closed:
                        continue
                    try:
                        sock.sendall(SLOW_REQUEST[sent : sent + 1])
                    except OSError:
                        closed.add(index)
                        continue
                    partial[index] = (sock, sent + 1)
                    if is_closed_by_peer(sock):
                        closed.add(index)
                response = client.post("/", json={"a": 1, "b": 2})
                assert response.status_code == 200
                assert response.json() == {"total": 3}
                time.sleep(0.1)
            assert "servegraph_http_in_flight 0" in client.get("/metrics").text.splitlines()
        assert len(closed) == len(partial)
        assert time.monotonic() - connected >= HEADER_TIMEOUT_S - 0.5
        # the idle keep-alive connection is closed after timeout_keep_alive
        closed_deadline = idle_since + KEEP_ALIVE_S + 2.0
        while not is_closed_by_peer(idle) and time.monotonic() < closed_deadline:
            time.sleep(0.1)
        assert is_closed_by_peer(idle)
        assert time.monotonic() - idle_since >= KEEP_ALIVE_S - 0.5
    finally:
        for sock in sockets:
            sock.close()
    assert_serving(server)


# -- 5. unknown paths and methods ---------------------------------------------------------------


def test_a_router_answers_404_for_an_unknown_model(start: Start) -> None:
    server = start(MODELS)
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.post("/v2/models/nope/infer", json={"inputs": [tensor]})
        assert response.status_code == 404
        assert response.json() == {
            "error": "router 'router': no route named 'nope'; known routes: doubler",
            "step": "router",
        }
        good = client.post("/v2/models/doubler/infer", json={"inputs": [tensor]})
        assert good.status_code == 200
        assert good.json()["outputs"][0]["data"] == [2.0, 4.0]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v2/health/live", "GET"),
        ("POST", "/v2/health/ready", "GET"),
        ("PUT", "/metrics", "GET"),
        ("OPTIONS", "/", "DELETE, GET, PATCH, POST, PUT"),  # no CORS configured
        ("PROPFIND", "/", "DELETE, GET, PATCH, POST, PUT"),  # a method llhttp knows
    ],
)
def test_a_method_a_route_does_not_take_is_405(
    total_server: Server, method: str, path: str, allowed: str
) -> None:
    response = httpx.request(method, total_server.url + path, timeout=5)
    assert_json_error(response, 405, f"method not allowed here; allowed: {allowed}")
    assert response.headers["allow"] == allowed
    assert_serving(total_server)


def test_an_unknown_method_is_refused_by_uvicorn_with_a_plain_400(total_server: Server) -> None:
    """``FOO`` is no HTTP method llhttp knows: uvicorn answers 400 itself (text, not JSON) and
    closes the connection; the app never sees the request."""
    status, headers, body = exchange(
        total_server.port, b"FOO / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
    )
    assert status == 400
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["connection"] == "close"
    assert body == b"Invalid HTTP request received."
    response = httpx.request("FOO", total_server.url + "/", timeout=5)
    assert response.status_code == 400
    assert response.text == "Invalid HTTP request received."
    assert_serving(total_server)


# -- 6. tokens ----------------------------------------------------------------------------------


BAD_AUTHORIZATIONS = (
    b"Basic x",  # another scheme
    b"Basic czNjcmV0",  # another scheme, with the token as its credentials
    b"Bearer",  # the scheme alone
    b"Bearer ",  # an empty token (httpx refuses to send it: a raw socket does)
    b"",  # an empty header
    b"s3cret",  # the token without its scheme
    b"Bearer  s3cret",  # two spaces
    b"Bearer s3cret2",  # the token as a prefix
    b"Bearer s3cre",  # a prefix of the token
    b"Bearer \xe9t\xe9",  # not ASCII
)


def test_a_malformed_or_wrong_authorization_is_403(start: Start) -> None:
    server = start(TOTAL, token="s3cret")
    body = b'{"a": 1, "b": 2}'
    for authorization in BAD_AUTHORIZATIONS:
        status, headers, answer = exchange(
            server.port,
            b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: "
            + authorization
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body,
        )
        assert status == 403, authorization
        assert headers["content-type"] == JSON
        assert "www-authenticate" not in headers
        assert json.loads(answer) == {"error": "the bearer token is not valid"}
    with httpx.Client(base_url=server.url, timeout=5) as client:
        wrong = {"authorization": "Basic x"}
        assert client.get("/v2/health/live", headers=wrong).status_code == 200
        right = client.post("/", json={"a": 1, "b": 2}, headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert right.json() == {"total": 3}
        # The scheme is case-insensitive (RFC 9110); the token is not.
        lower = client.post("/", json={"a": 1, "b": 2}, headers={"authorization": "bearer s3cret"})
        assert lower.status_code == 200


# -- 7. a flood past the in-flight limit --------------------------------------------------------

FLOOD = 40


async def flood(url: str) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        calls = [client.post("/", json=index) for index in range(FLOOD)]
        async with asyncio.timeout(15):
            return await asyncio.gather(*calls, return_exceptions=True)


def test_a_flood_past_the_in_flight_limit_gets_503_with_retry_after(start: Start) -> None:
    server = start("tests.e2e.bad_input_graphs:build_half_second", "--max-in-flight", "4")
    outcomes = asyncio.run(flood(server.url))
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors == []
    responses = [outcome for outcome in outcomes if isinstance(outcome, httpx.Response)]
    refused = [response for response in responses if response.status_code == 503]
    served = [response for response in responses if response.status_code == 200]
    assert refused
    assert served
    assert len(refused) + len(served) == FLOOD
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": "the server is at its limit of 4 events in flight"}
    for response in served:
        assert response.json() == {"slept": int(response.request.content)}
    again = httpx.post(server.url + "/", json="after", timeout=5)
    assert again.status_code == 200
    assert again.json() == {"slept": "after"}
    metrics = httpx.get(server.url + "/metrics", timeout=5).text.splitlines()
    assert "servegraph_http_in_flight 0" in metrics
    assert f'servegraph_http_requests_total{{status="503"}} {len(refused)}' in metrics


# -- 8. a step that hangs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["tests.e2e.bad_input_graphs:build_hang", "tests.e2e.bad_input_graphs:build_hang_async"],
    ids=["blocking-thread", "async-task"],
)
def test_a_hung_step_is_504_and_the_worker_keeps_serving(start: Start, target: str) -> None:
    # a thread stuck in time.sleep keeps the process from exiting until it wakes: kill sooner
    server = start(target, "--timeout-s", "1", exit_within_s=1.0)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        began = time.monotonic()
        response = client.post("/", json="hang")
        took = time.monotonic() - began
        assert_json_error(response, 504, "the event was not answered within 1.0 s")
        assert response.headers["servegraph-event-id"]
        assert 0.9 <= took < 2.5
        # the hung step is still sleeping (30 s): the worker serves others meanwhile
        for _ in range(3):
            began = time.monotonic()
            quick = client.post("/", json="quick")
            assert quick.status_code == 200
            assert quick.json() == {"answered": "quick"}
            assert time.monotonic() - began < 0.5
        assert client.get("/v2/health/ready").status_code == 200
        metrics = client.get("/metrics").text.splitlines()
        assert "servegraph_http_in_flight 0" in metrics
        again = client.post("/", json="hang again")
        assert again.status_code == 504
