"""Per-step metrics and custom metrics, read back through a Prometheus parser."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servegraph import Graph, StepError
from servegraph.monitoring.metrics import LATENCY_SAMPLE, Metrics
from tests.e2e.serve_graphs import build_metered


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def send(server: Any, bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        with contextlib.suppress(StepError):
            server.test(body=body)


def test_step_counts_are_exact_and_latency_is_sampled() -> None:
    server = build_metered().mock_server(metrics=True)
    send(server, [{"n": 1}] * 40 + [{"keep": False}] * 7 + [{"fail": True}] * 3)
    assert server.metrics is not None
    found = samples(server.metrics.render())
    step = {"parse": (("step", "parse"),), "gate": (("step", "gate"),), "last": (("step", "last"),)}
    assert found["servegraph_step_events_total", step["parse"]] == 50
    assert found["servegraph_step_events_out_total", step["parse"]] == 50
    assert found["servegraph_step_events_total", step["gate"]] == 50
    assert found["servegraph_step_events_out_total", step["gate"]] == 40
    assert found["servegraph_step_errors_total", step["gate"]] == 3
    assert found["servegraph_step_events_total", step["last"]] == 40
    assert found["servegraph_step_errors_total", step["last"]] == 0
    assert found["app_seen_total", step["gate"]] == 50  # the custom counter, with its step label
    sampled = found["servegraph_step_latency_seconds_count", step["parse"]]
    assert sampled == 50 // LATENCY_SAMPLE
    assert found["servegraph_step_latency_seconds_sum", step["parse"]] > 0
    server.close()


def test_async_steps_are_counted_too() -> None:
    async def slow(body: Any) -> Any:
        return body

    graph = Graph()
    graph.to(slow).to(lambda body: None, name="drop")
    server = graph.mock_server(metrics=True)
    for n in range(20):
        server.test(body=n)
    assert server.metrics is not None
    stats = server.metrics.steps
    assert (stats["slow"].events_in, stats["slow"].events_out) == (20, 20)
    assert (stats["drop"].events_in, stats["drop"].events_out) == (20, 0)
    assert stats["slow"].latency.count == 20 // LATENCY_SAMPLE
    server.close()


def test_custom_gauges_and_histograms_carry_their_step() -> None:
    metrics = Metrics()
    metrics.for_step("a").gauge("app_depth", "Queue depth.").set(3)
    metrics.for_step("b").gauge("app_depth").set(5.5)
    histogram = metrics.for_step("a").histogram("app_size", buckets=(1, 10))
    for value in (0.5, 5, 50):
        histogram.observe(value)
    found = samples(metrics.render())
    assert found["app_depth", (("step", "a"),)] == 3
    assert found["app_depth", (("step", "b"),)] == 5.5
    assert found["app_size_bucket", (("le", "1.0"), ("step", "a"))] == 1
    assert found["app_size_bucket", (("le", "10.0"), ("step", "a"))] == 2
    assert found["app_size_bucket", (("le", "+Inf"), ("step", "a"))] == 3
    assert found["app_size_count", (("step", "a"),)] == 3


def test_custom_metric_mistakes_are_clear() -> None:
    metrics = Metrics().for_step("a")
    metrics.counter("app_total")
    with pytest.raises(ValueError, match="metric 'app_total' is a counter, not a gauge"):
        metrics.gauge("app_total")
    with pytest.raises(ValueError, match="is not a Prometheus name"):
        metrics.counter("2bad-name")
    with pytest.raises(ValueError, match="a counter only goes up"):
        metrics.counter("app_total").inc(-1)


def test_metrics_are_off_unless_asked_for() -> None:
    server = build_metered().mock_server()
    assert server.metrics is None
    assert server.test(body={"n": 1}) == {"n": 1}
    server.close()
