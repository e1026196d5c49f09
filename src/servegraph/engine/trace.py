"""Verbose mode: per-step log lines, wrapped around calls at compile time (never per event)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..event import Event

logger = logging.getLogger("servegraph.engine")


def traced(name: str, call: Callable[[Any], Any], takes_body: bool, is_async: bool) -> Any:
    """Return ``call`` wrapped to log what the step ``name`` got and gave, at DEBUG level."""

    def show(value: Any) -> Any:
        return value.body if isinstance(value, Event) else value

    if is_async:
        awaitable: Callable[[Any], Awaitable[Any]] = call

        async def traced_async(argument: Any) -> Any:
            result = await awaitable(argument)
            _log(name, show(argument), show(result), takes_body)
            return result

        return traced_async

    def traced_sync(argument: Any) -> Any:
        result = call(argument)
        _log(name, show(argument), show(result), takes_body)
        return result

    return traced_sync


def _log(name: str, received: Any, returned: Any, takes_body: bool) -> None:
    logger.debug(
        "step %s: %r -> %r",
        name,
        received,
        returned,
        extra={"step": name, "takes_body": takes_body},
    )
