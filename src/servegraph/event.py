"""Event: what flows through a graph. Pure data, no I/O."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import StepError


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
            self._id = uuid.uuid4().hex
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
