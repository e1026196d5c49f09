"""Batches on a stream: events finish (and are acked) only when their batch has run."""

from __future__ import annotations

import asyncio
from typing import Any

from servegraph import Graph
from servegraph.steps.flow import Batch
from tests.unit.test_streams_runtime import publish_then_drain, read_stream


class Sink:
    """Records batches; fails the first ``failures`` batches it sees."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[int]] = []

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        if self.failures:
            self.failures -= 1
            message = "the sink is down"
            raise ConnectionError(message)
        self.batches.append([body["n"] for body in batch])
        return len(batch)


def test_a_consumer_batches_its_backlog_and_every_event_answers_its_batch() -> None:
    sink = Sink()
    graph = Graph()
    graph.to_queue("q", "memory://q").to(Batch(max_events=10, flush_after_s=0.05)).to(
        sink, name="sink"
    )
    server = graph.mock_server()
    asyncio.run(publish_then_drain(server, ({"n": n} for n in range(25))))
    assert sorted(n for batch in sink.batches for n in batch) == list(range(25))
    assert [len(batch) for batch in sink.batches] == [10, 10, 5]
    assert sorted(server.results["q"]) == [5] * 5 + [10] * 20


def test_a_failed_batch_is_retried_event_by_event_and_nothing_is_lost() -> None:
    sink = Sink(failures=1)
    graph = Graph()
    graph.to_queue("q", "memory://q", max_deliveries=3).to(
        Batch(max_events=5, flush_after_s=0.05)
    ).to(sink, name="sink")
    server = graph.mock_server()
    asyncio.run(publish_then_drain(server, ({"n": n} for n in range(10))))
    delivered = sorted(n for batch in sink.batches for n in batch)
    assert delivered == list(range(10))  # the 5 events of the failed batch came back
    assert read_stream(server, "q-dead-letter") == []
