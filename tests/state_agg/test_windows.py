"""Durations, windows and the bucket period: what parses, what does not, and the messages."""

from __future__ import annotations

import pytest

from servegraph.errors import GraphError
from servegraph.state.windows import (
    WindowError,
    format_duration,
    parse_duration,
    parse_duration_ms,
    plan_windows,
)

A = "aggregation 'a': "
NOT_A_LIST = "windows must be a non-empty list of durations, e.g. ['1h']"
HOW = "use a number and a unit (ms, s, m, h, d, w), e.g. '10m' or '1h'"


def message(error: pytest.ExceptionInfo[WindowError]) -> str:
    (problem,) = error.value.problems
    return problem.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1d12h", 129600.0),
        ("1m500ms", 60.5),
        ("0h10m", 600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration_ms(text) == round(seconds * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 hour", f"window '1 hour' does not parse: {HOW}"),
        ("", f"window '' does not parse: {HOW}"),
        ("h", f"window 'h' does not parse: {HOW}"),
        ("10", f"window '10' does not parse: {HOW}"),
        ("1H", f"window '1H' does not parse: {HOW}"),
        ("1.5h", f"window '1.5h' does not parse: {HOW}"),
        ("-1h", f"window '-1h' does not parse: {HOW}"),
        (" 1h", f"window ' 1h' does not parse: {HOW}"),
        ("10y", f"window '10y' does not parse: {HOW}"),
        (3600, f"window 3600 is not a string: {HOW}"),
        (None, f"window None is not a string: {HOW}"),
        (
            "30m1h",
            "window '30m1h' does not parse: a compound duration goes from the largest unit to "
            "the smallest, each unit once, e.g. '1h30m'",
        ),
        (
            "1h1h",
            "window '1h1h' does not parse: a compound duration goes from the largest unit to "
            "the smallest, each unit once, e.g. '1h30m'",
        ),
        ("0m", "window '0m' is zero: it must be longer than 0, e.g. '10m'"),
    ],
)
def test_parse_duration_rejects(text: object, expected: str) -> None:
    with pytest.raises(WindowError) as error:
        parse_duration(text)
    assert message(error) == expected


def test_window_error_is_a_graph_error_and_a_value_error() -> None:
    with pytest.raises(GraphError) as graph_error:
        parse_duration("soon", what="period")
    assert isinstance(graph_error.value, ValueError)
    expected = f"invalid graph:\n  - graph: period 'soon' does not parse: {HOW}"
    assert str(graph_error.value) == expected


@pytest.mark.parametrize(
    ("ms", "text"),
    [(1, "1ms"), (600_000, "10m"), (5_400_000, "1h30m"), (90_061_001, "1d1h1m1s1ms")],
)
def test_format_duration_round_trips(ms: int, text: str) -> None:
    assert format_duration(ms) == text
    assert parse_duration_ms(text) == ms


def test_format_duration_rejects_zero() -> None:
    with pytest.raises(ValueError, match="longer than 0 ms, got 0"):
        format_duration(0)


def test_default_period_sliding_is_a_tenth_of_the_gcd() -> None:
    plan = plan_windows(["1h", "6h", "24h"])
    assert plan.kind == "sliding"
    assert plan.period_ms == 360_000
    assert plan.period == 360.0
    assert [(w.spelling, w.ms, w.buckets) for w in plan.windows] == [
        ("1h", 3_600_000, 10),
        ("6h", 21_600_000, 60),
        ("24h", 86_400_000, 240),
    ]
    assert plan.longest == 240


def test_default_period_keeps_the_gcd_when_a_tenth_is_not_whole_milliseconds() -> None:
    assert plan_windows(["5ms", "15ms"]).period_ms == 5


def test_default_period_fixed_is_the_gcd() -> None:
    plan = plan_windows(["24h", "1h"], kind="fixed")
    assert plan.kind == "fixed"
    assert plan.period_ms == 3_600_000
    assert [w.buckets for w in plan.windows] == [24, 1]


def test_given_period() -> None:
    plan = plan_windows(["1h", "90m"], "10m")
    assert plan.period == 600.0
    assert [w.buckets for w in plan.windows] == [6, 9]


@pytest.mark.parametrize(
    ("windows", "period", "kind", "expected"),
    [
        (
            ["1h", "25m"],
            "10m",
            "sliding",
            "aggregation 'a': window '25m' is not a multiple of the period '10m': every window "
            "must be a whole number of periods; use a period that divides every window, "
            "e.g. '5m'",
        ),
        (
            ["1h"],
            "7m",
            "fixed",
            "aggregation 'a': window '1h' is not a multiple of the period '7m': every window "
            "must be a whole number of periods; use a period that divides every window, "
            "e.g. '1m'",
        ),
        (["1h"], "ten minutes", "sliding", f"{A}period 'ten minutes' does not parse: {HOW}"),
        (["1h", "1 day"], None, "sliding", f"{A}window '1 day' does not parse: {HOW}"),
        (["1h", "1h"], None, "sliding", f"{A}window '1h' is given twice"),
        ([], None, "sliding", f"{A}{NOT_A_LIST}"),
        ("1h", None, "sliding", f"{A}{NOT_A_LIST}"),
        (["1h"], None, "tumbling", f"{A}unknown window kind 'tumbling'; use 'sliding' or 'fixed'"),
    ],
)
def test_plan_windows_rejects(
    windows: list[str], period: str | None, kind: str, expected: str
) -> None:
    with pytest.raises(WindowError) as error:
        plan_windows(windows, period, kind, owner="aggregation 'a'")
    assert message(error) == expected
