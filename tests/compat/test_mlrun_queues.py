"""MLRun queue steps: graph dicts, ``">>"`` in the builder, the mock server, specs, consumers."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from servegraph import Event, Graph
from servegraph.compat import mlrun
from servegraph.compat.mlrun.queues import stream_url
from servegraph.graph.spec import EngineKind, StepKind
from servegraph.streams.envelope import Envelope
from tests.compat.mlrun_cases import steps

REDIS = "redis://127.0.0.1:6379"
V3IO = "v3io:///projects/shop/streams/orders"


def chain(*after: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "task", "class_name": "Chain", "after": list(after), **extra}


def queued(engine: str = "async", path: str | None = V3IO, **s2: Any) -> dict[str, Any]:
    """s1 -> q1 -> s2, as MLRun writes it."""
    return {
        "engine": engine,
        "steps": {
            "s1": chain(),
            "q1": {"kind": "queue", "path": path, "after": ["s1"]},
            "s2": chain("q1", function="child", **s2),
        },
    }


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "url"),
    [
        (None, "memory://q1"),
        ("", "memory://q1"),
        (V3IO, "memory://orders"),
        (V3IO + "/", "memory://orders"),
        ("projects/shop/streams/orders", "memory://orders"),
        ("orders", "memory://orders"),
        ("redis://127.0.0.1:6379/orders", "redis://127.0.0.1:6379/orders"),
        ("nats://127.0.0.1:4222/orders", "nats://127.0.0.1:4222/orders"),
        ("memory://orders", "memory://orders"),
    ],
)
def test_paths_map_to_stream_urls(path: str | None, url: str) -> None:
    assert stream_url("q1", path) == url


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("kafka://broker:9092/orders", "Kafka streams are not supported by servegraph yet; use"),
        ("ds://my-profile/orders", r"'ds://my-profile/orders' \(ds://\) has no servegraph"),
        ("redis://127.0.0.1:6379", "names no stream"),
    ],
)
def test_paths_without_a_servegraph_stream_are_load_errors(path: str, problem: str) -> None:
    with pytest.raises(mlrun.GraphError, match=problem) as caught:
        mlrun.load(queued(path=path), namespace=steps)
    assert caught.value.problems[0].step == "q1"


def test_kafka_error_names_the_urls_that_work() -> None:
    with pytest.raises(mlrun.GraphError) as caught:
        mlrun.load(queued(path="kafka://broker:9092/orders"), namespace=steps)
    for url in ("redis://host:6379/name", "nats://host:4222/name", "memory://name", "streams="):
        assert url in str(caught.value)


def test_kafka_options_are_kafka_too() -> None:
    graph = queued(path="orders")
    graph["steps"]["q1"]["options"] = {"kafka_brokers": "broker:9092"}
    with pytest.raises(mlrun.GraphError, match="Kafka streams are not supported"):
        mlrun.load(graph, namespace=steps)


def test_streams_override_the_mapped_url() -> None:
    graph = queued(path="kafka://broker:9092/orders")
    graph["steps"]["q1"]["options"] = {"kafka_brokers": "broker:9092", "group": "writers"}
    loaded = mlrun.load(graph, namespace=steps, streams={"q1": f"{REDIS}/orders"})
    queue = loaded.spec.step("q1")
    assert (queue.kind, queue.stream, queue.options) == (
        StepKind.QUEUE,
        f"{REDIS}/orders",
        {"group": "writers"},
    )
    with pytest.raises(mlrun.GraphError, match="streams= names no queue step 's1'"):
        mlrun.load(queued(), namespace=steps, streams={"s1": f"{REDIS}/orders"})
    with pytest.raises(mlrun.GraphError, match="unknown stream URL scheme"):
        mlrun.load(queued(), namespace=steps, streams={"q1": "ftp://host/orders"})


def test_platform_settings_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    graph = queued()
    graph["steps"]["q1"].update(
        shards=4, retention_in_hours=24, trigger_args={"max_workers": 8}, options={"full_event": 1}
    )
    with caplog.at_level(logging.DEBUG, logger="servegraph.compat.mlrun"):
        loaded = mlrun.load(graph, namespace=steps)
    assert loaded.spec.step("q1").options == {}
    assert "queue 'q1': shards, retention_in_hours, trigger_args ignored" in caplog.text
    assert "queue 'q1': full_event ignored" in caplog.text


def test_unknown_queue_keys_and_options_are_errors() -> None:
    graph = queued()
    graph["steps"]["q1"].update(responder=True, options={"sharding_func": "x"})
    with pytest.raises(mlrun.GraphError) as caught:
        mlrun.load(graph, namespace=steps)
    text = str(caught.value)
    assert "unknown MLRun key(s) responder; understood: after, kind, on_error, options" in text
    assert "unknown queue option(s) sharding_func; understood: group, key, batch" in text


def test_a_queue_is_not_a_route() -> None:
    router = {"kind": "router", "routes": {"q": {"kind": "queue", "path": "x"}}}
    with pytest.raises(mlrun.GraphError, match="a queue step cannot be a route"):
        mlrun.load(router, namespace=steps)


# -- the mock server ------------------------------------------------------------------------


def visiting(record: list[str]) -> type:
    """A Chain step that also records its visits (MLRun's ``ChainWithContext``)."""

    class Visit:
        def __init__(self, context: Any = None, name: str = "") -> None:
            self.name = name

        def do(self, body: list[str]) -> list[str]:
            record.append(self.name)
            return [*body, self.name]

    return Visit


def test_every_step_after_a_queue_runs_once_and_the_responder_answers() -> None:
    """MLRun's test_async_basic, with its queue."""
    visits: list[str] = []
    graph = {
        "engine": "async",
        "steps": {
            "s1": {"class_name": "Visit"},
            "q1": {"kind": "queue", "path": "", "after": ["s1"]},
            "s2": {"class_name": "Visit", "after": ["q1"], "function": "some_function"},
            "s4": {"class_name": "Visit", "after": ["s2"]},
            "s5": {"class_name": "Visit", "after": ["s2"], "responder": True},
            "s3": {"class_name": "Visit", "after": ["q1"], "function": "other_function"},
        },
    }
    server = mlrun.load(graph, namespace={"Visit": visiting(visits)}).mock_server()
    assert server.test(body=[]) == ["s1", "s2", "s5"]
    server.wait_for_completion()
    assert sorted(visits) == ["s1", "s2", "s3", "s4", "s5"]
    server.close()


def test_a_failure_after_a_queue_is_the_answer() -> None:
    graph = queued()
    graph["steps"]["s2"] = {"handler": "raise_error", "after": ["q1"]}
    server = mlrun.load(graph, namespace=steps).mock_server()
    assert server.test(body=[1], silent=True) == mlrun.MockResponse(400, "ValueError: boom")


def test_a_queue_that_ends_the_flow_writes_to_the_mock_stream() -> None:
    graph: dict[str, Any] = {
        "engine": "async",
        "steps": {"s1": chain(), "q1": queued()["steps"]["q1"]},
    }
    server = mlrun.load(graph, namespace=steps).mock_server()
    assert server.test(body=[], event_id="e-1") == {"id": "e-1"}
    assert server.streams is not None  # the queue runs on the server's own memory broker
    graph["steps"]["s1"]["responder"] = True
    responding = mlrun.load(graph, namespace=steps).mock_server()
    assert responding.test(body=[], event_id="e-2") == ["s1"]
    server.close()
    responding.close()


def test_a_sync_graph_with_a_queue_keeps_the_sync_answers() -> None:
    loaded = mlrun.load(queued("sync"), namespace=steps)
    assert loaded.spec.engine is EngineKind.ASYNC  # servegraph's queue steps are async
    assert loaded.mock_server().test(body=[], event_id="e-1") == ["s1", "s2"]
    fan_out = queued("sync")
    fan_out["steps"]["s3"] = chain("q1")
    with pytest.raises(mlrun.GraphError, match="doesnt support branches"):
        mlrun.load(fan_out, namespace=steps)


# -- the Python API -------------------------------------------------------------------------


def test_queue_class_names_in_to_and_add_step() -> None:
    graph = mlrun.load({"engine": "async", "steps": {"s1": chain()}}, namespace=steps)
    queue = graph["s1"].to(">>", "q1", path=V3IO, shards=2, full_event=True)
    queue.to("Chain", "s2", function="child").respond()
    graph.add_step("$queue", "audit", path=f"{REDIS}/audit", after="s1", group="auditors")
    assert graph.spec.step("q1").stream == "memory://orders"
    audit = graph.spec.step("audit")
    assert (audit.kind, audit.stream, audit.options) == (
        StepKind.QUEUE,
        f"{REDIS}/audit",
        {"group": "auditors"},
    )
    assert graph.spec.step("s2").after == ("q1",)
    assert graph.test([]) == ["s1", "s2"]


def test_queue_from_scratch_and_on_a_sync_graph() -> None:
    graph = mlrun.MLRunGraph(namespace=steps)
    graph.to("Chain", "s1").to(">>", "q1", path=None).to("Chain", "s2").respond()
    assert graph.test([]) == ["s1", "s2"]
    sync = mlrun.load({"engine": "sync", "steps": {"s1": chain()}}, namespace=steps)
    sync["s1"].to("$queue", "q1", path="").to("Chain", "s2")
    assert sync.engine is EngineKind.ASYNC
    assert sync.mock_server().test(body=[]) == ["s1", "s2"]


def test_queue_arguments_are_checked_as_mlrun_does() -> None:
    graph = mlrun.load({"steps": {"s1": chain()}}, namespace=steps)
    with pytest.raises(mlrun.MLRunInvalidArgumentError, match=r"path=<stream path or None>"):
        graph["s1"].to(">>", "q1")
    with pytest.raises(mlrun.MLRunInvalidArgumentError, match="queue name must be specified"):
        graph["s1"].to(">>", path="")
    with pytest.raises(mlrun.GraphError, match="Kafka streams are not supported"):
        graph["s1"].to(">>", "q1", path="kafka://broker:9092/orders")
    with pytest.raises(mlrun.GraphError, match=r"unknown queue option\(s\) sharding_func"):
        graph["s1"].to(">>", "q1", path="", sharding_func="x")
    assert [step.name for step in graph.spec.steps] == ["s1"]


# -- servegraph specs and consumers ---------------------------------------------------------


def test_round_trip_to_a_servegraph_spec(tmp_path: Path) -> None:
    loaded = mlrun.load(queued(), namespace=steps)
    data = loaded.to_dict()
    assert data["steps"]["q1"] == {"kind": "queue", "stream": "memory://orders", "after": ["s1"]}
    assert Graph.from_dict(data).spec == loaded.spec
    loaded.save(tmp_path / "graph.json")
    native = Graph.load(tmp_path / "graph.json")
    assert native.spec == loaded.spec
    # servegraph's own mock server runs the queue: the front answers at the queue, and the
    # segment after it runs from the (memory) stream.
    server = native.mock_server()
    assert server.test(body=[], event_id="e-1") == {"id": "e-1"}
    assert server.results == {"q1": [["s1", "s2"]]}
    server.close()


def test_a_loaded_graph_runs_with_servegraph_consume(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    client: Any = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS} (make test starts it)")
    name = f"compat-{uuid.uuid4().hex[:8]}"
    graph = queued()
    graph["steps"]["q1"]["options"] = {"output": f"{REDIS}/{name}-out"}
    loaded = mlrun.load(graph, namespace=steps, streams={"q1": f"{REDIS}/{name}"})
    loaded.save(tmp_path / "orders.json")
    command = [sys.executable, "-m", "servegraph", "consume", str(tmp_path / "orders.json")]
    root = Path(__file__).parents[2]
    consumer = subprocess.Popen(
        [*command, "--segment", "q1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert asyncio.run(_send_through_main(loaded.spec, "e-1")) == {"id": "e-1"}
        assert _answer(client, f"{name}-out", "e-1") == ["s1", "s2"]
    finally:
        consumer.send_signal(signal.SIGTERM)
        _, stderr = consumer.communicate(timeout=20)
        client.delete(name, f"{name}-out", f"{name}-dead-letter", f"{name}:retry:work")
        client.close()
    assert consumer.returncode == 0, stderr.decode()


async def _send_through_main(spec: Any, event_id: str) -> Any:
    from servegraph.streams.runtime import StreamRuntime

    runtime = StreamRuntime(spec)
    try:
        return await runtime.runner("main").run(Event([], id=event_id))
    finally:
        await runtime.aclose()


def _answer(client: Any, stream: str, event_id: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _, fields in client.xrange(stream):
            if fields[b"event_id"].decode() == event_id:
                return msgspec.json.decode(fields[b"body"], type=Envelope).body
        time.sleep(0.1)
    pytest.fail(f"no answer for {event_id} in {stream} within 20 s")
