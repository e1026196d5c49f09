"""The aggregation engine: each operation by hand, sliding and fixed windows, late and too-old
events, state round trips, configuration errors, and hypothesis properties against a brute force
over the raw events."""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servegraph.errors import GraphError
from servegraph.state.aggregations import (
    OPERATIONS,
    Aggregation,
    AggregationError,
    AggregationState,
    AggregationValueError,
    Aggregator,
    Features,
    state_from_dict,
    state_to_dict,
)
from servegraph.state.windows import WindowError

HOUR = 3600.0
DAY = 24 * HOUR
BASE = 1_700_000_000.0 // DAY * DAY
"""An epoch time on a day boundary (fixed windows are epoch-aligned)."""


def aggregator(
    operations: Sequence[str] = OPERATIONS,
    windows: Sequence[str] = ("1h",),
    period: str | None = "10m",
    kind: str = "sliding",
) -> Aggregator:
    return Aggregator([Aggregation("amount", "amount", operations, windows, period, kind)])


def feed(agg: Aggregator, events: Sequence[tuple[float, Any]]) -> AggregationState:
    state = agg.new_state()
    for time, value in events:
        agg.add(state, {"amount": value}, time)
    return state


def message(error: pytest.ExceptionInfo[Any]) -> str:
    (problem,) = error.value.problems
    text: str = problem.message
    return text


# ---------------------------------------------------------------------------------------------
# Each operation on a hand-computed example


def test_every_operation_by_hand() -> None:
    # 2, 4, 4, 4, 5, 5, 7, 9: sum 40, mean 5, squares 232, sample variance 32/7.
    values = [4, 2, 9, 4, 5, 4, 7, 5]
    agg = aggregator()
    state = feed(agg, [(BASE + 60 * i, v) for i, v in enumerate(values)])
    features = agg.features(state, BASE + 1500)
    assert features == {
        "amount_count_1h": 8,
        "amount_sum_1h": 40,
        "amount_avg_1h": 5.0,
        "amount_min_1h": 2,
        "amount_max_1h": 9,
        "amount_first_1h": 4,
        "amount_last_1h": 5,
        "amount_sqr_1h": 232,
        "amount_stdvar_1h": 32 / 7,
        "amount_stddev_1h": math.sqrt(32 / 7),
    }


def test_float_values() -> None:
    agg = aggregator(["sum", "avg", "stdvar", "stddev"])
    state = feed(agg, [(BASE, 1.5), (BASE + 1, 2.5), (BASE + 2, 4.0)])
    features = agg.features(state, BASE + 2)
    assert features["amount_sum_1h"] == 8.0
    assert features["amount_avg_1h"] == pytest.approx(8 / 3)
    # Deviations from 8/3: -7/6, -1/6, 4/3; squares 49/36 + 1/36 + 64/36 = 19/6; / 2.
    assert features["amount_stdvar_1h"] == pytest.approx(19 / 12)
    assert features["amount_stddev_1h"] == pytest.approx(math.sqrt(19 / 12))


def test_empty_window_and_single_value() -> None:
    agg = aggregator()
    empty = agg.features(agg.new_state(), BASE)
    assert empty == {
        "amount_count_1h": 0,
        "amount_sum_1h": 0,
        "amount_avg_1h": None,
        "amount_min_1h": None,
        "amount_max_1h": None,
        "amount_first_1h": None,
        "amount_last_1h": None,
        "amount_sqr_1h": 0,
        "amount_stdvar_1h": None,
        "amount_stddev_1h": None,
    }
    one = agg.features(feed(agg, [(BASE, 3)]), BASE)
    assert (one["amount_count_1h"], one["amount_avg_1h"], one["amount_sqr_1h"]) == (1, 3.0, 9)
    assert (one["amount_stdvar_1h"], one["amount_stddev_1h"]) == (None, None)
    # Two hours later the window is empty again.
    assert agg.features(feed(agg, [(BASE, 3)]), BASE + 2 * HOUR) == empty


def test_equal_values_have_zero_variance() -> None:
    agg = aggregator(["stdvar", "stddev"])
    # sum of squares minus squared sum would leave rounding noise here (storey's formula).
    features = agg.features(feed(agg, [(BASE + 100 * i, 0.1) for i in range(30)]), BASE + 3000)
    assert features == {"amount_stdvar_1h": 0.0, "amount_stddev_1h": 0.0}


def test_variance_of_large_values_with_a_small_spread() -> None:
    agg = aggregator(["avg", "stdvar"])
    values = [1e9 + 0.25, 1e9 + 0.5, 1e9 + 0.75, 1e9 + 1.0]  # spread 0.25 around a large mean
    features = agg.features(feed(agg, [(BASE + 7 * i, v) for i, v in enumerate(values)]), BASE)
    assert features["amount_avg_1h"] == 1e9 + 0.625
    assert features["amount_stdvar_1h"] == pytest.approx(0.3125 / 3, rel=1e-12)


def test_first_and_last_ties_keep_arrival_order() -> None:
    agg = aggregator(["first", "last"])
    state = feed(agg, [(BASE + 5, 1), (BASE + 5, 2), (BASE + 5, 3)])
    assert agg.features(state, BASE + 5) == {"amount_first_1h": 1, "amount_last_1h": 3}


# ---------------------------------------------------------------------------------------------
# Sliding and fixed windows


def test_sliding_and_fixed_windows_differ() -> None:
    events = [(BASE - 600, 1), (BASE + 300, 10)]  # 23:50 and 00:05
    sliding = aggregator(["sum"], ["1h"], "10m", "sliding")
    fixed = aggregator(["sum"], ["1h"], "10m", "fixed")
    # At 00:10 the sliding hour (23:20-00:10) holds both; the fixed hour 00:00-01:00 one.
    assert sliding.features(feed(sliding, events), BASE + 600) == {"amount_sum_1h": 11}
    assert fixed.features(feed(fixed, events), BASE + 600) == {"amount_sum_1h": 10}
    # At 00:55 the sliding hour (00:00-00:55, six 10m buckets from 00:00) lost 23:50.
    assert sliding.features(feed(sliding, events), BASE + 3300) == {"amount_sum_1h": 10}


def test_sliding_window_ends_with_the_query_bucket() -> None:
    agg = aggregator(["count", "last"], ["1h"], "10m")
    state = feed(agg, [(BASE + 60, 1), (BASE + 590, 2), (BASE + 1200, 3)])
    # At 00:01 the bucket 00:00-00:10 counts whole (00:09:50 included); 00:20 does not yet.
    assert agg.features(state, BASE + 60) == {"amount_count_1h": 2, "amount_last_1h": 2}
    assert agg.features(state, BASE + 1200) == {"amount_count_1h": 3, "amount_last_1h": 3}


def test_fixed_window_is_the_whole_calendar_window() -> None:
    agg = aggregator(["count"], ["1h", "1d"], None, "fixed")
    state = feed(agg, [(BASE + 100, 1), (BASE + 3000, 2), (BASE + HOUR + 10, 3)])
    # At 00:01 the fixed hour 00:00-01:00 already holds the 00:50 event (added before).
    assert agg.features(state, BASE + 60) == {"amount_count_1h": 2, "amount_count_1d": 3}
    assert agg.features(state, BASE + HOUR) == {"amount_count_1h": 1, "amount_count_1d": 3}


def test_several_windows_with_the_default_period() -> None:
    agg = aggregator(["sum", "count"], ["1h", "6h", "24h"], None)
    assert agg.aggregations[0].plan.period == 360.0
    events = [(BASE - 20 * HOUR, 1), (BASE - 5 * HOUR, 10), (BASE - 600, 100), (BASE, 1000)]
    features = agg.features(feed(agg, events), BASE)
    assert features == {
        "amount_sum_1h": 1100,
        "amount_count_1h": 2,
        "amount_sum_6h": 1110,
        "amount_count_6h": 3,
        "amount_sum_24h": 1111,
        "amount_count_24h": 4,
    }


# ---------------------------------------------------------------------------------------------
# Out-of-order and too-old events


def test_out_of_order_event_lands_in_its_own_bucket() -> None:
    agg = aggregator(["count", "sum", "min", "max", "first", "last"], ["1h"], "10m")
    state = feed(agg, [(BASE + 1800, 5), (BASE + 3000, 7)])
    before = state_to_dict(state)["aggregations"]["amount"]
    assert agg.add(state, {"amount": 1}, BASE + 100)  # late, but within the hour
    after = state_to_dict(state)["aggregations"]["amount"]
    assert after["index"] == [before["index"][0] - 3, *before["index"]]
    for column in ("min", "max", "first_time", "first", "last_time", "last"):
        assert after[column][1:] == before[column]  # the other buckets are untouched
    # Running totals (entry 0: the base): the new bucket's event is added after it.
    assert after["run_count"] == [0, 1, 2, 3]
    assert after["run_sum"] == [0.0, 1.0, 6.0, 13.0]
    assert agg.features(state, BASE + 3000) == {
        "amount_count_1h": 3,
        "amount_sum_1h": 13,
        "amount_min_1h": 1,
        "amount_max_1h": 7,
        "amount_first_1h": 1,
        "amount_last_1h": 7,
    }
    # A late event in an existing bucket: first and last go by time, not arrival.
    assert agg.add(state, {"amount": 9}, BASE + 1799)
    assert agg.add(state, {"amount": 8}, BASE + 3001)
    features = agg.features(state, BASE + 3001)
    assert (features["amount_first_1h"], features["amount_last_1h"]) == (1, 8)


def test_too_old_event_is_ignored_and_counted() -> None:
    agg = aggregator(["count", "sum"], ["1h"], "10m")
    state = feed(agg, [(BASE + 10_000, 1)])  # bucket 16 after BASE: buckets 11..16 kept
    assert agg.add(state, {"amount": 100}, BASE + 6599) is False  # bucket 10
    assert state.ignored == 1
    assert agg.add(state, {"amount": 10}, BASE + 6600) is True  # bucket 11
    assert state.ignored == 1
    assert agg.features(state, BASE + 10_000) == {"amount_count_1h": 2, "amount_sum_1h": 11}
    assert agg.add(state, {"amount": 100}, BASE - 10 * HOUR) is False
    assert state.ignored == 2


def test_old_buckets_are_dropped_when_time_moves_on() -> None:
    agg = aggregator(["count"], ["1h"], "10m")
    state = feed(agg, [(BASE, 1), (BASE + 1200, 1), (BASE + 3000, 1)])
    assert state_to_dict(state)["aggregations"]["amount"]["index"] == [
        int(BASE // 600) + k for k in (0, 2, 5)
    ]
    agg.add(state, {"amount": 1}, BASE + 4200)  # bucket 7 keeps buckets 2..7
    assert state_to_dict(state)["aggregations"]["amount"]["index"] == [
        int(BASE // 600) + k for k in (2, 5, 7)
    ]


def test_fixed_windows_keep_the_current_window_of_each_size() -> None:
    agg = aggregator(["count"], ["2h", "3h"], None, "fixed")  # period 1h
    state = feed(agg, [(BASE + 3.5 * HOUR, 1)])  # current 2h window from 2h, 3h from 3h
    assert agg.add(state, {"amount": 1}, BASE + 1.5 * HOUR) is False
    assert agg.add(state, {"amount": 1}, BASE + 2.5 * HOUR) is True
    assert agg.features(state, BASE + 3.5 * HOUR) == {"amount_count_2h": 2, "amount_count_3h": 1}


def test_an_event_counts_once_when_several_aggregations_ignore_it() -> None:
    agg = Aggregator(
        [
            Aggregation("a", "x", ["sum"], ["10m"], "1m"),
            Aggregation("b", "x", ["sum"], ["20m"], "1m"),
            Aggregation("c", "y", ["sum"], ["1h"], "1m"),
        ]
    )
    state = agg.new_state()
    assert agg.add(state, {"x": 1, "y": 1}, BASE + HOUR)
    assert agg.add(state, {"x": 2, "y": 2}, BASE + HOUR - 1500) is False  # too old for a, b
    assert state.ignored == 1
    assert agg.features(state, BASE + HOUR) == {"a_sum_10m": 1, "b_sum_20m": 1, "c_sum_1h": 3}


# ---------------------------------------------------------------------------------------------
# Values: missing, NaN, non-numeric


def test_none_missing_and_nan_are_skipped() -> None:
    agg = aggregator(["count", "sum"])
    state = agg.new_state()
    assert agg.add(state, {"amount": 1}, BASE)
    assert agg.add(state, {"amount": None}, BASE + 1)
    assert agg.add(state, {"other": 5}, BASE + 2)
    assert agg.add(state, {"amount": math.nan}, BASE + 3)
    assert agg.add(state, {"amount": np.float64("nan")}, BASE + 4)
    # A skipped event does not move the newest time: nothing was dropped.
    assert agg.add(state, {"amount": None}, BASE + 100 * HOUR)
    assert agg.features(state, BASE) == {"amount_count_1h": 1, "amount_sum_1h": 1}
    assert state.ignored == 0


def test_other_numbers_are_accepted() -> None:
    agg = aggregator(["sum", "count"])
    values = [True, np.int64(2), np.float32(0.5), decimal.Decimal("1.25"), Fraction(1, 4)]
    state = feed(agg, [(BASE + i, v) for i, v in enumerate(values)])
    features = agg.features(state, BASE + 10)
    assert features == {"amount_sum_1h": 5.0, "amount_count_1h": 5}
    assert json.loads(json.dumps(state_to_dict(state))) == state_to_dict(state)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "3.5",
            "aggregation 'amount': column 'amount' holds '3.5' (str), not a number; aggregations "
            "take int or float values (None and NaN are skipped)",
        ),
        (
            [1, 2],
            "aggregation 'amount': column 'amount' holds [1, 2] (list), not a number; "
            "aggregations take int or float values (None and NaN are skipped)",
        ),
        (
            "x" * 100,
            f"aggregation 'amount': column 'amount' holds '{'x' * 56}... (str), not a number; "
            "aggregations take int or float values (None and NaN are skipped)",
        ),
        (
            math.inf,
            "aggregation 'amount': column 'amount' holds inf; aggregations take finite numbers "
            "(None and NaN are skipped)",
        ),
        (
            10**400,
            "aggregation 'amount': column 'amount' holds "
            f"{str(10**400)[:57]}...; aggregations take finite numbers (None and NaN are "
            "skipped)",
        ),
        (
            -math.inf,
            "aggregation 'amount': column 'amount' holds -inf; aggregations take finite numbers "
            "(None and NaN are skipped)",
        ),
    ],
)
def test_non_numeric_values_raise_naming_the_column(value: object, expected: str) -> None:
    agg = aggregator(["sum"])
    state = feed(agg, [(BASE, 1)])
    with pytest.raises(AggregationValueError) as error:
        agg.add(state, {"amount": value}, BASE)
    assert str(error.value) == expected
    assert agg.features(state, BASE) == {"amount_sum_1h": 1}


# ---------------------------------------------------------------------------------------------
# Names, output, configuration errors


def test_feature_names_spell_the_windows_as_given() -> None:
    agg = Aggregator(
        [
            Aggregation("amount", "amt", ["sum", "count"], ["60m", "1d"], "1h"),
            Aggregation("clicks", "n", ["max"], ["1h30m"], kind="fixed"),
        ]
    )
    expected = (  # operations in the order of OPERATIONS: count before sum
        "amount_count_60m",
        "amount_sum_60m",
        "amount_count_1d",
        "amount_sum_1d",
        "clicks_max_1h30m",
    )
    assert agg.feature_names == expected
    assert tuple(agg.features(agg.new_state(), BASE)) == expected
    state = agg.new_state()
    agg.add(state, {"amt": 1, "n": 2}, BASE)
    assert tuple(agg.features(state, BASE)) == expected


def test_features_into_an_existing_dict() -> None:
    agg = aggregator(["sum"])
    body: Features = {"id": 7}
    assert agg.features(feed(agg, [(BASE, 2)]), BASE, into=body) is body
    assert body == {"id": 7, "amount_sum_1h": 2}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("amount", "amount", ["sum", "median"], ["1h"]),
            "aggregation 'amount': unknown operation 'median'; known operations: count, sum, "
            "avg, min, max, first, last, sqr, stdvar, stddev",
        ),
        (
            ("amount", "amount", ["sum", "sum"], ["1h"]),
            "aggregation 'amount': an operation is listed twice: ['sum', 'sum']",
        ),
        (
            ("amount", "amount", [], ["1h"]),
            "aggregation 'amount': operations must be a non-empty list, e.g. ['sum', 'count']",
        ),
        (
            ("amount", "amount", "sum", ["1h"]),
            "aggregation 'amount': operations must be a non-empty list, e.g. ['sum', 'count']",
        ),
        (("", "amount", ["sum"], ["1h"]), "an aggregation needs a non-empty name, got ''"),
        (
            ("amount", None, ["sum"], ["1h"]),
            "aggregation 'amount': column must be a non-empty string, got None",
        ),
    ],
)
def test_aggregation_errors(args: tuple[Any, ...], expected: str) -> None:
    with pytest.raises(AggregationError) as error:
        Aggregation(*args)
    assert isinstance(error.value, GraphError)
    assert message(error) == expected


def test_window_errors_name_the_aggregation() -> None:
    with pytest.raises(WindowError) as error:
        Aggregation("amount", "amount", ["sum"], ["1 hour"])
    assert message(error) == (
        "aggregation 'amount': window '1 hour' does not parse: use a number and a unit "
        "(ms, s, m, h, d, w), e.g. '10m' or '1h'"
    )
    with pytest.raises(WindowError) as error:
        Aggregation("amount", "amount", ["sum"], ["1h", "45m"], period="10m")
    assert message(error) == (
        "aggregation 'amount': window '45m' is not a multiple of the period '10m': every window "
        "must be a whole number of periods; use a period that divides every window, e.g. '5m'"
    )


def test_aggregator_errors() -> None:
    with pytest.raises(AggregationError) as error:
        Aggregator([])
    assert message(error) == "an aggregator needs at least one aggregation"
    twice = Aggregation("a", "x", ["sum"], ["1h"])
    with pytest.raises(AggregationError) as error:
        Aggregator([twice, Aggregation("a", "y", ["max"], ["1h"])])
    assert message(error) == "aggregation 'a' is defined twice"


# ---------------------------------------------------------------------------------------------
# State round trips


EVENTS = [(BASE + 37 * i % 7200, (i * 7) % 11 - 3 + (0.5 if i % 3 else 0)) for i in range(60)]


@pytest.mark.parametrize("codec", ["json", "msgspec"])
def test_state_round_trips_and_continues(codec: str) -> None:
    agg = aggregator(OPERATIONS, ["30m", "1h"], "5m")
    straight = feed(agg, EVENTS)
    half = feed(agg, EVENTS[:30])
    agg.add(half, {"amount": 1}, BASE - 10 * HOUR)  # ignored: the counter round-trips too
    straight.ignored += 1
    data = state_to_dict(half)
    encoded = json.dumps(data) if codec == "json" else msgspec.json.encode(data)
    decoded = json.loads(encoded) if codec == "json" else msgspec.json.decode(encoded)
    restored = state_from_dict(decoded)
    assert state_to_dict(restored) == data
    assert agg.features(restored, BASE + 3000) == agg.features(half, BASE + 3000)
    for time, value in EVENTS[30:]:
        agg.add(restored, {"amount": value}, time)
    assert state_to_dict(restored) == state_to_dict(straight)
    assert restored.ignored == 1
    for t in (BASE, BASE + 3000, BASE + 7000, BASE + 9000):
        assert agg.features(restored, t) == agg.features(straight, t)


def test_state_to_dict_copies() -> None:
    agg = aggregator(["sum"])
    state = feed(agg, [(BASE, 1)])
    data = state_to_dict(state)
    agg.add(state, {"amount": 2}, BASE)
    assert data["aggregations"]["amount"]["run_sum"] == [0.0, 1.0]
    assert data["aggregations"]["amount"]["first"] == [1.0]


def test_restore_fits_a_changed_configuration() -> None:
    old = Aggregator(
        [
            Aggregation("kept", "x", ["sum"], ["1h", "2h"], "10m"),
            Aggregation("recut", "x", ["sum"], ["1h"], "10m"),
            Aggregation("gone", "x", ["sum"], ["1h"], "10m"),
        ]
    )
    state = old.new_state()
    for i in range(12):
        old.add(state, {"x": 1}, BASE + 600 * i)
    new = Aggregator(
        [
            Aggregation("new", "x", ["count"], ["1h"], "10m"),
            Aggregation("kept", "x", ["sum"], ["30m"], "10m"),
            Aggregation("recut", "x", ["sum"], ["1h"], "5m"),
        ]
    )
    restored = new.restore(state_to_dict(state))
    assert restored.names == ("new", "kept", "recut")
    kept = state_to_dict(restored)["aggregations"]["kept"]["index"]
    assert kept == [int(BASE // 600) + k for k in (9, 10, 11)]  # the 30m window's buckets
    assert new.features(restored, BASE + 6600) == {
        "new_count_1h": 0,
        "kept_sum_30m": 3,
        "recut_sum_1h": 0,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"format": 2},
            "aggregation state is not in format 1 (found 2): it was not written by "
            "state_to_dict of this version",
        ),
        (
            [],
            "aggregation state is not in format 1 (found 'list'): it was not written by "
            "state_to_dict of this version",
        ),
        (
            {"format": 1, "ignored": 0},
            "aggregation state needs 'aggregations' (a mapping) and 'ignored' (an int)",
        ),
        (
            {"format": 1, "ignored": 0, "aggregations": {"a": {"period_ms": 1, "shift": 0}}},
            "aggregation state of 'a' lacks 'index': it needs 'period_ms', 'shift' and the "
            "columns index, min, max, first_time, first, last_time, last, run_count, run_sum, "
            "run_sqr, run_shifted, run_shifted_sqr",
        ),
    ],
)
def test_state_from_dict_rejects(data: Any, expected: str) -> None:
    with pytest.raises(AggregationValueError) as error:
        state_from_dict(data)
    assert str(error.value) == expected


def test_state_from_dict_rejects_ragged_columns() -> None:
    agg = aggregator(["sum"])
    data = state_to_dict(feed(agg, [(BASE, 1)]))
    data["aggregations"]["amount"]["last"].append(3)
    with pytest.raises(AggregationValueError) as error:
        state_from_dict(data)
    assert str(error.value) == (
        "aggregation state of 'amount' has columns of the wrong lengths: the running totals "
        "need one entry more than the buckets"
    )
    data["aggregations"]["amount"]["last"] = ["x"]
    with pytest.raises(AggregationValueError) as error:
        state_from_dict(data)
    assert str(error.value) == (
        "aggregation state of 'amount' holds a value of the wrong type: must be real number, "
        "not str"
    )


# ---------------------------------------------------------------------------------------------
# Properties: the engine against a brute force over the raw events.
#
# The brute force models the too-old rule rather than keeping events close together: the
# buckets kept are those at or after the cutoff of the newest bucket among all valued events
# (the cutoff only moves forward, so an event ignored on arrival is below the final cutoff too,
# and one accepted then dropped is below it as well). Values are multiples of 1/4 and small, so
# sums are exact in floats and the brute force can use exact fractions.

Event = tuple[str, float, float | int | None]

PERIODS = (1, 2, 5)
KEYS = "abc"


@dataclass(frozen=True)
class Config:
    aggregation: Aggregation
    period: int
    sizes: tuple[int, ...]  # windows in buckets, in the order given

    @property
    def sliding(self) -> bool:
        return self.aggregation.kind == "sliding"

    def bucket(self, time: float) -> int:
        return math.floor(Fraction(time) / self.period)

    def cutoff(self, newest: int) -> int:
        if self.sliding:
            return newest - max(self.sizes) + 1
        return min(newest // size * size for size in self.sizes)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    period = draw(st.sampled_from(PERIODS))
    sizes = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True)))
    kind = draw(st.sampled_from(("sliding", "fixed")))
    windows = [f"{size * period}s" for size in sizes]
    return Config(Aggregation("v", "v", OPERATIONS, windows, f"{period}s", kind), period, sizes)


values = st.one_of(st.none(), st.integers(-400, 400).map(lambda q: q / 4), st.integers(-100, 100))
times = st.integers(0, 800).map(lambda q: q / 4)  # 0 to 200 s, in quarter seconds


@st.composite
def events_lists(draw: st.DrawFn) -> list[Event]:
    """Up to 40 events within 10, 50 or 200 s: short spans put many in the same buckets."""
    span = draw(st.sampled_from((40, 200, 800)))  # in quarter seconds
    in_span = st.integers(0, span).map(lambda q: q / 4)
    return draw(st.lists(st.tuples(st.sampled_from(KEYS), in_span, values), max_size=40))


query_times = st.lists(st.integers(-40, 1000).map(lambda q: q / 4), min_size=1, max_size=4)


def brute_force(config: Config, events: Sequence[tuple[float, Any]], time: float) -> dict[str, Any]:
    """Every feature at ``time`` from one key's events (in arrival order), exactly."""
    valued = [(t, Fraction(v), i, v) for i, (t, v) in enumerate(events) if v is not None]
    kept = []
    if valued:
        cutoff = config.cutoff(max(config.bucket(t) for t, *_ in valued))
        kept = [e for e in valued if config.bucket(e[0]) >= cutoff]
    t_bucket = config.bucket(time)
    expected: dict[str, Any] = {}
    for window, size in zip(config.aggregation.windows, config.sizes, strict=True):
        if config.sliding:
            lo, hi = t_bucket - size + 1, t_bucket
        else:
            lo = t_bucket // size * size
            hi = lo + size - 1
        chosen = [e for e in kept if lo <= config.bucket(e[0]) <= hi]
        n = len(chosen)
        total = sum((e[1] for e in chosen), Fraction(0))
        squares = sum((e[1] * e[1] for e in chosen), Fraction(0))
        variance = (n * squares - total * total) / (n * (n - 1)) if n > 1 else None
        by_time = sorted(chosen, key=lambda e: (e[0], e[2]))  # equal times: arrival order
        result = {
            "count": n,
            "sum": total,
            "avg": total / n if n else None,
            "min": min(e[1] for e in chosen) if n else None,
            "max": max(e[1] for e in chosen) if n else None,
            "first": by_time[0][3] if n else None,
            "last": by_time[-1][3] if n else None,
            "sqr": squares,
            "stdvar": variance,
            "stddev": None if variance is None else math.sqrt(variance),
        }
        for op in OPERATIONS:
            expected[f"v_{op}_{window}"] = result[op]
    return expected


def assert_matches(actual: Features, expected: dict[str, Any]) -> None:
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = actual[name]
        if want is None or got is None:
            assert got is None, (name, got, want)
            assert want is None, (name, got, want)
        elif name.startswith("v_count_"):
            assert got == want, (name, got, want)
        else:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (name, got, want)


def run(agg: Aggregator, events: Sequence[Event]) -> dict[str, AggregationState]:
    states = {key: agg.new_state() for key in KEYS}
    for key, time, value in events:
        agg.add(states[key], {"v": value}, time)
    return states


@settings(max_examples=200, deadline=None)
@given(config=configs(), events=events_lists(), queries=query_times, data=st.data())
def test_features_match_the_brute_force_in_any_order(
    config: Config, events: list[Event], queries: list[float], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(events), label="shuffled")
    if events:  # also query near the events, a few periods either side: the window edges
        near = st.tuples(st.sampled_from(events), st.integers(-13, 13), st.sampled_from((0, 0.5)))
        for (_, time, _), periods, part in data.draw(st.lists(near, max_size=6), label="near"):
            queries = [*queries, time + (periods + part) * config.period]
    agg = Aggregator([config.aggregation])
    for order in (events, shuffled):
        states = run(agg, order)
        for key in KEYS:
            mine = [(t, v) for k, t, v in order if k == key]
            for time in queries:
                assert_matches(agg.features(states[key], time), brute_force(config, mine, time))


@settings(max_examples=200, deadline=None)
@given(config=configs(), events=events_lists())
def test_too_old_events_are_ignored_counted_and_the_rest_kept(
    config: Config, events: list[Event]
) -> None:
    agg = Aggregator([config.aggregation])
    states = {key: agg.new_state() for key in KEYS}
    newest: dict[str, int] = {}
    ignored = dict.fromkeys(KEYS, 0)
    accepted: dict[str, list[int]] = {key: [] for key in KEYS}
    for key, time, value in events:
        result = agg.add(states[key], {"v": value}, time)
        if value is None:
            assert result is True
            continue
        bucket = config.bucket(time)
        too_old = key in newest and bucket < config.cutoff(newest[key])
        assert result is not too_old
        if too_old:
            ignored[key] += 1
        else:
            newest[key] = max(newest.get(key, bucket), bucket)
            accepted[key].append(bucket)
    for key in KEYS:
        assert states[key].ignored == ignored[key]
        index = state_to_dict(states[key])["aggregations"]["v"]["index"]
        if key in newest:
            cutoff = config.cutoff(newest[key])
            assert index == sorted({b for b in accepted[key] if b >= cutoff})
        else:
            assert index == []


@settings(max_examples=100, deadline=None)
@given(config=configs(), events=events_lists(), split=st.integers(0, 40), time=times)
def test_a_json_round_trip_anywhere_changes_nothing(
    config: Config, events: list[Event], split: int, time: float
) -> None:
    agg = Aggregator([config.aggregation])
    straight = run(agg, events)
    halves = run(agg, events[:split])
    restored = {
        key: state_from_dict(json.loads(json.dumps(state_to_dict(state))))
        for key, state in halves.items()
    }
    for key, t, value in events[split:]:
        agg.add(restored[key], {"v": value}, t)
    for key in KEYS:
        assert state_to_dict(restored[key]) == state_to_dict(straight[key])
        assert restored[key].ignored == straight[key].ignored
        assert agg.features(restored[key], time) == agg.features(straight[key], time)


def feed_v(agg: Aggregator, events: Sequence[tuple[float, Any]]) -> AggregationState:
    state = agg.new_state()
    for time, value in events:
        agg.add(state, {"v": value}, time)
    return state


@pytest.mark.parametrize("kind", ["sliding", "fixed"])
def test_late_events_in_every_bucket_against_the_brute_force(kind: str) -> None:
    # Every window edge around late events that land in existing and in new older buckets.
    aggregation = Aggregation("v", "v", OPERATIONS, ["1s", "2s", "6s"], "1s", kind)
    config = Config(aggregation, 1, (1, 2, 6))  # 6s: nothing below bucket 5 is too old
    in_order = [(float(t), t + 1) for t in range(6)]
    for late in ([(4.5, 10), (3.5, 20), (2.5, 30)], [(1.5, 40), (4.25, 50), (3.75, 60)]):
        agg = Aggregator([aggregation])
        events = [*in_order[:2], *in_order[3:], *late]  # bucket 2 arrives late too
        state = feed_v(agg, events)
        for time in [t / 2 for t in range(-2, 18)]:
            assert_matches(agg.features(state, time), brute_force(config, events, time))


def test_running_totals_forget_dropped_history() -> None:
    agg = aggregator(["sum", "count"], ["1h"], "10m")
    state = agg.new_state()
    for i in range(100):  # huge values, long gone from the window by the end
        agg.add(state, {"amount": 1e15}, BASE + i)
    for i in range(1, 200):
        agg.add(state, {"amount": 0.1}, BASE + 600 * i)
    run_count = state_to_dict(state)["aggregations"]["amount"]["run_count"]
    assert run_count[0] <= run_count[-1] - run_count[0]  # the base is no bigger than the rest
    features = agg.features(state, BASE + 600 * 199)
    assert features["amount_count_1h"] == 6
    assert features["amount_sum_1h"] == pytest.approx(0.6, rel=1e-12)


def test_a_state_of_other_aggregations_is_refused() -> None:
    one = Aggregator([Aggregation("a", "x", ["sum"], ["1h"], "10m")])
    two = Aggregator([Aggregation("a", "x", ["sum"], ["1h"], "5m")])
    data = state_to_dict(one.new_state())
    assert one.features(state_from_dict(data), BASE) == {"a_sum_1h": 0.0}  # equal names: fine
    expected = (
        "this state holds the aggregations ['a'] (periods in ms [600000]), the aggregator ['a'] "
        "(periods [300000]): read saved states with Aggregator.restore"
    )
    with pytest.raises(AggregationValueError) as error:
        two.add(state_from_dict(data), {"x": 1}, BASE)
    assert str(error.value) == expected
    with pytest.raises(AggregationValueError) as error:
        two.features(one.new_state(), BASE)
    assert str(error.value) == expected
    assert two.features(two.restore(data), BASE) == {"a_sum_1h": 0.0}
