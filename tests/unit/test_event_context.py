"""Event and Context: pure data and the services a step gets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from servegraph import Context, Event
from servegraph.context import NullMetric, NullMetrics


def test_event_defaults() -> None:
    event = Event({"a": 1})
    assert (event.method, event.path, event.trigger) == ("POST", "/", "mock")
    assert event.headers == {}
    assert event.query == {}
    assert event.key is None
    assert event.error is None
    assert event.content_type is None


def test_event_id_is_created_once_on_first_read() -> None:
    event = Event(1)
    first = event.id
    assert first == event.id
    assert len(first) == 32
    event.id = "mine"
    assert event.id == "mine"


def test_event_time_is_created_on_first_read() -> None:
    event = Event(1)
    assert event.time.tzinfo is UTC
    fixed = datetime(2026, 1, 1, tzinfo=UTC)
    event.time = fixed
    assert event.time == fixed


def test_branch_copies_the_body_and_keeps_the_id() -> None:
    event = Event({"nested": {"x": 1}}, key="k")
    twin = event.branch()
    twin.body["nested"]["x"] = 2
    assert event.body == {"nested": {"x": 1}}
    assert twin.id == event.id
    assert twin.key == "k"


def test_event_repr_shows_id_path_and_body() -> None:
    assert repr(Event(1, id="e", path="/p")) == "Event(id='e', path='/p', body=1)"


def test_context_params_and_defaults() -> None:
    context = Context(params={"a": 1})
    assert context.get_param("a") == 1
    assert context.get_param("b", 2) == 2


def test_context_secrets_from_mapping_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEGRAPH_SECRET_TOKEN", "prefixed")
    monkeypatch.setenv("PLAIN", "plain")
    context = Context(secrets={"GIVEN": "given"})
    assert context.get_secret("GIVEN") == "given"
    assert context.get_secret("TOKEN") == "prefixed"
    assert context.get_secret("PLAIN") == "plain"
    assert context.get_secret("ABSENT") is None


def test_step_view_binds_the_logger_and_shares_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    context = Context(params={"a": 1}, is_mock=True, tables={"t": {}})
    view = context.for_step("parse")
    assert view.step == "parse"
    assert view.is_mock
    assert view.get_param("a") == 1
    assert view.get_table("t") is context.get_table("t")
    with caplog.at_level(logging.INFO, logger="servegraph.engine"):
        view.logger.info("hello")
    assert caplog.records[0].step == "parse"  # type: ignore[attr-defined]


def test_unknown_table_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"no table named 'x' in this context \(tables: a, b\)"):
        Context(tables={"b": 1, "a": 2}).get_table("x")


def test_metrics_hook_is_a_no_op_until_monitoring() -> None:
    metrics = Context().metrics
    metrics.counter("c").inc()
    metrics.gauge("g").set(1.0)
    metrics.histogram("h").observe(0.5)
    assert isinstance(metrics, NullMetrics)
    assert isinstance(metrics.counter("c"), NullMetric)
