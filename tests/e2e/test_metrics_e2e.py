"""/metrics of a real ``servegraph serve`` process after known traffic."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server_process import Start


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_server_counts_events_errors_and_statuses_per_step(start: Start) -> None:
    server = start("tests.e2e.serve_graphs:build_metered")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for body in [{"n": 1}] * 30 + [{"keep": False}] * 5 + [{"fail": True}] * 2:
            client.post("/", json=body)
    found = scrape(server.url)
    gate = (("step", "gate"),)
    assert found["servegraph_step_events_total", gate] == 37
    assert found["servegraph_step_events_out_total", gate] == 30
    assert found["servegraph_step_errors_total", gate] == 2
    assert found["servegraph_step_events_total", (("step", "last"),)] == 30
    assert found["app_seen_total", gate] == 37
    # Every answer counts, the readiness probes of the test's start included.
    assert found["servegraph_http_requests_total", (("status", "200"),)] >= 35
    assert found["servegraph_http_requests_total", (("status", "500"),)] == 2
    assert found["servegraph_step_latency_seconds_count", gate] >= 1


def test_metrics_can_be_turned_off(start: Start) -> None:
    server = start("tests.e2e.serve_graphs:build_metered", "--no-metrics")
    httpx.post(f"{server.url}/", json={"n": 1}, timeout=5)
    found = scrape(server.url)
    assert not any(name.startswith("servegraph_step_") for name, _ in found)
    assert found["servegraph_http_requests_total", (("status", "200"),)] >= 1
