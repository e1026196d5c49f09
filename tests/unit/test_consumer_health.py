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


def test_the_metrics_route_counts_what_the_consumer_and_its_steps_did() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from servegraph.context import Context
    from servegraph.event import Event
    from servegraph.monitoring.metrics import Metrics
    from servegraph.streams.health import serve_health

    graph = Graph()
    graph.to_queue("work", "memory://metrics-work").to(double)
    runtime = StreamRuntime(graph.spec, context=Context(metrics=Metrics()))

    async def scenario() -> str:
        front = runtime.runner()
        for n in range(5):
            await front.run(Event(n))
        consumer = runtime.consumer("work", consumer="c1")
        while await consumer.poll(block_ms=0):
            pass
        await consumer.drain()
        server = await serve_health(consumer, "127.0.0.1", 0, runtime.context.metrics)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        response = (await reader.read()).decode()
        writer.close()
        server.close()
        await runtime.aclose()
        head, _, body = response.partition("\r\n\r\n")
        assert "content-type: text/plain; version=0.0.4" in head
        return body

    text = asyncio.run(asyncio.wait_for(scenario(), 30))
    found = {
        (sample.name, sample.labels.get("step")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert found["servegraph_consumer_processed_total", None] == 5
    assert found["servegraph_consumer_acked_total", None] == 5
    assert found["servegraph_consumer_dead_lettered_total", None] == 0
    assert found["servegraph_step_events_total", "double"] == 5
