"""Prediction records: a real ModelServer graph on the mock server, a recorder installed by
hand, records read back from Parquet files and streams (memory, and a real Redis)."""

from __future__ import annotations

import asyncio
import doctest
import json
import os
import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from servegraph import Graph, GraphError, MockServer
from servegraph.errors import BackendError, ServegraphError
from servegraph.event import EVENT_ID_HEADER
from servegraph.models.records import PredictionRecord
from servegraph.models.server import ModelServer
from servegraph.monitoring import records as records_module
from servegraph.monitoring.records import (
    RECORD_COLUMNS,
    PredictionRecorder,
    TrackingSettings,
    install_recorder,
    model_directory,
    read_records,
    record_schema,
)
from servegraph.streams.envelope import decode_event
from servegraph.streams.memory import MemoryBackend, MemoryBroker

REDIS_URL = os.environ.get("SERVEGRAPH_REDIS_URL", "redis://127.0.0.1:6379")
NATS_URL = os.environ.get("SERVEGRAPH_NATS_URL", "nats://127.0.0.1:4222")
INFER = "/v2/models/{}/infer"


class Doubler(ModelServer):
    """Doubles every value of every row."""

    def predict(self, request: dict[str, Any]) -> list[list[float]]:
        return [[2 * value for value in row] for row in request["inputs"]]


class Broken(ModelServer):
    """Its predict always raises."""

    def predict(self, request: dict[str, Any]) -> Any:
        message = "the model broke"
        raise RuntimeError(message)


class ThreadNamer(ModelServer):
    """Answers, per row, the name of the thread its predict ran on."""

    def predict(self, request: dict[str, Any]) -> list[str]:
        return [threading.current_thread().name for _ in request["inputs"]]


def models_graph() -> Graph:
    graph = Graph.router()
    graph.add_route("double:1", Doubler)
    graph.add_route("broken", Broken)
    return graph


@pytest.fixture
def server() -> Iterator[MockServer]:
    with models_graph().mock_server() as mock:
        yield mock


def send(server: MockServer, model: str, rows: list[list[float]], event_id: str) -> int:
    headers = {EVENT_ID_HEADER: event_id}
    return server.request("POST", INFER.format(model), {"inputs": rows}, headers=headers).status


def a_record(event_id: str, model: str = "m") -> PredictionRecord:
    return PredictionRecord(model, None, event_id, datetime.now(UTC), [[1.0]], [2.0], 0.5)


def parquet_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_files_hold_every_prediction_with_its_model_error_and_latency(
    server: MockServer, tmp_path: Path
) -> None:
    recorder = install_recorder(server.context, {"sink": f"parquet://{tmp_path}"})
    assert recorder is not None
    recorder.start()
    before = datetime.now(UTC)
    assert send(server, "double", [[1, 2]], "e-1") == 200
    assert send(server, "double", [[3, 4], [5, 6]], "e-2") == 200
    assert send(server, "broken", [[1]], "e-3") == 500
    recorder.close()
    after = datetime.now(UTC)

    files = parquet_files(tmp_path)
    day = before.date().isoformat()
    assert [(path.parent.parent.name, path.parent.name) for path in files] == [
        ("broken", day),
        ("double", day),
    ]
    assert all(path.name.startswith("part-") and path.suffix == ".parquet" for path in files)
    double = pq.read_table(files[1])
    assert double.schema == record_schema()
    assert tuple(double.column_names) == RECORD_COLUMNS
    rows = double.to_pylist()
    assert [row["event_id"] for row in rows] == ["e-1", "e-2"]
    assert {row["model"] for row in rows} == {"double"}
    assert {row["version"] for row in rows} == {"1"}
    assert [row["error"] for row in rows] == [None, None]
    assert [json.loads(row["inputs"]) for row in rows] == [[[1, 2]], [[3, 4], [5, 6]]]
    assert [json.loads(row["outputs"]) for row in rows] == [[[2, 4]], [[6, 8], [10, 12]]]
    assert all(row["latency_ms"] > 0 for row in rows)
    assert all(before <= row["timestamp"] <= after for row in rows)

    (failed,) = read_records(tmp_path, "broken").to_pylist()
    assert (failed["event_id"], failed["version"]) == ("e-3", None)
    assert failed["error"] == "RuntimeError: the model broke"
    assert failed["outputs"] is None
    assert json.loads(failed["inputs"]) == [[1]]
    assert recorder.statistics() == records_module.RecorderStatistics(written=3)


def test_only_the_tracked_models_are_recorded(server: MockServer, tmp_path: Path) -> None:
    recorder = install_recorder(server.context, {"models": ["broken"], "sink": str(tmp_path)})
    assert recorder is not None
    recorder.start()
    send(server, "double", [[1]], "e-1")
    send(server, "broken", [[1]], "e-2")
    recorder.close()
    assert read_records(tmp_path, "double").num_rows == 0
    assert read_records(tmp_path, "broken").column("event_id").to_pylist() == ["e-2"]
    assert not model_directory(tmp_path, "double").exists()


def test_numpy_tensors_of_an_oip_request_are_written_as_json(
    server: MockServer, tmp_path: Path
) -> None:
    recorder = install_recorder(server.context, {"sink": str(tmp_path)})
    assert recorder is not None
    recorder.start()
    tensor = {"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1.5, 2, 3, 4]}
    response = server.request("POST", INFER.format("double"), {"inputs": [tensor]})
    assert response.status == 200
    recorder.close()
    (row,) = read_records(tmp_path, "double").to_pylist()
    assert json.loads(row["inputs"]) == [[1.5, 2.0], [3.0, 4.0]]
    assert json.loads(row["outputs"]) == [[3.0, 4.0], [6.0, 8.0]]


def test_a_flush_writes_complete_files_without_closing(server: MockServer, tmp_path: Path) -> None:
    settings = {"sink": str(tmp_path), "flush_interval_s": 60.0, "batch_size": 1000}
    recorder = install_recorder(server.context, settings)
    assert recorder is not None
    recorder.start()
    send(server, "double", [[1]], "e-1")
    recorder.flush()
    assert read_records(tmp_path, "double").column("event_id").to_pylist() == ["e-1"]
    send(server, "double", [[2]], "e-2")
    recorder.flush()
    recorder.close()
    files = parquet_files(tmp_path)
    assert len(files) == 2  # one file per flush, and no temporary file left behind
    assert read_records(tmp_path, "double").column("event_id").to_pylist() == ["e-1", "e-2"]


def test_full_batches_are_row_groups_of_one_file_completed_at_the_flush(tmp_path: Path) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path), "batch_size": 3, "flush_interval_s": 60})
    recorder.start()
    try:
        for index in range(6):
            recorder.record(a_record(f"e-{index}"))
        for _ in range(200):  # full batches wake the writer: well before the 60 s
            if recorder.statistics().written == 6:
                break
            threading.Event().wait(0.01)
        assert recorder.statistics().written == 6
        (temporary,) = parquet_files(tmp_path)  # written, not visible to readers yet
        assert temporary.name.startswith(".part-")
        assert temporary.name.endswith(".parquet.tmp")
        assert read_records(tmp_path, "m").num_rows == 0
        recorder.flush()
    finally:
        recorder.close()
    (complete,) = parquet_files(tmp_path)
    assert pq.ParquetFile(complete).metadata.num_row_groups == 2
    assert read_records(tmp_path, "m").column("event_id").to_pylist() == [
        f"e-{index}" for index in range(6)
    ]


def test_a_file_lost_before_it_is_completed_is_counted_as_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path), "batch_size": 2, "flush_interval_s": 60})
    recorder.start()
    for index in range(2):
        recorder.record(a_record(f"e-{index}"))
    for _ in range(200):
        if recorder.statistics().written == 2:
            break
        threading.Event().wait(0.01)
    (temporary,) = parquet_files(tmp_path)
    temporary.unlink()  # a clean-up job removed it: it cannot be completed
    recorder.close()
    assert recorder.statistics() == records_module.RecorderStatistics(failed=2)
    assert "completing the prediction records file" in caplog.text
    assert parquet_files(tmp_path) == []


def test_aclose_writes_everything_queued(tmp_path: Path) -> None:
    graph = Graph.router()
    graph.add_route("double", Doubler, class_args={"threads": 2})  # the async engine

    async def run(server: MockServer) -> tuple[int, int]:
        settings = {"sink": str(tmp_path), "flush_interval_s": 60.0, "batch_size": 10_000}
        recorder = install_recorder(server.context, settings)
        assert recorder is not None
        await recorder.astart()
        for index in range(20):
            body = {"inputs": [[index]]}
            headers = {EVENT_ID_HEADER: f"e-{index}"}
            await server.arequest("POST", INFER.format("double"), body, headers=headers)
        queued = recorder.statistics().queued
        files_before = len(parquet_files(tmp_path))
        await recorder.aclose()
        assert server.context.hooks.record_prediction is None
        return queued, files_before

    server = graph.mock_server()
    try:
        queued, files_before = asyncio.run(run(server))
    finally:
        server.close()
    assert (queued, files_before) == (20, 0)
    event_ids = read_records(tmp_path, "double").column("event_id").to_pylist()
    assert event_ids == [f"e-{index}" for index in range(20)]


def test_records_of_a_model_with_worker_threads_are_all_written(tmp_path: Path) -> None:
    graph = Graph.router()
    graph.add_route("namer", ThreadNamer, class_args={"threads": 2})
    with graph.mock_server() as server:
        recorder = install_recorder(server.context, {"sink": str(tmp_path)})
        assert recorder is not None
        recorder.start()

        async def burst() -> list[Any]:
            calls = (
                server.arequest(
                    "POST", INFER.format("namer"), {"inputs": [[i]]}, {EVENT_ID_HEADER: f"e-{i}"}
                )
                for i in range(40)
            )
            return list(await asyncio.gather(*calls))

        responses = asyncio.run(burst())
        recorder.close()
    assert {response.status for response in responses} == {200}
    table = read_records(tmp_path, "namer")
    assert sorted(table.column("event_id").to_pylist()) == sorted(f"e-{i}" for i in range(40))
    threads = {json.loads(text)[0] for text in table.column("outputs").to_pylist()}
    assert threads
    assert all(name.startswith("model-namer") for name in threads)


def test_the_hook_is_safe_to_call_from_many_threads(tmp_path: Path) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path), "batch_size": 100})
    recorder.start()
    barrier = threading.Barrier(4)

    def write(thread: int) -> None:
        barrier.wait()
        for index in range(500):
            recorder.record(a_record(f"t{thread}-{index}"))

    workers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    recorder.close()
    event_ids = read_records(tmp_path, "m").column("event_id").to_pylist()
    assert sorted(event_ids) == sorted(f"t{t}-{i}" for t in range(4) for i in range(500))
    assert recorder.statistics() == records_module.RecorderStatistics(written=2000)


# -- sampling, overload, failures ------------------------------------------------------------


def test_sampling_with_a_seed_records_an_exact_count(server: MockServer, tmp_path: Path) -> None:
    settings = {"sink": str(tmp_path), "sample": 0.25, "seed": 7}
    recorder = install_recorder(server.context, settings)
    assert recorder is not None
    recorder.start()
    for index in range(200):
        send(server, "double", [[index]], f"e-{index}")
    recorder.close()
    draws = random.Random(7)
    expected = [f"e-{index}" for index in range(200) if draws.random() < 0.25]
    assert 30 < len(expected) < 70
    assert read_records(tmp_path, "double").column("event_id").to_pylist() == expected


def test_sample_zero_records_nothing_and_one_records_everything(tmp_path: Path) -> None:
    nothing = PredictionRecorder({"sink": str(tmp_path / "none"), "sample": 0})
    everything = PredictionRecorder({"sink": str(tmp_path / "all"), "sample": 1})
    for index in range(50):
        nothing.record(a_record(f"e-{index}"))
        everything.record(a_record(f"e-{index}"))
    assert (nothing.statistics().queued, everything.statistics().queued) == (0, 50)
    nothing.close()
    everything.close()


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path), "max_queue": 5})
    for index in range(12):  # not started yet: nothing drains the queue
        recorder.record(a_record(f"e-{index}"))
    assert recorder.dropped == 7
    assert recorder.statistics() == records_module.RecorderStatistics(queued=5, dropped=7)
    recorder.start()
    recorder.close()
    assert read_records(tmp_path, "m").column("event_id").to_pylist() == [
        f"e-{index}" for index in range(5)
    ]
    recorder.record(a_record("late"))  # after close: dropped, counted
    assert recorder.statistics() == records_module.RecorderStatistics(written=5, dropped=8)


def test_records_of_a_recorder_never_started_are_counted_as_dropped(tmp_path: Path) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path)})
    recorder.record(a_record("e-1"))
    recorder.close()
    assert recorder.dropped == 1
    assert not tmp_path.joinpath("m").exists()


class FlakySink:
    """A sink whose every other batch fails (the first one included)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.calls = 0
        self.closed = False

    def open(self) -> None:
        pass

    def write(self, records: Sequence[PredictionRecord]) -> int:
        self.calls += 1
        if self.calls % 2:
            message = "disk full"
            raise OSError(message)
        self.batches.append([record.event_id for record in records])
        return len(records)

    def commit(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_counts_failed_records_and_the_recorder_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FlakySink()
    recorder = PredictionRecorder({"batch_size": 2}, sink=sink)
    for index in range(4):
        recorder.record(a_record(f"e-{index}"))
    recorder.start()
    recorder.close()
    assert sink.batches == [["e-2", "e-3"]]
    assert sink.closed
    assert recorder.statistics() == records_module.RecorderStatistics(written=2, failed=2)
    assert "writing 2 prediction records to parquet://records failed" in caplog.text


def test_a_directory_that_cannot_be_made_fails_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    recorder = PredictionRecorder({"sink": str(blocker / "records")})
    with pytest.raises(BackendError, match="cannot create the prediction records directory"):
        recorder.start()
    recorder.close()


# -- streams ---------------------------------------------------------------------------------


async def read_stream(backend: Any) -> list[tuple[str, dict[str, Any], str | None]]:
    """Every message of the stream: (message event id, decoded record, key)."""
    messages = await backend.consume("test", "reader", count=1000, block_ms=0)
    decoded = []
    for message in messages:
        event = decode_event(message)
        decoded.append((message.event_id, event.body, message.key))
    return decoded


def test_the_memory_stream_sink_publishes_one_message_per_record(server: MockServer) -> None:
    broker = MemoryBroker()
    stream = f"records-{uuid.uuid4().hex}"
    recorder = install_recorder(server.context, {"sink": f"memory://{stream}"}, broker=broker)
    assert recorder is not None
    recorder.start()
    send(server, "double", [[1, 2]], "e-1")
    send(server, "broken", [[3]], "e-2")
    recorder.close()

    async def read() -> list[tuple[str, dict[str, Any], str | None]]:
        async with MemoryBackend(stream, broker=broker) as backend:
            return await read_stream(backend)

    (first_id, first, first_key), (second_id, second, second_key) = asyncio.run(read())
    assert (first_id, first_key) == ("e-1/double:1", "double")
    assert (second_id, second_key) == ("e-2/broken", "broken")
    assert first["event_id"] == "e-1"
    assert (first["model"], first["version"], first["error"]) == ("double", "1", None)
    assert (first["inputs"], first["outputs"]) == ([[1, 2]], [[2, 4]])
    assert first["latency_ms"] > 0
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    assert (second["error"], second["outputs"]) == ("RuntimeError: the model broke", None)


def test_the_memory_stream_is_published_on_the_loop_that_started_the_recorder() -> None:
    broker = MemoryBroker()
    stream = f"records-{uuid.uuid4().hex}"

    async def run() -> list[str]:
        recorder = PredictionRecorder({"sink": f"memory://{stream}"}, broker=broker)
        await recorder.astart()
        async with MemoryBackend(stream, broker=broker) as backend:
            waiting = asyncio.ensure_future(backend.consume("g", "c", count=10, block_ms=5000))
            await asyncio.sleep(0)  # the consumer waits on this loop
            recorder.record(a_record("e-1"))
            await recorder.aflush()
            messages = await asyncio.wait_for(waiting, 2)  # woken by the publish, not the timeout
            with pytest.raises(RuntimeError, match="await aflush"):
                recorder.flush()
            with pytest.raises(RuntimeError, match="await aclose"):
                recorder.close()
            await recorder.aclose()
        return [message.event_id for message in messages]

    assert asyncio.run(run()) == ["e-1/m"]


@pytest.mark.integration
def test_the_redis_stream_sink_publishes_one_message_per_record(server: MockServer) -> None:
    from servegraph.streams.redis import RedisBackend

    stream = f"sg-test-records-{uuid.uuid4().hex}"
    recorder = install_recorder(server.context, {"sink": f"{REDIS_URL}/{stream}"})
    assert recorder is not None
    try:
        recorder.start()
    except BackendError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with scripts/services.sh "
            "or point SERVEGRAPH_REDIS_URL at a server",
            pytrace=False,
        )
    for index in range(300):  # more than one concurrent publish chunk
        send(server, "double", [[index]], f"e-{index}")
    send(server, "broken", [[1]], "e-broken")
    recorder.close()

    async def read() -> list[tuple[str, dict[str, Any], str | None]]:
        async with RedisBackend(stream, url=REDIS_URL) as backend:
            try:
                return await read_stream(backend)
            finally:
                await backend._client.delete(stream)

    messages = asyncio.run(read())
    assert [message_id for message_id, _, _ in messages] == [
        *(f"e-{index}/double:1" for index in range(300)),
        "e-broken/broken",
    ]
    assert [body["event_id"] for _, body, _ in messages] == [
        *(f"e-{index}" for index in range(300)),
        "e-broken",
    ]
    assert messages[7][1]["outputs"] == [[14]]
    assert messages[-1][1]["error"] == "RuntimeError: the model broke"
    assert {key for _, _, key in messages} == {"double", "broken"}


@pytest.mark.integration
def test_records_of_one_event_by_several_models_all_reach_nats() -> None:
    import nats

    from servegraph.streams.nats import NatsBackend, sanitise

    stream = f"sg-test-records-{uuid.uuid4().hex}"
    recorder = PredictionRecorder({"sink": f"{NATS_URL}/{stream}"})
    try:
        recorder.start()
    except BackendError as exc:
        pytest.fail(
            f"NATS with JetStream is not reachable at {NATS_URL} ({exc}); start nats-server "
            "-js (scripts/services.sh) or point SERVEGRAPH_NATS_URL at a server",
            pytrace=False,
        )
    stamp = datetime.now(UTC)
    for model, version in (("a", None), ("b", "1"), ("b", "2"), ("a", None)):  # last: a repeat
        recorder.record(PredictionRecord(model, version, "e-1", stamp, [1], [2], 0.5))
    recorder.close()

    async def read() -> list[tuple[str, dict[str, Any], str | None]]:
        try:
            async with NatsBackend(stream, url=NATS_URL) as backend:
                messages = await backend.consume("test", "reader", count=10, block_ms=500)
                return [(m.event_id, decode_event(m).body, m.key) for m in messages]
        finally:
            client = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=2)
            try:
                await client.jetstream().delete_stream(sanitise(stream))
            finally:
                await client.close()

    messages = asyncio.run(read())
    assert [(message_id, key) for message_id, _, key in messages] == [
        ("e-1/a", "a"),
        ("e-1/b:1", "b"),
        ("e-1/b:2", "b"),
    ]
    assert {body["event_id"] for _, body, _ in messages} == {"e-1"}


@pytest.mark.integration
def test_an_unreachable_redis_fails_start_naming_the_stream() -> None:
    recorder = PredictionRecorder({"sink": "redis://127.0.0.1:1/records"})
    with pytest.raises(BackendError, match=r"redis://127\.0\.0\.1:1/records"):
        recorder.start()
    recorder.close()


# -- settings --------------------------------------------------------------------------------


def test_settings_round_trip_through_their_spec_form() -> None:
    settings = TrackingSettings.parse(
        {"models": ["iris"], "sink": "redis://127.0.0.1:6379/records", "sample": 0.1, "seed": 3}
    )
    assert settings.models == ("iris",)
    assert settings.tracks("iris")
    assert not settings.tracks("churn")
    assert settings.to_dict() == {
        "models": ["iris"],
        "sink": "redis://127.0.0.1:6379/records",
        "sample": 0.1,
        "seed": 3,
    }
    assert TrackingSettings.parse(settings.to_dict()) == settings
    assert TrackingSettings().to_dict() == {}
    assert (settings.interval_s, TrackingSettings().interval_s) == (1.0, 60.0)
    assert TrackingSettings(flush_interval_s=2).interval_s == 2.0
    assert TrackingSettings().tracks("anything")
    assert records_module.parquet_root("parquet:///var/lib/records") == "/var/lib/records"
    assert records_module.parquet_root("parquet://records") == "records"
    assert records_module.parquet_root("some/dir") == "some/dir"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sample": 1.5}, "tracking: sample must be a number from 0 to 1, got 1.5"),
        ({"models": []}, 'tracking: models must be "*" or a non-empty list of names'),
        ({"sink": "kafka://broker/records"}, "has an unknown scheme; use a directory or one of"),
        ({"sink": "redis://127.0.0.1:6379"}, "names no stream"),
        ({"max_queue": 0}, "max_queue must be a positive integer, got 0"),
        ({"flush_interval_s": -1}, "flush_interval_s must be a positive number of seconds"),
        ({"seed": "x"}, "seed must be an integer or null"),
        ({"sampel": 0.5}, "unknown setting(s) 'sampel'; known: batch_size"),
    ],
)
def test_invalid_settings_are_a_graph_error_naming_the_setting(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(GraphError) as raised:
        TrackingSettings.parse(settings)
    assert message in str(raised.value)


def test_install_with_no_settings_is_off_and_a_second_hook_is_refused(
    server: MockServer, tmp_path: Path
) -> None:
    assert install_recorder(server.context, None) is None
    assert server.context.hooks.record_prediction is None
    recorder = install_recorder(server.context, {"sink": str(tmp_path)})
    assert recorder is not None
    with pytest.raises(ServegraphError, match="already has a record_prediction hook"):
        install_recorder(server.context, {"sink": str(tmp_path)})
    recorder.close()
    assert server.context.hooks.record_prediction is None


def test_a_version_that_is_not_text_is_written_as_text(tmp_path: Path) -> None:
    recorder = PredictionRecorder({"sink": str(tmp_path)})
    stamp = datetime.now(UTC)
    recorder.record(PredictionRecord("m", 2, "e-1", stamp, [1], [2], 1.0))  # type: ignore[arg-type]
    recorder.start()
    recorder.close()
    assert read_records(tmp_path, "m").column("version").to_pylist() == ["2"]


def test_stream_records_are_json_whatever_their_values(server: MockServer) -> None:
    record = PredictionRecord("m", None, "e-1", datetime.now(UTC), {"x": object()}, None, 1.0)
    body = msgspec.json.decode(records_module._json.encode(records_module.record_body(record)))
    assert body["inputs"]["x"].startswith("<object object")
    assert records_module.json_text(None) is None


def test_the_module_examples_run() -> None:
    result = doctest.testmod(records_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
