"""Module-level steps that the spec files of the CLI tests refer to by import path."""

from __future__ import annotations

import asyncio
from typing import Any

from servegraph import Event


def inc(x: int) -> int:
    return x + 1


async def async_inc(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def fail(x: Any) -> Any:
    message = f"cannot handle {x!r}"
    raise ValueError(message)


def describe(event: Event) -> dict[str, Any]:
    return {"path": event.path, "method": event.method, "headers": dict(event.headers)}


def as_set(x: list[int]) -> set[int]:
    return set(x)
