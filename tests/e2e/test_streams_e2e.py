"""A graph with a queue served and consumed by real processes over the local Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import redis

from servegraph.streams.envelope import Envelope
from tests.e2e.server_process import ROOT, Start, clean_environment, free_port

REDIS = os.environ.get("SERVEGRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379")
WITHIN_S = 20.0


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh stream name, exported as ``E2E_STREAM``; its keys are deleted afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("E2E_STREAM", f"{REDIS}/{name}")
    yield name
    client = redis.Redis.from_url(REDIS)
    client.delete(name, f"{name}-out", f"{name}-dead-letter", f"{name}:retry:work")
    client.close()


def consume(*args: str) -> subprocess.Popen[bytes]:
    """Start ``servegraph consume`` of the test graph (stop it with ``stopped``)."""
    command = [sys.executable, "-m", "servegraph", "consume", "tests.e2e.stream_graphs:build"]
    return subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        env=clean_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stopped(process: subprocess.Popen[bytes], *, terminate: bool = True) -> tuple[int, str]:
    """SIGTERM the process (unless it is to exit by itself); its exit status and stderr."""
    if terminate and process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr.decode()


def output_of(name: str, count: int) -> dict[str, object]:
    """The answers in the output stream by event id, once ``count`` are there."""
    client: Any = redis.Redis.from_url(REDIS)
    deadline = time.monotonic() + WITHIN_S
    try:
        while time.monotonic() < deadline:
            entries = client.xrange(f"{name}-out")
            if len(entries) >= count:
                return {
                    fields[b"event_id"].decode(): msgspec.json.decode(
                        fields[b"body"], type=Envelope
                    ).body
                    for _, fields in entries
                }
            time.sleep(0.1)
    finally:
        client.close()
    pytest.fail(f"fewer than {count} answers in {name}-out within {WITHIN_S} s")


def test_the_front_answers_with_the_id_and_the_consumer_finishes_the_event(
    start: Start, stream: str
) -> None:
    server = start("tests.e2e.stream_graphs:build")
    consumer = consume("--segment", "work")
    try:
        with httpx.Client() as client:
            sent = {}
            for n in range(20):
                response = client.post(server.url, json={"n": n})
                assert response.status_code == 200
                event_id = response.headers["servegraph-event-id"]
                assert response.json() == {"id": event_id}
                sent[event_id] = n
        answers = output_of(stream, len(sent))
        assert answers == {event_id: {"n": n, "square": n * n} for event_id, n in sent.items()}
    finally:
        status, stderr = stopped(consumer)
    assert status == 0, stderr


def test_sigterm_finishes_the_events_in_flight_before_exiting(
    start: Start, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_STEP_SLEEP_S", "1.5")
    server = start("tests.e2e.stream_graphs:build")
    consumer = consume("--segment", "work")
    with httpx.Client() as client:
        ids = [client.post(server.url, json={"n": n}).json()["id"] for n in range(5)]
    time.sleep(1.0)  # the consumer holds the five events, each in its 1.5 s step
    status, stderr = stopped(consumer)
    assert status == 0, stderr
    assert "5 events processed" in stderr
    answers = output_of(stream, len(ids))
    assert sorted(answers) == sorted(ids)
    broker: Any = redis.Redis.from_url(REDIS)
    try:
        assert broker.xpending(stream, "work")["pending"] == 0  # every event acked
    finally:
        broker.close()


def test_an_unknown_segment_is_an_error_listing_the_segments(stream: str) -> None:
    status, stderr = stopped(consume("--segment", "nope"), terminate=False)
    assert status == 1
    assert "unknown segment 'nope'; this graph's segments are: 'main', 'work'" in stderr


def test_an_unreachable_broker_stops_the_consumer_with_its_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2E_STREAM", "redis://127.0.0.1:1/nowhere")
    status, stderr = stopped(consume("--segment", "work"), terminate=False)
    assert status == 2
    assert "cannot reach the stream 'redis://127.0.0.1:1/nowhere'" in stderr


def test_an_unreachable_broker_stops_the_server_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2E_STREAM", "redis://127.0.0.1:1/nowhere")
    command = [sys.executable, "-m", "servegraph", "serve", "tests.e2e.stream_graphs:build"]
    process = subprocess.run(
        [*command, "--port", "0"],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        timeout=WITHIN_S,
        check=False,
    )
    assert process.returncode != 0
    assert "cannot reach the stream 'redis://127.0.0.1:1/nowhere'" in process.stderr.decode()


def test_the_health_port_reports_liveness_readiness_and_counters(start: Start, stream: str) -> None:
    server = start("tests.e2e.stream_graphs:build")
    port = free_port()
    consumer = consume("--segment", "work", "--health-port", str(port), "--consumer", "c-1")
    health = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        with httpx.Client() as client:
            ids = [client.post(server.url, json={"n": n}).json()["id"] for n in range(3)]
            output_of(stream, len(ids))
            assert client.get(f"{health}/v2/health/live").json() == {"live": True}
            assert client.get(f"{health}/v2/health/ready").status_code == 200
            counters = client.get(f"{health}/v2/consumer").json()
            assert counters["segment"] == "work"
            assert counters["consumer"] == "c-1"
            assert counters["processed"] == 3
            assert client.get(f"{health}/nope").status_code == 404
    finally:
        status, stderr = stopped(consumer)
    assert status == 0, stderr


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        return
    pytest.fail(f"nothing listens on {port} within {WITHIN_S} s")
