"""What built-in steps accept where they run user logic: a callable, an import path or an
expression string.

- a callable (``lambda body: body * 2``, a function) is used as it is (Python API; a spec holding
  a lambda cannot be saved, name a module-level function instead);
- ``"pkg.module:function"`` is imported (specs);
- any other string is a safe expression over the event body, bound to the name ``event``
  (``"event['amount'] > 100"``), compiled once when the graph is built (``servegraph.expressions``:
  no ``eval``, unsupported syntax is refused with the step's name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import GraphError, Problem
from ..expressions import compile_expression
from ..graph.resolve import ResolveError, resolve

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

StepFunction = Callable[..., Any] | str
"""A callable, an import path (``"pkg.mod:name"``) or an expression over ``event``."""


def as_function(
    fn: object, *, step: str | None, argument: str, names: tuple[str, ...] = ("event",)
) -> Callable[..., Any]:
    """The callable behind ``fn`` (see the module doc); expressions bind ``names`` in order.

    Raises:
        GraphError: ``fn`` is neither callable nor a string, names nothing importable, or is
            an expression with unsupported syntax; the message names the step and argument.
    """
    if callable(fn):
        return fn
    if not isinstance(fn, str):
        message = (
            f"{argument} must be a callable, an import path ('pkg.module:function') or an "
            f"expression string such as \"event['x'] > 0\", not {type(fn).__name__}"
        )
        raise GraphError([Problem(step, message)])
    if _IMPORT_PATH.fullmatch(fn):
        try:
            target = resolve(fn)
        except ResolveError as exc:
            raise GraphError([Problem(step, f"{argument}: {exc}")]) from exc
        if not callable(target):
            message = f"{argument}: {fn!r} names a {type(target).__name__}, not a function"
            raise GraphError([Problem(step, message)])
        return target  # type: ignore[no-any-return]
    try:
        expression = compile_expression(fn, names=names)
    except GraphError as exc:
        reasons = "; ".join(problem.message for problem in exc.problems)
        raise GraphError([Problem(step, f"{argument}: {reasons}")]) from exc
    evaluate = expression._evaluate  # the checked closure: no arity check per event
    if len(names) == 1:
        return lambda value: evaluate((value,))
    return lambda *values: evaluate(values)
