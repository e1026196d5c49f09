"""OpenTelemetry spans: per event and per step, one trace across a queue hop and from HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servegraph import Graph
from servegraph.event import EVENT_ID_HEADER
from servegraph.monitoring.tracing import EVENT_SPAN, Tracing
from servegraph.steps.transforms import Map

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


def by_name(finished: Any) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


def test_each_event_and_step_gets_a_span(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = spans
    graph = Graph()
    graph.to(Map("event + 1"), name="plus").to(Map("event * 2"), name="times")
    server = graph.mock_server(tracing=tracing)
    assert server.test(body=1, event_id="ev-1") == 4
    found = by_name(exporter.get_finished_spans())
    event = found[EVENT_SPAN]
    assert event.attributes is not None
    assert event.attributes["servegraph.event_id"] == "ev-1"
    for step in ("plus", "times"):
        span = found[step]
        assert span.parent is not None
        assert span.parent.span_id == event.context.span_id
        assert span.context.trace_id == event.context.trace_id
    server.close()


def test_an_incoming_traceparent_is_continued(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = spans
    graph = Graph()
    graph.to(Map("event"), name="echo")
    server = graph.mock_server(tracing=tracing)
    server.test(body=1, headers={"traceparent": PARENT})
    event = by_name(exporter.get_finished_spans())[EVENT_SPAN]
    assert f"{event.context.trace_id:032x}" == TRACE_ID
    server.close()


def test_a_trace_crosses_a_queue_hop_with_one_trace_id(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    graph = Graph()
    graph.to(Map("event + 1"), name="front").to_queue("q", "memory://traced-q").to(
        Map("event * 10"), name="back"
    )
    server = graph.mock_server(tracing=tracing)
    server.test(body=1, headers={"traceparent": PARENT, EVENT_ID_HEADER: "ev-9"})
    assert server.results["q"] == [20]
    finished = exporter.get_finished_spans()
    events = [span for span in finished if span.name == EVENT_SPAN]
    assert len(events) == 2  # the request, and the event after the queue
    assert {f"{span.context.trace_id:032x}" for span in finished} == {TRACE_ID}
    assert {span.attributes["servegraph.event_id"] for span in events if span.attributes} == {
        "ev-9"
    }
    steps = by_name(finished)
    assert steps["back"].context.trace_id == steps["front"].context.trace_id
    server.close()


def test_tracing_is_off_by_default() -> None:
    graph = Graph()
    graph.to(Map("event"))
    server = graph.mock_server()
    assert server.plan.tracing is None
    server.close()


def test_an_http_request_s_traceparent_reaches_the_event_span() -> None:
    import httpx
    from opentelemetry import trace

    from servegraph.server.app import ServingApp
    from tests.server.asgi import serve

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # what --tracing uses: the global provider

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> int:
        response = await client.post("/", json=1, headers={"traceparent": PARENT})
        return response.status_code

    graph = Graph()
    graph.to(Map("event + 1"), name="plus").respond()
    assert serve(graph, scenario, tracing=True) == 200
    found = by_name(exporter.get_finished_spans())
    assert f"{found[EVENT_SPAN].context.trace_id:032x}" == TRACE_ID
    assert found["plus"].parent is not None
    provider.shutdown()
