"""Durations and aggregation windows: parsing, validation and the bucket period.

Windows are spelled as storey and MLRun spell them: a whole number and a unit, e.g. ``"10m"``,
``"1h"``, ``"7d"`` (units ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``), or a compound from the
largest unit to the smallest, e.g. ``"1h30m"``. Everything is checked once, when an aggregation
is built, and kept as whole milliseconds so that "is this window a multiple of the period" is an
exact integer question; the engine then works in float epoch seconds.

The default period (the bucket size) when none is given:

- sliding windows: the greatest common divisor of the windows divided by 10 (storey divides by
  10 too), e.g. 6m for ``["1h", "6h", "24h"]``; the gcd itself when a tenth of it is not a whole
  number of milliseconds;
- fixed (tumbling) windows: the gcd of the windows, since a fixed window only needs buckets that
  tile it exactly, e.g. 1h for ``["1h", "24h"]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from servegraph.errors import GraphError

WindowKind = Literal["sliding", "fixed"]

KINDS: tuple[WindowKind, ...] = ("sliding", "fixed")
"""The window kinds: sliding (the last W ending now) and fixed (epoch-aligned tumbling)."""

UNITS_MS: dict[str, int] = {
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
"""Milliseconds per unit, largest first (the order a compound duration must follow)."""

DEFAULT_SLIDING_BUCKETS = 10
"""A sliding aggregation's default period is the gcd of its windows divided by this."""

_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w))+")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_HOW = "use a number and a unit (ms, s, m, h, d, w), e.g. '10m' or '1h'"


class WindowError(GraphError, ValueError):
    """A duration, window or period that does not parse or does not fit the others."""


def parse_duration_ms(text: object, *, what: str = "window") -> int:
    """``text`` as whole milliseconds; ``what`` names the value in the error message."""
    if not isinstance(text, str):
        msg = f"{what} {text!r} is not a string: {_HOW}"
        raise WindowError(msg)
    if _DURATION.fullmatch(text) is None:
        msg = f"{what} {text!r} does not parse: {_HOW}"
        raise WindowError(msg)
    total = 0
    previous = math.inf
    for number, unit in _PART.findall(text):
        size = UNITS_MS[unit]
        if size >= previous:
            msg = (
                f"{what} {text!r} does not parse: a compound duration goes from the largest "
                "unit to the smallest, each unit once, e.g. '1h30m'"
            )
            raise WindowError(msg)
        previous = size
        total += int(number) * size
    if total == 0:
        msg = f"{what} {text!r} is zero: it must be longer than 0, e.g. '10m'"
        raise WindowError(msg)
    return total


def parse_duration(text: object, *, what: str = "window") -> float:
    """``text`` (e.g. ``"10m"``, ``"1h30m"``, ``"250ms"``) as float seconds."""
    return parse_duration_ms(text, what=what) / 1000


def format_duration(ms: int) -> str:
    """Whole milliseconds spelled the way ``parse_duration_ms`` reads them, e.g. ``"1h30m"``."""
    if ms <= 0:
        msg = f"a duration must be longer than 0 ms, got {ms}"
        raise ValueError(msg)
    parts = []
    for unit, size in UNITS_MS.items():
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Window:
    """One window: its spelling as given (it names the features) and its size in buckets."""

    spelling: str
    ms: int
    buckets: int


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """An aggregation's validated windows (in the order given) and bucket period."""

    kind: WindowKind
    period_ms: int
    windows: tuple[Window, ...]

    @property
    def period(self) -> float:
        """The bucket period in seconds."""
        return self.period_ms / 1000

    @property
    def longest(self) -> int:
        """The longest window, in buckets."""
        return max(window.buckets for window in self.windows)


def plan_windows(
    windows: Sequence[str],
    period: str | None = None,
    kind: str = "sliding",
    *,
    owner: str = "aggregation",
) -> WindowPlan:
    """Validate ``windows`` (and ``period``, ``kind``) and choose the bucket period.

    ``owner`` (e.g. ``"aggregation 'amount'"``) starts every error message.
    """
    if kind not in KINDS:
        msg = f"{owner}: unknown window kind {kind!r}; use 'sliding' or 'fixed'"
        raise WindowError(msg)
    if isinstance(windows, str) or not windows:
        msg = f"{owner}: windows must be a non-empty list of durations, e.g. ['1h']"
        raise WindowError(msg)
    sizes: list[int] = []
    seen: set[str] = set()
    for text in windows:
        sizes.append(parse_duration_ms(text, what=f"{owner}: window"))
        if text in seen:
            msg = f"{owner}: window {text!r} is given twice"
            raise WindowError(msg)
        seen.add(text)
    gcd = math.gcd(*sizes)
    if period is None:
        period_ms = gcd
        if kind == "sliding" and gcd % DEFAULT_SLIDING_BUCKETS == 0:
            period_ms = gcd // DEFAULT_SLIDING_BUCKETS
    else:
        period_ms = parse_duration_ms(period, what=f"{owner}: period")
        for text, size in zip(windows, sizes, strict=True):
            if size % period_ms:
                msg = (
                    f"{owner}: window {text!r} is not a multiple of the period {period!r}: "
                    "every window must be a whole number of periods; use a period that "
                    f"divides every window, e.g. {format_duration(math.gcd(gcd, period_ms))!r}"
                )
                raise WindowError(msg)
    plan = tuple(
        Window(text, size, size // period_ms) for text, size in zip(windows, sizes, strict=True)
    )
    return WindowPlan("sliding" if kind == "sliding" else "fixed", period_ms, plan)
