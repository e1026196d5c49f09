"""`servegraph serve` as a real process: HTTP answers, workers, auth, SIGTERM drain, invoke."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from examples import quickstart

from tests.e2e.server_process import EXIT_WITHIN_S, Server, Start


@pytest.fixture
def quickstart_server(start: Start) -> Server:
    return start("examples.quickstart:build_graph")


def test_the_quickstart_graph_answers_like_the_example(quickstart_server: Server) -> None:
    samples = json.loads(quickstart.SAMPLES.read_text())
    with quickstart.build_graph().mock_server() as mock, httpx.Client() as client:
        for sample in samples:
            path = sample.get("path", "/")
            expected = mock.test(path, body=dict(sample["body"]))
            response = client.post(quickstart_server.url + path, json=sample["body"])
            assert response.status_code == 200
            assert response.json() == expected


def test_invoke_prints_the_answer_of_a_running_server(quickstart_server: Server) -> None:
    body = json.dumps({"id": "t2", "amount": 4200, "country": "abroad"})
    command = [sys.executable, "-m", "servegraph", "invoke", quickstart_server.url + "/"]
    done = subprocess.run(
        [*command, "--body", body], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "t2", "score": 0.92, "block": True}
    assert done.stderr == ""


def test_invoke_reports_an_error_status_and_exits_1(quickstart_server: Server) -> None:
    url = quickstart_server.url + "/v2/health/ready"
    command = [sys.executable, "-m", "servegraph", "invoke", url, "--method", "DELETE"]
    done = subprocess.run(
        [*command, "--body", "{}"], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "HTTP 405 Method Not Allowed"
    assert "method not allowed" in json.loads(done.stdout)["error"]


def test_a_model_answers_an_open_inference_protocol_request(start: Start) -> None:
    server = start("tests.e2e.serve_graphs:build_models")
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
    response = httpx.post(
        f"{server.url}/v2/models/doubler/infer", json={"inputs": [tensor]}, timeout=10
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_name"] == "doubler"
    assert answer["outputs"] == [
        {"name": "output-0", "shape": [1, 2], "datatype": "FP64", "data": [2.0, 4.0]}
    ]


def test_two_workers_serve(start: Start) -> None:
    server = start("examples.quickstart:build_graph", "--workers", "2")
    body = {"id": "w", "amount": 2000, "country": "abroad"}
    for _ in range(8):
        # a new connection each time, so that both workers may take some
        response = httpx.post(server.url + "/", json=body, timeout=10)
        assert response.status_code == 200
        assert response.json() == {"id": "w", "score": 0.7, "block": False}


def test_sigterm_lets_the_request_in_flight_finish(start: Start) -> None:
    server = start("tests.e2e.serve_graphs:build_slow", "--graceful-s", "10")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, server.url + "/", json=7, timeout=10)
        wait_in_flight(server)
        server.process.send_signal(signal.SIGTERM)
        response = pending.result(timeout=10)
    assert response.status_code == 200
    assert response.json() == {"slept": 7}
    assert server.process.wait(timeout=EXIT_WITHIN_S) == 0


def wait_in_flight(server: Server) -> None:
    """Wait (bounded) until the server counts one event in flight."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        metrics = httpx.get(server.url + "/metrics", timeout=2).text
        if "servegraph_http_in_flight 1" in metrics.splitlines():
            return
        time.sleep(0.02)
    pytest.fail("the slow request was never in flight")


def test_the_token_is_required_except_for_liveness(start: Start) -> None:
    server = start("examples.quickstart:build_graph", token="s3cret")
    body = {"id": "a", "amount": 10, "country": "home"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/v2/health/live").status_code == 200
        missing = client.post("/", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 403
        right = client.post("/", json=body, headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert right.json()["id"] == "a"
