"""Targets: to a stream, a table and files; each passes the event on."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pytest

from servegraph import Graph
from servegraph.errors import GraphError, StepError
from servegraph.state.tables import open_table
from servegraph.steps.targets import ToFile, ToStream, ToTable
from servegraph.streams.envelope import decode_event
from servegraph.streams.memory import MemoryBackend


def run(graph: Graph, bodies: list[Any]) -> list[Any]:
    async def main() -> list[Any]:
        server = graph.mock_server()
        try:
            return [
                await server.atest(body=body, event_id=f"e{n}") for n, body in enumerate(bodies)
            ]
        finally:
            await server.aclose()

    return asyncio.run(main())


def test_to_stream_writes_envelopes_with_the_event_ids_and_passes_events_on() -> None:
    graph = Graph()
    graph.to(ToStream("memory://scores-test", key="user"))
    bodies = [{"user": "a", "score": 1}, {"user": "b", "score": 2}]
    assert run(graph, bodies) == bodies

    async def read() -> list[Any]:
        backend = MemoryBackend("scores-test")
        messages = await backend.consume("g", "c", count=10, block_ms=0)
        await backend.aclose()
        return [(m.event_id, m.key, decode_event(m).body) for m in messages]

    assert asyncio.run(read()) == [("e0", "a", bodies[0]), ("e1", "b", bodies[1])]


def test_to_stream_refuses_a_url_that_is_not_a_stream() -> None:
    with pytest.raises(GraphError, match="kafka"):
        ToStream("kafka://broker:9092/topic")


def test_to_table_writes_rows_under_their_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}?table=scores"
    graph = Graph()
    graph.to(ToTable(url, key=["user", "day"], columns=["score"]))
    run(graph, [{"user": "a", "day": 1, "score": 5}, {"user": "a", "day": 2, "score": 7}])

    async def read() -> list[Any]:
        table = open_table(url)
        try:
            return await table.get_many(["a:1", "a:2", "b:1"])
        finally:
            await table.aclose()

    assert asyncio.run(read()) == [{"score": 5}, {"score": 7}, None]


def test_to_file_csv_appends_rows_and_keeps_the_header(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rows.csv"
    for start in (0, 3):
        graph = Graph()
        graph.to(ToFile(str(path), rows_per_flush=2))
        server = graph.mock_server()
        for n in range(start, start + 3):
            assert server.test(body={"n": n, "square": n * n}) == {"n": n, "square": n * n}
        server.close()
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows == [{"n": str(n), "square": str(n * n)} for n in range(6)]


def test_to_file_parquet_is_complete_when_the_graph_closes(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    graph = Graph()
    graph.to(ToFile(str(path), rows_per_flush=4))
    server = graph.mock_server()
    for n in range(10):
        server.test(body={"n": n, "label": f"x{n}"})
    server.close()
    table = pq.read_table(path)
    assert table.to_pylist() == [{"n": n, "label": f"x{n}"} for n in range(10)]


def test_to_file_rows_with_unknown_fields_and_bad_formats_are_errors(tmp_path: Path) -> None:
    graph = Graph()
    graph.to(ToFile(str(tmp_path / "rows.csv")), name="sink")
    server = graph.mock_server()
    server.test(body={"a": 1})
    with pytest.raises(StepError, match="step 'sink': a row has fields \\['b'\\]"):
        server.test(body={"b": 2})
    server.close()
    with pytest.raises(GraphError, match="to_file writes csv or parquet"):
        ToFile(str(tmp_path / "rows.txt"))
