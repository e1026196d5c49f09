"""The in-process table: a dict, for tests, the mock server and state that may be lost.

``memory://`` makes a table private to the object ``open_table`` returns (two steps with
``memory://`` do not see each other's keys); ``memory://name`` is the process's store of that
name, shared by every table opened on it (a step writing to ``memory://users`` and another
reading from it see the same rows). A named store lives as long as the process; closing a table
does not clear it. Nothing survives the process: use SQLite for state that must.

Speed: ``get`` is a dict lookup, plus a float comparison when the store holds keys with a TTL.
Values are neither encoded nor copied: ``get`` returns the stored dict itself and ``set`` keeps
the dict it is given (a non-dict mapping is copied into one), so callers must not mutate either
(``update`` builds a new dict, so a value read earlier never changes under its reader). Values
are not checked to be JSON-compatible here, as the other backends do by encoding them.

TTL: a key's deadline is on the monotonic clock. An expired key is dropped when it is read, and
writes with a TTL purge up to :data:`PURGE_BATCH` expired keys (a heap of deadlines), so expired
keys that are never read do not pile up. Use a table from one thread (its event loop's).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .tables import DEFAULT_NAME, Row, TableBase, TableURL

__all__ = ["PURGE_BATCH", "MemoryTable"]

PURGE_BATCH = 100
"""The most expired keys one write purges."""

_monotonic = time.monotonic


class _Store:
    """The rows of a memory table, and the deadlines of those that expire."""

    __slots__ = ("deadlines", "heap", "values")

    def __init__(self) -> None:
        self.values: dict[str, Row] = {}
        self.deadlines: dict[str, float] = {}
        self.heap: list[tuple[float, str]] = []
        """(deadline, key), possibly stale (the key got another deadline or none since)."""


_SHARED: dict[str, _Store] = {}
"""The named stores of the process (``memory://name``)."""


class MemoryTable(TableBase):
    """A table in a dict of this process (see the module docstring).

    Args:
        name: the store's name: tables opened with the same name share it; None: a private
            store (the table's ``name`` is then ``"state"``).
        ttl_s: the default time to live of written keys, in seconds (None: they never expire).
    """

    def __init__(self, name: str | None = None, *, ttl_s: float | None = None) -> None:
        super().__init__(name=name or DEFAULT_NAME, url=f"memory://{name or ''}", ttl_s=ttl_s)
        if name is None:
            store = _Store()
        else:
            store = _SHARED.get(name) or _SHARED.setdefault(name, _Store())  # one per name
        self._values = store.values
        self._deadlines = store.deadlines
        self._store = store

    @classmethod
    def from_url(cls, url: TableURL, *, name: str | None, ttl_s: float | None) -> MemoryTable:
        url.check_options(("ttl",))
        if url.parts.path not in ("", "/"):
            url.fail("a memory table URL is memory:// or memory://name, without a path")
        shared = url.parts.netloc or None
        if name is not None and shared is not None and name != shared:
            url.fail(f"the URL names the store {shared!r} but name={name!r} was given")
        table = cls(shared, ttl_s=url.ttl(ttl_s))
        if name is not None:
            table.name = name
        return table

    async def get(self, key: str) -> Row | None:
        if self.closed:
            self._raise_closed()
        value = self._values.get(key)
        if value is not None and self._deadlines:
            deadline = self._deadlines.get(key)
            if deadline is not None and deadline <= _monotonic():
                self._drop(key)
                return None
        return value

    async def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        if self.closed:
            self._raise_closed()
        values = self._values
        if not self._deadlines:
            return [values.get(key) for key in keys]
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        if self.closed:
            self._raise_closed()
        self._values[key] = value if type(value) is dict else dict(value)
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        if ttl is not None:
            self._expire_in(key, ttl)
        elif self._deadlines:
            self._deadlines.pop(key, None)

    async def set_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, ttl_s: float | None = None
    ) -> None:
        if self.closed:
            self._raise_closed()
        values = self._values
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        for key, value in items:
            values[key] = value if type(value) is dict else dict(value)
        if ttl is not None:
            for key, _ in items:
                self._expire_in(key, ttl)
        elif self._deadlines:
            for key, _ in items:
                self._deadlines.pop(key, None)

    async def update(
        self, key: str, changes: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> Row:
        if self.closed:
            self._raise_closed()
        old = self._live(key)
        # A new dict, never the stored one mutated: a value read earlier stays as it was.
        merged = dict(changes) if old is None else {**old, **changes}
        await self.set(key, merged, ttl_s=ttl_s)
        return merged

    async def delete(self, key: str) -> bool:
        if self.closed:
            self._raise_closed()
        existed = self._live(key) is not None
        self._values.pop(key, None)
        self._deadlines.pop(key, None)
        return existed

    async def ping(self) -> None:
        if self.closed:
            self._raise_closed()

    async def aclose(self) -> None:
        self.closed = True

    def _live(self, key: str) -> Row | None:
        """The value under ``key`` unless it expired (then it is dropped)."""
        value = self._values.get(key)
        if value is not None:
            deadline = self._deadlines.get(key)
            if deadline is not None and deadline <= _monotonic():
                self._drop(key)
                return None
        return value

    def _drop(self, key: str) -> None:
        self._values.pop(key, None)
        self._deadlines.pop(key, None)

    def _expire_in(self, key: str, ttl: float) -> None:
        now = _monotonic()
        deadline = now + ttl
        store = self._store
        self._deadlines[key] = deadline
        heap = store.heap
        heapq.heappush(heap, (deadline, key))
        if heap[0][0] <= now:
            self._purge(now)
        elif len(heap) > 2 * len(self._deadlines) + 1024:
            # Keys written again and again leave stale entries behind: rebuild from the live.
            store.heap = [(when, name) for name, when in self._deadlines.items()]
            heapq.heapify(store.heap)

    def _purge(self, now: float) -> None:
        """Drop up to PURGE_BATCH expired keys, earliest deadline first."""
        heap, deadlines = self._store.heap, self._deadlines
        for _ in range(PURGE_BATCH):
            if not heap or heap[0][0] > now:
                return
            deadline, key = heapq.heappop(heap)
            if deadlines.get(key) == deadline:
                self._drop(key)
