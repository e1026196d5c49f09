"""Module-level steps that tests refer to by import path."""

from __future__ import annotations

import asyncio
from typing import Any

from servegraph import Context, Event

CLOSED: list[str] = []


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


async def async_inc(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def boom(x: Any) -> Any:
    message = f"boom on {x!r}"
    raise ValueError(message)


def catch(event: Event) -> dict[str, Any]:
    assert event.error is not None
    return {"caught": event.error.step, "cause": str(event.error.cause), "body": event.body}


class Multiply:
    """A plain class step with its own constructor arguments."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def do(self, x: int) -> int:
        return x * self.factor


class MLRunStyle:
    """The constructor signature MLRun user classes have."""

    def __init__(self, context: Any = None, name: str | None = None, **kwargs: Any) -> None:
        self.context = context
        self.name = name
        self.kwargs = kwargs
        self.initialised = False

    def post_init(self, mode: str = "sync") -> None:
        self.initialised = True

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.context, Context)
        return {
            **body,
            "step": self.name,
            "kwargs": self.kwargs,
            "initialised": self.initialised,
            "param": self.context.get_param("p", "unset"),
        }


class EventStep:
    """A class whose do_event gets the whole event."""

    def do_event(self, event: Event) -> Event:
        event.body = {"path": event.path, "method": event.method, "body": event.body}
        return event


class Closable:
    """Records that its close hook ran."""

    def __init__(self, label: str = "closable") -> None:
        self.label = label

    def do(self, x: Any) -> Any:
        return x

    def close(self) -> None:
        CLOSED.append(self.label)


class Broken:
    """A constructor that fails."""

    def __init__(self) -> None:
        message = "cannot start"
        raise RuntimeError(message)

    def do(self, x: Any) -> Any:  # pragma: no cover - never constructed
        return x


class NoDo:
    """A class with no step method."""

    def run(self, x: Any) -> Any:
        return x


class AsyncDouble:
    """A class with an async do."""

    async def do(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 2
