"""Prometheus metrics of a graph: per step, and the custom metrics of user code.

Per step: events in, events out (a step that returns None stops the event: in minus out is what
it stopped), errors, and a latency histogram. The counts are exact; the latency of one event in
``LATENCY_SAMPLE`` is measured (two clock reads and a bucket search per step per event cost more
than a short step itself; a sampled histogram keeps the shape and the mean).

Why no client library on the hot path: a ``prometheus_client`` counter takes a lock per
``inc`` (and writes an mmap'd file in its multiprocess mode), which would cost a short step more
than the step. Here a step's counters are plain integers of one object, incremented by a wrapper
compiled into the plan only when metrics are on; they are turned into the Prometheus text format
(version 0.0.4) when ``/metrics`` is read.

Custom metrics: ``context.metrics.counter(name)``, ``.gauge(name)`` and ``.histogram(name)`` in a
step's constructor return metrics labelled with the step's name (the context a step gets is its
own view).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

LATENCY_SAMPLE = 16
"""One event in this many has its latency measured, per step (a power of two)."""
_SAMPLE_MASK = LATENCY_SAMPLE - 1

LATENCY_BUCKETS = (
    0.00001,
    0.00005,
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)
"""Upper bounds, in seconds, of the step latency histogram (``+Inf`` is implied)."""

_perf_counter = time.perf_counter


class Histogram:
    """Observations counted in buckets, with their sum (Prometheus' histogram)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.counts)


class StepMetrics:
    """The counters of one step. Events out are counted as events in minus the ones that
    stopped or failed (one increment fewer per event on the common path)."""

    __slots__ = ("errors", "events_in", "latency", "step", "stopped")

    def __init__(self, step: str) -> None:
        self.step = step
        self.events_in = 0
        self.stopped = 0
        self.errors = 0
        self.latency = Histogram()

    @property
    def events_out(self) -> int:
        """Events the step passed on."""
        return self.events_in - self.stopped - self.errors


def metered(stats: StepMetrics, call: Callable[[Any], Any], is_async: bool) -> Callable[[Any], Any]:
    """``call`` counting into ``stats`` (see the module doc)."""
    latency = stats.latency
    if is_async:
        awaitable: Callable[[Any], Awaitable[Any]] = call

        async def metered_async(argument: Any) -> Any:
            n = stats.events_in = stats.events_in + 1
            started = 0.0 if n & _SAMPLE_MASK else _perf_counter()
            try:
                result = await awaitable(argument)
            except BaseException:
                stats.errors += 1
                raise
            if started:
                latency.observe(_perf_counter() - started)
            if result is None:
                stats.stopped += 1
            return result

        return metered_async

    def metered_sync(argument: Any) -> Any:
        n = stats.events_in = stats.events_in + 1
        if n & _SAMPLE_MASK:
            try:
                result = call(argument)
            except BaseException:
                stats.errors += 1
                raise
            if result is None:
                stats.stopped += 1
            return result
        started = _perf_counter()
        try:
            result = call(argument)
        except BaseException:
            stats.errors += 1
            raise
        latency.observe(_perf_counter() - started)
        if result is None:
            stats.stopped += 1
        return result

    return metered_sync


class Counter:
    """A custom counter of one step."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Count ``amount`` more (never negative: a counter only goes up)."""
        if amount < 0:
            message = f"a counter only goes up; inc({amount}) is negative"
            raise ValueError(message)
        self.value += amount


class Gauge:
    """A custom gauge of one step."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        """Set the gauge."""
        self.value = value

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        self.value += amount


class Metrics:
    """The metrics of one graph in one process: step counters and custom metrics.

    ``step`` is set on the view each step's context gets (``for_step``), so that custom metrics
    carry the step's label.
    """

    enabled = True

    def __init__(self) -> None:
        self.steps: dict[str, StepMetrics] = {}
        self.custom: dict[tuple[str, str], tuple[str, str, Any]] = {}
        """(name, step) -> (kind, description, metric)."""
        self.step: str | None = None
        self._shared: Metrics = self

    def for_step(self, step: str) -> Metrics:
        """This registry as seen by ``step`` (custom metrics get its label)."""
        view = Metrics.__new__(Metrics)
        view.steps = self.steps
        view.custom = self.custom
        view.step = step
        view._shared = self._shared
        return view

    def step_metrics(self, step: str) -> StepMetrics:
        """The counters of ``step`` (created on first use)."""
        stats = self.steps.get(step)
        if stats is None:
            stats = self.steps[step] = StepMetrics(step)
        return stats

    def counter(self, name: str, description: str = "") -> Counter:
        """A counter named ``name`` for this step."""
        metric: Counter = self._custom(name, "counter", description, Counter)
        return metric

    def gauge(self, name: str, description: str = "") -> Gauge:
        """A gauge named ``name`` for this step."""
        metric: Gauge = self._custom(name, "gauge", description, Gauge)
        return metric

    def histogram(
        self, name: str, description: str = "", buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        """A histogram named ``name`` for this step."""
        metric: Histogram = self._custom(name, "histogram", description, lambda: Histogram(buckets))
        return metric

    def _custom(self, name: str, kind: str, description: str, make: Callable[[], Any]) -> Any:
        _check_name(name)
        found = self.custom.get((name, self.step or ""))
        if found is not None:
            if found[0] != kind:
                message = f"metric {name!r} is a {found[0]}, not a {kind}"
                raise ValueError(message)
            return found[2]
        clash = next((k for (n, _), (k, _, _) in self.custom.items() if n == name), kind)
        if clash != kind:
            message = f"metric {name!r} is a {clash} in another step, not a {kind}"
            raise ValueError(message)
        metric = make()
        self.custom[(name, self.step or "")] = (kind, description, metric)
        return metric

    def render(self, extra: Iterable[str] = ()) -> bytes:
        """Every metric in the Prometheus text format (0.0.4), with ``extra`` lines first."""
        lines = list(extra)
        steps = sorted(self.steps.values(), key=lambda stats: stats.step)
        for name, help_text, attribute in _STEP_COUNTERS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            lines.extend(
                f'{name}{{step="{_escape(s.step)}"}} {getattr(s, attribute)}' for s in steps
            )
        name = "servegraph_step_latency_seconds"
        lines.append(f"# HELP {name} Time in a step (one event in {LATENCY_SAMPLE} is measured).")
        lines.append(f"# TYPE {name} histogram")
        for stats in steps:
            lines.extend(_histogram(name, f'step="{_escape(stats.step)}"', stats.latency))
        by_name: dict[str, list[tuple[str, str, str, Any]]] = {}
        for (metric, step), (kind, description, value) in sorted(self.custom.items()):
            by_name.setdefault(metric, []).append((step, kind, description, value))
        for metric, entries in by_name.items():
            kind, description = entries[0][1], entries[0][2]
            lines.append(f"# HELP {metric} {_escape_help(description or metric)}")
            lines.append(f"# TYPE {metric} {kind}")
            for step, _, _, value in entries:
                label = f'step="{_escape(step)}"'
                if kind == "histogram":
                    lines.extend(_histogram(metric, label, value))
                else:
                    lines.append(f"{metric}{{{label}}} {_number(value.value)}")
        return ("\n".join(lines) + "\n").encode()


_STEP_COUNTERS = (
    ("servegraph_step_events_total", "Events that entered a step.", "events_in"),
    ("servegraph_step_events_out_total", "Events a step passed on.", "events_out"),
    ("servegraph_step_errors_total", "Events a step raised on.", "errors"),
)


def _histogram(name: str, label: str, histogram: Histogram) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip((*histogram.bounds, math.inf), histogram.counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == math.inf else repr(float(bound))
        lines.append(f'{name}_bucket{{{label},le="{le}"}} {cumulative}')
    lines.append(f"{name}_sum{{{label}}} {_number(histogram.sum)}")
    lines.append(f"{name}_count{{{label}}} {cumulative}")
    return lines


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _check_name(name: str) -> None:
    if (
        not name
        or not (name[0].isalpha() or name[0] in "_:")
        or not all(c.isalnum() or c in "_:" for c in name)
    ):
        message = (
            f"metric name {name!r} is not a Prometheus name: letters, digits, '_' and ':', "
            "not starting with a digit"
        )
        raise ValueError(message)
