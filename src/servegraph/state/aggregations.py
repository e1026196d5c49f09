"""Per-key windowed aggregations (storey's ``AggregateByKey``, MLRun's ``add_aggregation``).

The pure computational core: no I/O, no keys, no clocks. A graph step builds one
``Aggregator([Aggregation(...), ...])``, keeps one ``AggregationState`` per key (in a table, as
the JSON-compatible dict of ``state_to_dict``, read back with ``Aggregator.restore`` or
``state_from_dict``), calls ``Aggregator.add(state, body, time)`` per event and
``Aggregator.features(state, time)`` when it wants the feature values; when to emit (every
event, after a period or a window) is the step's business. Times are float epoch seconds.

Semantics
---------
- An ``Aggregation(name, column, operations, windows, period=None, kind="sliding")`` makes the
  features ``{name}_{op}_{window}`` (window spelled as given, e.g. ``amount_sum_1h``); output
  order: aggregations and windows in the order given, operations in the order of ``OPERATIONS``.
- Time is cut into buckets of ``period`` seconds: an event at ``t`` lands in bucket
  ``floor(t / period)``. Windows must be whole multiples of the period (see
  ``servegraph.state.windows`` for the default period).
- Sliding window ``W`` at query time ``T``: the ``W / period`` buckets ending with T's bucket
  (events later than T in T's own bucket count; later buckets do not).
  Fixed (tumbling) window ``W`` at ``T``: the epoch-aligned ``[floor(T/W)*W, +W)``, all of it.
- Operations: count, sum, avg, min, max, first, last, sqr (sum of squares), stdvar (sample
  variance, n-1) and stddev (its square root). An empty window gives count, sum and sqr 0 and
  None for the others; stdvar and stddev are None below 2 values (storey gives NaN; None survives
  JSON). first and last are the values at the earliest and latest event time in the window; equal
  times keep arrival order (first: the earlier arrival, last: the later one).
- Per key and aggregation, only buckets that got events are kept (sparse, ordered columns in
  arrays, see ``Buckets``). Each bucket holds count, sum, sum of squares, min, max, first
  value+time, last value+time and the shifted sums below, whatever the operations, so adding an
  operation later needs no new state. The additive ones are kept as running totals, so a window
  costs two bisections, O(1) for count, sum, avg, sqr, stdvar, stddev, first and last, and a
  C-level ``min``/``max`` over the buckets present: never ``W / period`` steps.
- Values are stored as float64: sums of ints come back as floats (exact up to 2**53), and a
  window's sum is a difference of running totals, within a few ulps of the total kept rather
  than bit-identical to adding its values one by one (the totals are re-based once the dropped
  events outnumber the kept ones, so that error stays the size of what is kept).
- Retention: buckets no query at or after the newest event time can see are dropped, i.e. for
  sliding windows those older than the longest window ending at the newest bucket, for fixed
  windows those before the start of the current fixed window of each size. An out-of-order event
  lands in its own bucket and changes no other bucket's values (the running totals after it move
  by its value, as they should); one whose bucket is already dropped is ignored:
  ``add`` returns False and ``state.ignored`` counts it (an event counts once, however many
  aggregations ignored it).
- None, a missing column and NaN are skipped for that aggregation (like storey; not counted and
  the newest time does not move); a value that is not a number, or is infinite, raises
  ``AggregationValueError`` naming the aggregation and the column. bool counts as int.
- stdvar is ``(n*Q - D**2) / (n*(n-1))`` over the window, where D and Q are the sums of
  ``x - K`` and ``(x - K)**2`` and K is the first value added while the key's buckets were
  empty (the "shifted data" algorithm): exactly 0 for constant values, and free of the
  cancellation that ``n*sqr - sum**2`` (storey's formula) suffers when the mean is large
  relative to the spread, as long as the values stay near K.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servegraph.errors import GraphError, ServegraphError
from servegraph.state.windows import WindowPlan, plan_windows

OPERATIONS: tuple[str, ...] = (
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "first",
    "last",
    "sqr",
    "stdvar",
    "stddev",
)
"""The operations an aggregation can compute (storey's names)."""

STATE_FORMAT = 1
"""The version of the dict ``state_to_dict`` writes."""

_EMPTY: dict[str, float | None] = {"count": 0, "sum": 0.0, "sqr": 0.0}
"""An empty window's value per operation (None for those not listed)."""

_BUCKET_COLUMNS = ("index", "min", "max", "first_time", "first", "last_time", "last")
"""Per-bucket columns: one entry per bucket present."""

_RUNNING_COLUMNS = ("run_count", "run_sum", "run_sqr", "run_shifted", "run_shifted_sqr")
"""Running totals: entry 0 is the total before the oldest bucket kept, entry i+1 the total up to
and including bucket i, so a window's total is one subtraction."""

_COLUMNS = _BUCKET_COLUMNS + _RUNNING_COLUMNS
"""Every column, in the order ``state_to_dict`` writes them."""

_TYPECODES = {column: "q" if column in ("index", "run_count") else "d" for column in _COLUMNS}
"""Columns are arrays (unboxed and contiguous: a window's max reads one block of memory, not one
float object per bucket); bucket indexes and counts are int64, the rest float64."""

_floor = math.floor

Number = int | float
Features = dict[str, float | None]


class AggregationError(GraphError, ValueError):
    """An aggregation whose configuration is wrong (names, operations, windows)."""


class AggregationValueError(ServegraphError, ValueError):
    """An event value that cannot be aggregated, or a saved state that cannot be read."""


@dataclass(frozen=True, slots=True)
class Aggregation:
    """One column aggregated with some operations over some windows.

    Like storey's ``FieldAggregator(name, field, aggr, windows)`` and MLRun's
    ``add_aggregation(column, operations, windows, period, name)``; ``kind`` chooses sliding
    windows (storey's ``SlidingWindows``) or fixed ones (``FixedWindows``).
    """

    name: str
    column: str
    operations: Sequence[str]
    windows: Sequence[str]
    period: str | None = None
    kind: str = "sliding"
    plan: WindowPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            msg = f"an aggregation needs a non-empty name, got {self.name!r}"
            raise AggregationError(msg)
        owner = f"aggregation {self.name!r}"
        if not isinstance(self.column, str) or not self.column:
            msg = f"{owner}: column must be a non-empty string, got {self.column!r}"
            raise AggregationError(msg)
        if isinstance(self.operations, str) or not self.operations:
            msg = f"{owner}: operations must be a non-empty list, e.g. ['sum', 'count']"
            raise AggregationError(msg)
        for op in self.operations:
            if op not in OPERATIONS:
                msg = (
                    f"{owner}: unknown operation {op!r}; known operations: {', '.join(OPERATIONS)}"
                )
                raise AggregationError(msg)
        if len(set(self.operations)) != len(self.operations):
            msg = f"{owner}: an operation is listed twice: {self.operations!r}"
            raise AggregationError(msg)
        plan = plan_windows(self.windows, self.period, self.kind, owner=owner)
        object.__setattr__(self, "operations", tuple(self.operations))
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "plan", plan)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature names, in output order (windows, then operations as in OPERATIONS)."""
        ops = [op for op in OPERATIONS if op in self.operations]
        return tuple(f"{self.name}_{op}_{w}" for w in self.windows for op in ops)


class Buckets:
    """One aggregation's buckets for one key: parallel columns ordered by bucket index.

    Per bucket: index, min, max, first value+time and last value+time. Additive quantities
    (count, sum, sum of squares, shifted sum and shifted sum of squares) are running totals with
    a leading base entry (see ``_RUNNING_COLUMNS``): appending to or updating the newest bucket
    stays O(1), and a window's count or sum costs two reads instead of a pass over its buckets.
    """

    __slots__ = (*_COLUMNS, "shift")

    def __init__(self) -> None:
        # K of the shifted sums: the first value added while the series was empty.
        self.shift: Number = 0
        self.index: array[int] = array("q")
        self.min: array[float] = array("d")
        self.max: array[float] = array("d")
        self.first_time: array[float] = array("d")
        self.first: array[float] = array("d")
        self.last_time: array[float] = array("d")
        self.last: array[float] = array("d")
        self.run_count: array[int] = array("q", (0,))
        self.run_sum: array[float] = array("d", (0.0,))
        self.run_sqr: array[float] = array("d", (0.0,))
        self.run_shifted: array[float] = array("d", (0.0,))
        self.run_shifted_sqr: array[float] = array("d", (0.0,))

    def columns(self) -> tuple[array[Any], ...]:
        return tuple(getattr(self, name) for name in _COLUMNS)

    def running(self) -> tuple[array[Any], ...]:
        return tuple(getattr(self, name) for name in _RUNNING_COLUMNS)

    def add_to_totals(self, start: int, value: Number) -> None:
        """Add an event of ``value`` to the running totals from entry ``start`` to the end."""
        d = value - self.shift
        square = value * value
        d_square = d * d
        run_sum = self.run_sum
        run_sqr = self.run_sqr
        run_shifted = self.run_shifted
        run_shifted_sqr = self.run_shifted_sqr
        run_count = self.run_count
        for i in range(start, len(run_count)):
            run_count[i] += 1
            run_sum[i] += value
            run_sqr[i] += square
            run_shifted[i] += d
            run_shifted_sqr[i] += d_square

    def drop_before(self, cutoff: int) -> None:
        """Drop the buckets whose index is below ``cutoff``."""
        k = bisect_left(self.index, cutoff)
        if k:
            for column in self.columns():
                del column[:k]
            # Entry 0 now carries the dropped events. Once they outnumber the events kept,
            # subtract it out, so the totals (and their rounding) stay the size of what is kept.
            run_count = self.run_count
            if run_count[0] > run_count[-1] - run_count[0]:
                for column in self.running():
                    base = column[0]
                    column[:] = array(column.typecode, [x - base for x in column])


class AggregationState:
    """One key's state: the buckets of each aggregation and the count of ignored events."""

    __slots__ = ("ignored", "names", "periods_ms", "series")

    def __init__(
        self,
        names: tuple[str, ...],
        periods_ms: tuple[int, ...],
        series: list[Buckets],
        ignored: int = 0,
    ) -> None:
        self.names = names
        self.periods_ms = periods_ms
        self.series = series
        self.ignored = ignored

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{n}: {len(s.index)}" for n, s in zip(self.names, self.series, strict=True)
        )
        return f"AggregationState(buckets={{{sizes}}}, ignored={self.ignored})"


# One window's precomputed plan: (buckets, then the feature name of count, sum, avg, min, max,
# first, last, sqr, stdvar, stddev ("" when not asked), then the features of an empty window).
_WindowPlanTuple = tuple[int, str, str, str, str, str, str, str, str, str, str, Features]


class _Plan:
    """What ``add`` and ``features`` need of one aggregation, computed once."""

    __slots__ = ("column", "empty", "fixed_sizes", "keep", "name", "period", "windows")

    def __init__(self, aggregation: Aggregation) -> None:
        plan = aggregation.plan
        self.name = aggregation.name
        self.column = aggregation.column
        self.period = plan.period
        # Sliding: keep the longest window ending at the newest bucket (newest - keep onwards).
        self.keep = plan.longest - 1
        self.fixed_sizes: tuple[int, ...] | None = (
            tuple(w.buckets for w in plan.windows) if plan.kind == "fixed" else None
        )
        ops = aggregation.operations
        windows: list[_WindowPlanTuple] = []
        self.empty: Features = {}
        for window in plan.windows:
            names = {op: f"{aggregation.name}_{op}_{window.spelling}" for op in ops}
            empty = {names[op]: _EMPTY.get(op) for op in OPERATIONS if op in names}
            self.empty.update(empty)
            windows.append(
                (
                    window.buckets,
                    *(names.get(op, "") for op in OPERATIONS),
                    empty,
                )  # type: ignore[arg-type]
            )
        self.windows = tuple(windows)

    def cutoff(self, newest: int) -> int:
        """The oldest bucket index still kept when the newest bucket is ``newest``."""
        sizes = self.fixed_sizes
        if sizes is None:
            return newest - self.keep
        return min(newest // size * size for size in sizes)

    def coerce(self, value: object) -> float | None:
        """``value`` as a finite float, None to skip it (NaN), or an error naming the column."""
        number: float | None = None
        if not isinstance(value, str | bytes | bytearray):  # float() would parse those
            try:
                number = float(value)  # type: ignore[arg-type]
            except OverflowError:
                number = math.inf  # an int beyond float64
            except (TypeError, ValueError):
                number = None
        if number is not None and number - number == 0:
            return number
        if number is not None and number != number:  # NaN: how pandas spells a missing value
            return None
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        where = f"aggregation {self.name!r}: column {self.column!r} holds {text}"
        if number is None:
            msg = (
                f"{where} ({type(value).__name__}), not a number; aggregations take int or "
                "float values (None and NaN are skipped)"
            )
        else:
            msg = f"{where}; aggregations take finite numbers (None and NaN are skipped)"
        raise AggregationValueError(msg)


class Aggregator:
    """Applies a fixed list of aggregations to per-key states.

    ``state = aggregator.new_state()``; ``aggregator.add(state, body, time)`` per event;
    ``aggregator.features(state, time)`` for the values. Times are float epoch seconds. A state
    holds its aggregations by position: use states from ``new_state`` or ``restore`` (a state
    from ``state_from_dict`` holds the aggregations saved, in the order saved).
    """

    __slots__ = ("_names", "_periods_ms", "_plans", "aggregations", "feature_names")

    def __init__(self, aggregations: Sequence[Aggregation]) -> None:
        if not aggregations:
            msg = "an aggregator needs at least one aggregation"
            raise AggregationError(msg)
        names = [a.name for a in aggregations]
        for name in names:
            if names.count(name) > 1:
                msg = f"aggregation {name!r} is defined twice"
                raise AggregationError(msg)
        # Distinct names make distinct features: neither operations nor windows contain "_".
        features = [f for a in aggregations for f in a.feature_names]
        self.aggregations = tuple(aggregations)
        self.feature_names = tuple(features)
        self._names = tuple(names)
        self._periods_ms = tuple(a.plan.period_ms for a in aggregations)
        self._plans = tuple(_Plan(a) for a in aggregations)

    def new_state(self) -> AggregationState:
        """An empty state for one key."""
        return AggregationState(self._names, self._periods_ms, [Buckets() for _ in self._plans])

    def add(self, state: AggregationState, values: Mapping[str, Any], time: float) -> bool:
        """Add one event (``values``: the event body, read by column) at ``time`` (epoch s).

        Returns False when the event was too old for at least one aggregation (it is ignored
        there and counted in ``state.ignored``), True otherwise.
        """
        if state.names is not self._names:
            self._check(state)
        ignored = False
        for plan, s in zip(self._plans, state.series, strict=True):
            value = values.get(plan.column)
            if value is None:
                continue
            # A finite float goes straight on; anything else (ints too: the columns are float64)
            # is converted or refused before the state is touched.
            if value.__class__ is not float or value - value != 0:
                value = plan.coerce(value)
                if value is None:
                    continue
            b = _floor(time / plan.period)
            index = s.index
            n = len(index)
            if n == 0 or b > index[n - 1]:
                # A new newest bucket: drop what no window can see any more, then append.
                if n:
                    cutoff = b - plan.keep if plan.fixed_sizes is None else plan.cutoff(b)
                    if index[0] < cutoff:
                        s.drop_before(cutoff)
                else:
                    s.shift = value  # no total holds shifted values: anchor K here
                index.append(b)
                s.min.append(value)
                s.max.append(value)
                s.first_time.append(time)
                s.first.append(value)
                s.last_time.append(time)
                s.last.append(value)
                d = value - s.shift
                run_count = s.run_count
                run_count.append(run_count[-1] + 1)
                run = s.run_sum
                run.append(run[-1] + value)
                run = s.run_sqr
                run.append(run[-1] + value * value)
                run = s.run_shifted
                run.append(run[-1] + d)
                run = s.run_shifted_sqr
                run.append(run[-1] + d * d)
                continue
            j = n - 1
            if index[j] == b:  # the newest bucket: its running totals are the last entries
                d = value - s.shift
                s.run_count[n] += 1
                s.run_sum[n] += value
                s.run_sqr[n] += value * value
                s.run_shifted[n] += d
                s.run_shifted_sqr[n] += d * d
            else:
                newest = index[j]
                if b < (newest - plan.keep if plan.fixed_sizes is None else plan.cutoff(newest)):
                    ignored = True
                    continue
                j = bisect_left(index, b)
                if index[j] != b:
                    index.insert(j, b)
                    s.min.insert(j, value)
                    s.max.insert(j, value)
                    s.first_time.insert(j, time)
                    s.first.insert(j, value)
                    s.last_time.insert(j, time)
                    s.last.insert(j, value)
                    for column in s.running():
                        column.insert(j + 1, column[j])
                    s.add_to_totals(j + 1, value)
                    continue
                s.add_to_totals(j + 1, value)
            low = s.min
            if value < low[j]:
                low[j] = value
            else:
                high = s.max
                if value > high[j]:
                    high[j] = value
            first_time = s.first_time
            if time < first_time[j]:
                first_time[j] = time
                s.first[j] = value
            last_time = s.last_time
            if time >= last_time[j]:
                last_time[j] = time
                s.last[j] = value
        if ignored:
            state.ignored += 1
            return False
        return True

    def features(
        self, state: AggregationState, time: float, into: Features | None = None
    ) -> Features:
        """Every feature's value at ``time``; written into ``into`` (and returned) if given."""
        if state.names is not self._names:
            self._check(state)
        out: Features = {} if into is None else into
        for plan, s in zip(self._plans, state.series, strict=True):
            index = s.index
            n = len(index)
            if n == 0:
                out.update(plan.empty)
                continue
            oldest = index[0]
            newest = index[-1]
            t = _floor(time / plan.period)
            sizes = plan.fixed_sizes
            run_count = s.run_count
            for (
                size,
                n_count,
                n_sum,
                n_avg,
                n_min,
                n_max,
                n_first,
                n_last,
                n_sqr,
                n_stdvar,
                n_stddev,
                empty,
            ) in plan.windows:
                if sizes is None:
                    hi_b = t
                    lo_b = t - size + 1
                else:
                    lo_b = t // size * size
                    hi_b = lo_b + size - 1
                # Every bucket present is at or after the retention cutoff, so the window's
                # own bounds are all that matter. Buckets lo to hi-1 are in the window.
                lo = 0 if oldest >= lo_b else bisect_left(index, lo_b)
                hi = n if newest <= hi_b else bisect_right(index, hi_b, lo)
                if lo >= hi:
                    out.update(empty)
                    continue
                count = run_count[hi] - run_count[lo]
                if n_count:
                    out[n_count] = count
                if n_sum or n_avg:
                    total = s.run_sum[hi] - s.run_sum[lo]
                    if n_sum:
                        out[n_sum] = total
                    if n_avg:
                        out[n_avg] = total / count
                if n_min:
                    out[n_min] = min(s.min[lo:hi])
                if n_max:
                    out[n_max] = max(s.max[lo:hi])
                if n_first:
                    out[n_first] = s.first[lo]
                if n_last:
                    out[n_last] = s.last[hi - 1]
                if n_sqr:
                    out[n_sqr] = s.run_sqr[hi] - s.run_sqr[lo]
                if n_stdvar or n_stddev:
                    variance: float | None = None
                    if count > 1:
                        shifted = s.run_shifted[hi] - s.run_shifted[lo]
                        squares = s.run_shifted_sqr[hi] - s.run_shifted_sqr[lo]
                        spread = count * squares - shifted * shifted
                        variance = spread / (count * (count - 1)) if spread > 0 else 0.0
                    if n_stdvar:
                        out[n_stdvar] = variance
                    if n_stddev:
                        out[n_stddev] = None if variance is None else math.sqrt(variance)
        return out

    def _check(self, state: AggregationState) -> None:
        if state.names != self._names or state.periods_ms != self._periods_ms:
            msg = (
                f"this state holds the aggregations {list(state.names)} (periods in ms "
                f"{list(state.periods_ms)}), the aggregator {list(self._names)} (periods "
                f"{list(self._periods_ms)}): read saved states with Aggregator.restore"
            )
            raise AggregationValueError(msg)

    def restore(self, data: Mapping[str, Any]) -> AggregationState:
        """A state read by ``state_from_dict`` and fitted to this aggregator.

        Aggregations are matched by name: one saved with a different period starts empty (its
        buckets cannot be re-cut), one not saved starts empty, one no longer configured is
        dropped; buckets the current windows no longer keep are dropped.
        """
        saved = state_from_dict(data)
        by_name = dict(
            zip(saved.names, zip(saved.periods_ms, saved.series, strict=True), strict=True)
        )
        series: list[Buckets] = []
        for name, period_ms, plan in zip(self._names, self._periods_ms, self._plans, strict=True):
            found = by_name.get(name)
            buckets = found[1] if found is not None and found[0] == period_ms else Buckets()
            if buckets.index:
                buckets.drop_before(plan.cutoff(buckets.index[-1]))
            series.append(buckets)
        return AggregationState(self._names, self._periods_ms, series, saved.ignored)


def state_to_dict(state: AggregationState) -> dict[str, Any]:
    """``state`` as a JSON-compatible dict (lists copied: later events do not change it)."""
    return {
        "format": STATE_FORMAT,
        "ignored": state.ignored,
        "aggregations": {
            name: {
                "period_ms": period_ms,
                "shift": s.shift,
                **{
                    column: values.tolist()
                    for column, values in zip(_COLUMNS, s.columns(), strict=True)
                },
            }
            for name, period_ms, s in zip(state.names, state.periods_ms, state.series, strict=True)
        },
    }


def state_from_dict(data: Mapping[str, Any]) -> AggregationState:
    """The state ``state_to_dict`` wrote, exactly (use ``Aggregator.restore`` to fit it to an
    aggregator whose configuration may have changed since)."""
    if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        msg = (
            f"aggregation state is not in format {STATE_FORMAT} (found {found!r}): "
            "it was not written by state_to_dict of this version"
        )
        raise AggregationValueError(msg)
    aggregations = data.get("aggregations")
    ignored = data.get("ignored")
    if not isinstance(aggregations, Mapping) or not isinstance(ignored, int):
        msg = "aggregation state needs 'aggregations' (a mapping) and 'ignored' (an int)"
        raise AggregationValueError(msg)
    names: list[str] = []
    periods: list[int] = []
    series: list[Buckets] = []
    for name, saved in aggregations.items():
        buckets = Buckets()
        try:
            period_ms = saved["period_ms"]
            buckets.shift = saved["shift"]
            columns = [array(_TYPECODES[column], saved[column]) for column in _COLUMNS]
        except KeyError as error:
            msg = (
                f"aggregation state of {name!r} lacks {error}: it needs 'period_ms', 'shift' "
                f"and the columns {', '.join(_COLUMNS)}"
            )
            raise AggregationValueError(msg) from None
        except (TypeError, OverflowError) as error:
            msg = f"aggregation state of {name!r} holds a value of the wrong type: {error}"
            raise AggregationValueError(msg) from None
        size = len(columns[0])
        if any(
            len(values) != (size + 1 if column in _RUNNING_COLUMNS else size)
            for column, values in zip(_COLUMNS, columns, strict=True)
        ):
            msg = (
                f"aggregation state of {name!r} has columns of the wrong lengths: the running "
                "totals need one entry more than the buckets"
            )
            raise AggregationValueError(msg)
        for column, values in zip(_COLUMNS, columns, strict=True):
            setattr(buckets, column, values)
        names.append(name)
        periods.append(period_ms)
        series.append(buckets)
    return AggregationState(tuple(names), tuple(periods), series, ignored)
