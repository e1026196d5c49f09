"""One event in, at most one event out: map, filter, extend, sample.

Each runs its function on the event body (see ``steps.functions`` for what ``fn`` may be).
``Map`` costs nothing over the function itself: the engine calls the function directly.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from ..context import Context
from ..errors import GraphError, Problem
from .base import BuiltinStep
from .functions import StepFunction, as_function


class Map(BuiltinStep):
    """Replace the body with ``fn(body)``.

    Example:
        >>> Map("event * 2").do(21)
        42
    """

    default_name = "map"

    def __init__(
        self, fn: StepFunction, *, name: str | None = None, context: Context | None = None
    ) -> None:
        self.arguments = {"fn": fn}
        self.fn = as_function(fn, step=name, argument="fn")
        # The function itself is the step's call (it shadows the method): no wrapper per event.
        self.do = self.fn  # type: ignore[method-assign]

    def do(self, body: Any) -> Any:
        return self.fn(body)


class Filter(BuiltinStep):
    """Pass on the events for which ``fn(body)`` is true; stop the others.

    Example:
        >>> keep = Filter("event > 0")
        >>> keep.do(3), keep.do(-1)
        (3, None)
    """

    default_name = "filter"
    stops_on_none: ClassVar[bool] = True
    """A filter stops events even in graphs that pass None on (MLRun's ``stop_on_none=False``)."""

    def __init__(
        self, fn: StepFunction, *, name: str | None = None, context: Context | None = None
    ) -> None:
        self.arguments = {"fn": fn}
        self.fn = as_function(fn, step=name, argument="fn")

    def do(self, body: Any) -> Any:
        return body if self.fn(body) else None


class Extend(BuiltinStep):
    """Add the fields of the mapping ``fn(body)`` to the body (a dict), replacing same-named ones.

    Example:
        >>> Extend("{'total': event['a'] + event['b']}").do({"a": 1, "b": 2})
        {'a': 1, 'b': 2, 'total': 3}
    """

    default_name = "extend"

    def __init__(
        self, fn: StepFunction, *, name: str | None = None, context: Context | None = None
    ) -> None:
        self.arguments = {"fn": fn}
        self.fn = as_function(fn, step=name, argument="fn")
        self.name = name or self.default_name

    def do(self, body: Any) -> Any:
        fields = self.fn(body)
        try:
            body.update(fields)
        except (AttributeError, TypeError, ValueError) as exc:
            message = (
                f"extend step {self.name!r} adds fields to a dict body: got a "
                f"{type(body).__name__} body and {type(fields).__name__} fields ({exc})"
            )
            raise TypeError(message) from exc
        return body


class Sample(BuiltinStep):
    """Keep every ``every``-th event (the first, then every n-th), or each event with
    probability ``rate`` (``seed`` makes the choice repeatable); stop the others.

    Example:
        >>> sample = Sample(every=2)
        >>> [sample.do(n) for n in range(5)]
        [0, None, 2, None, 4]
    """

    default_name = "sample"
    stops_on_none: ClassVar[bool] = True

    def __init__(
        self,
        every: int | None = None,
        rate: float | None = None,
        seed: int | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {"every": every, "rate": rate, "seed": seed}
        if (every is None) == (rate is None):
            message = "sample takes either every=N (every N-th event) or rate=R (0 < R <= 1)"
            raise GraphError([Problem(name, message)])
        if every is not None and (not isinstance(every, int) or every < 1):
            message = f"sample: every must be a positive integer, not {every!r}"
            raise GraphError([Problem(name, message)])
        if rate is not None and not 0 < rate <= 1:
            message = f"sample: rate must be in (0, 1], not {rate!r}"
            raise GraphError([Problem(name, message)])
        self.every = every or 0
        self.rate = rate or 0.0
        self.seen = 0
        self.random = random.Random(seed)

    def do(self, body: Any) -> Any:
        if self.every:
            keep = self.seen % self.every == 0
            self.seen += 1
            return body if keep else None
        return body if self.random.random() < self.rate else None
