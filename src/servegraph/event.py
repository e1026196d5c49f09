"""Event: what flows through a graph. Pure data, no I/O."""

from __future__ import annotations

import copy
import itertools
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import StepError

EVENT_ID_HEADER = "servegraph-event-id"
"""The request header that sets an event's id (and the response header that reports it)."""


@dataclass(frozen=True, slots=True)
class Response:
    """An answer with a status: what servers send, and what a step may return to set one.

    ``body`` is JSON-able data, text or bytes; ``headers`` are extra response headers.
    """

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


class _Ids:
    """Event ids: a random 96-bit prefix per process and a counter (a uuid4 costs ~2 µs)."""

    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = uuid.uuid4().hex[:24]
        self.counter = itertools.count()


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reseed)  # a forked worker must not repeat its parent's


def new_id() -> str:
    """A new event id, unique across processes: 32 hex digits, like a uuid4's."""
    return f"{_ids.prefix}{next(_ids.counter):08x}"


class Event:
    """One event travelling through a graph.

    Steps get ``event.body`` by default and the whole event with ``full_event=True``.
    ``id`` and ``time`` are created on first read, so events that never need them cost nothing.

    Example:
        >>> event = Event({"x": 1}, path="/predict")
        >>> event.body, event.method, event.path
        ({'x': 1}, 'POST', '/predict')
    """

    __slots__ = (
        "_id",
        "_time",
        "body",
        "content_type",
        "error",
        "headers",
        "key",
        "method",
        "path",
        "query",
        "trigger",
    )

    def __init__(
        self,
        body: Any = None,
        *,
        id: str | None = None,  # noqa: A002 - the field is called id everywhere users look
        key: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        path: str = "/",
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
        time: datetime | None = None,
        trigger: str = "mock",
    ) -> None:
        self.body = body
        self._id = id
        self.key = key
        self.headers = headers if headers is not None else {}
        self.method = method
        self.path = path
        self.query = query if query is not None else {}
        self.content_type = content_type
        self._time = time
        self.trigger = trigger
        self.error: StepError | None = None

    @property
    def id(self) -> str:
        """The event id, kept across hops so that sinks can de-duplicate."""
        if self._id is None:
            self._id = new_id()
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    @property
    def time(self) -> datetime:
        """When the event entered the graph (UTC)."""
        if self._time is None:
            self._time = datetime.now(UTC)
        return self._time

    @time.setter
    def time(self, value: datetime) -> None:
        self._time = value

    def branch(self) -> Event:
        """Return a copy for another branch of a fan-out: same metadata, a deep copy of the body."""
        self.id  # noqa: B018 - fix the id first, so that every branch carries the same one
        twin = copy.copy(self)
        twin.body = copy.deepcopy(self.body)
        return twin

    def __repr__(self) -> str:
        return f"Event(id={self._id!r}, path={self.path!r}, body={self.body!r})"
