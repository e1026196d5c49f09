"""A consumer that dead-letters one event (for the JSON log test's child process)."""

from __future__ import annotations

from typing import Any

from servegraph import Event, Graph
from servegraph.streams.runtime import StreamRuntime


def fail(body: Any) -> Any:
    message = "always"
    raise ValueError(message)


async def dead_letter_one() -> None:
    graph = Graph()
    graph.to_queue("q", "memory://logs-q", max_deliveries=1).to(fail)
    runtime = StreamRuntime(graph.spec)
    await runtime.runner().run(Event(1, id="ev-bad"))
    consumer = runtime.consumer("q", consumer="c1")
    while await consumer.poll(block_ms=0):
        pass
    await consumer.drain()
    await runtime.aclose()
