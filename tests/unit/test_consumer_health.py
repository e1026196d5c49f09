"""A consumer that loses its broker backs off, reports not ready, and acks nothing."""

from __future__ import annotations

import asyncio

from servegraph import Graph
from servegraph.streams.health import _route
from servegraph.streams.runtime import StreamRuntime


def double(body: int) -> int:
    return body * 2


def test_repeated_read_failures_make_the_consumer_not_ready() -> None:
    graph = Graph()
    graph.to_queue("work", "redis://127.0.0.1:1/nowhere").to(double)
    runtime = StreamRuntime(graph.spec)

    async def scenario() -> None:
        consumer = runtime.consumer("work", consumer="c1")
        assert _route(consumer, "GET", "/v2/health/ready")[0] == 200
        for _ in range(3):
            assert await consumer.poll(block_ms=10) == 0
        assert not consumer.ready
        status, body = _route(consumer, "GET", "/v2/health/ready")
        assert status == 503
        assert body == {"ready": False, "reason": "cannot reach the stream 'nowhere'"}
        assert consumer.statistics.broker_errors == 3
        assert consumer.statistics.acked == 0
        await runtime.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_health_routes_answer_only_get_on_known_paths() -> None:
    graph = Graph()
    graph.to_queue("work", "memory://work").to(double)
    consumer = StreamRuntime(graph.spec).consumer("work", consumer="c1")
    assert _route(consumer, "POST", "/v2/health/live")[0] == 405
    assert _route(consumer, "GET", "/v2/health/live") == (200, {"live": True})
    status, counters = _route(consumer, "GET", "/v2/consumer")
    assert status == 200
    assert isinstance(counters, dict)
    assert counters["group"] == "work"
    assert counters["processed"] == 0
