"""State tables: one small async interface over memory, SQLite, Redis and PostgreSQL.

Steps enrich events from tables (join-with-table), keep per-key state in them (map-with-state)
and persist windowed-aggregation state in them. A table maps ``str`` keys to dicts of
JSON-compatible values; :func:`open_table` opens one from a URL:

- ``memory://`` (private to the table object) or ``memory://name`` (shared by name within the
  process), see :mod:`servegraph.state.memory_table`;
- ``sqlite:///abs/path.db?table=name`` or ``sqlite://relative/path.db``, the embedded default
  that survives restarts, see :mod:`servegraph.state.sqlite_table`;
- ``redis://host:port/db?table=name&prefix=p`` (and ``rediss://``), see
  :mod:`servegraph.state.redis_table`;
- ``postgresql://user@host:port/db?table=name`` (and ``postgres://``), see
  :mod:`servegraph.state.postgres_table`.

Every URL takes ``ttl`` (a default time to live for the table's keys: ``30s``, ``250ms``,
``1h30m`` or a number of seconds) and all but memory take ``table`` (the table's name, default
:data:`DEFAULT_NAME`). The backend modules import their client libraries; this module does not,
so importing it stays cheap.

Ownership: what ``get``, ``get_many`` and ``update`` return must be treated as read-only (the
memory table returns the dict it stores, for speed), and a dict given to ``set``/``set_many``
belongs to the table from then on (the memory table keeps it as it is).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Protocol
from urllib.parse import SplitResult, parse_qsl, urlsplit

from ..errors import BackendError, GraphError, ServegraphError
from .windows import WindowError, parse_duration

__all__ = [
    "DEFAULT_NAME",
    "SCHEMES",
    "ConnectedTable",
    "KeyFieldError",
    "Table",
    "TableBase",
    "TableError",
    "TableURLError",
    "key_of",
    "mask_url",
    "open_table",
]

DEFAULT_NAME = "state"
"""The name of a table whose URL and ``open_table`` call name none."""

SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgresql", "postgres")
"""The URL schemes :func:`open_table` knows."""

CONNECT_TIMEOUT_S = 3.0
"""How long the network backends wait for a connection before failing."""

SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,54}")
"""A table name that needs no quoting in SQL, short enough for its index's name (63 max)."""

Row = dict[str, Any]
"""A table's value: a dict of JSON-compatible values."""


class TableError(BackendError):
    """A table's I/O failed (unreachable server, closed table...): the message names the
    table and its URL (password masked); ``retryable`` says whether trying again may help."""


class TableURLError(GraphError, ValueError):
    """A table URL or option that is wrong (unknown scheme or option, unsafe name, bad TTL)."""


class KeyFieldError(ServegraphError, KeyError):
    """An event body lacks a field that makes up its table key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:  # a KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


class Table(Protocol):
    """A table of dict values by ``str`` key. Every method is a coroutine.

    Writes (``set``, ``set_many``, ``update``) give the key the TTL of the call, else the
    table's default TTL, else none (a key written without either never expires, even if it
    had a TTL before). An expired key is never returned and counts as missing everywhere.
    """

    name: str
    """The table's name (a SQL table, a Redis key segment, a memory store's name)."""
    url: str
    """The table's URL, password masked (what error messages show)."""

    async def get(self, key: str) -> Row | None:
        """The value under ``key`` (read-only: do not mutate it), or None."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        """The values under ``keys`` in their order, None where missing; one round trip."""
        ...

    async def set(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        """Replace the value under ``key`` (the table owns ``value`` from now on)."""
        ...

    async def set_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, ttl_s: float | None = None
    ) -> None:
        """Replace the values of several keys (the last wins for a repeated key); one round
        trip, atomically on SQLite, Redis and PostgreSQL."""
        ...

    async def update(
        self, key: str, changes: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> Row:
        """Merge the fields of ``changes`` into the value under ``key`` (created when missing),
        atomically per key, and return the merged value (read-only)."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; whether it existed (an expired key did not)."""
        ...

    async def ping(self) -> None:
        """Reach the store (connect, create the table): raises :class:`TableError` naming the
        URL when it cannot, within a few seconds. Steps call it at startup."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; idempotent. Later calls raise TableError."""
        ...


class TableBase:
    """What the built-in tables share: name, masked URL, default TTL, errors, closing."""

    name: str
    url: str
    ttl_s: float | None
    closed: bool

    def __init__(self, *, name: str, url: str, ttl_s: float | None) -> None:
        self.name = name
        self.url = mask_url(url)
        self.ttl_s = check_ttl(ttl_s, what="ttl_s")
        self.closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r})"

    def _ttl(self, ttl_s: float | None) -> float | None:
        """The TTL a write gives its keys: the call's, else the table's default."""
        if ttl_s is None:
            return self.ttl_s
        if not 0 < ttl_s < math.inf:
            message = f"table {self.name!r}: ttl_s must be positive seconds, got {ttl_s!r}"
            raise ValueError(message)
        return float(ttl_s)

    def _error(self, action: str, cause: BaseException, *, retryable: bool) -> TableError:
        return TableError(
            f"table {self.name!r} at {self.url}: {action} failed: {type(cause).__name__}: {cause}",
            retryable=retryable,
        )

    def _fail(self, action: str, cause: BaseException, *, retryable: bool) -> NoReturn:
        """Raise the TableError of a failed ``action`` (from ``cause``)."""
        raise self._error(action, cause, retryable=retryable) from cause

    def _raise_closed(self) -> NoReturn:
        message = f"table {self.name!r} at {self.url} is closed"
        raise TableError(message, retryable=False)


class ConnectedTable(TableBase):
    """A table with connections (Redis, PostgreSQL): they belong to the event loop of the
    table's first call, so calls from another loop are refused with a clear message."""

    _loop: asyncio.AbstractEventLoop | None = None

    def _check(self) -> None:
        """Refuse a call on a closed table, or from another event loop than the first call's."""
        if self.closed:
            self._raise_closed()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                message = (
                    f"table {self.name!r} at {self.url} is used from another event loop than "
                    "its first call's, which its connections belong to: open one table per "
                    "event loop"
                )
                raise TableError(message, retryable=False)
            self._loop = loop

    def _in_own_loop(self) -> bool:
        """Whether the running loop is the one the table's connections belong to (or none
        was made yet): only there can they be closed."""
        return self._loop is None or self._loop is asyncio.get_running_loop()


def check_ttl(ttl_s: float | None, *, what: str) -> float | None:
    """A default TTL given to a table, checked: None, or positive finite seconds."""
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s < math.inf:
        message = f"{what} must be a positive number of seconds or None, got {ttl_s!r}"
        raise TableURLError(message)
    return float(ttl_s)


def key_of(body: Any, fields: Sequence[str], *, step: str) -> str:
    """The table key of an event body (a dict): ``str`` of one field, or of several joined
    with ``":"``.

    Raises:
        KeyFieldError: a field is missing (or the body is not a dict); the message names the
            step and the field and lists the body's fields.

    Example:
        >>> key_of({"user": 7, "region": "eu"}, ["region", "user"], step="join")
        'eu:7'
    """
    try:
        if len(fields) == 1:
            return str(body[fields[0]])
        return ":".join([str(body[field]) for field in fields])
    except (KeyError, TypeError, IndexError) as exc:
        if not isinstance(body, Mapping):
            message = (
                f"step {step!r}: the table key comes from fields {list(fields)} of a dict body, "
                f"but the body is a {type(body).__name__}"
            )
            raise KeyFieldError(message) from exc
        missing = next(field for field in fields if field not in body)
        found = ", ".join(map(repr, body)) or "none"
        message = f"step {step!r}: the event has no key field {missing!r} (its fields: {found})"
        raise KeyFieldError(message) from exc


def mask_url(url: str) -> str:
    """``url`` with its password (in the netloc or a ``password`` option) replaced by ``***``."""
    parts = urlsplit(url)
    masked = url
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    if "password=" in parts.query:
        query = "&".join(
            f"{k}=***" if k == "password" else f"{k}={v}"
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
        masked = masked.replace(parts.query, query, 1)
    return masked


class TableURL:
    """A table URL taken apart: its scheme, the parts, and its options (query parameters)."""

    def __init__(self, url: str) -> None:
        self.raw = url
        self.masked = mask_url(url)
        self.parts: SplitResult = urlsplit(url)
        self.scheme = self.parts.scheme
        self.options: dict[str, str] = {}
        for option, value in parse_qsl(self.parts.query, keep_blank_values=True):
            if option in self.options:
                self.fail(f"option {option!r} is given twice")
            self.options[option] = value

    def fail(self, problem: str) -> NoReturn:
        message = f"table URL {self.masked!r}: {problem}"
        raise TableURLError(message)

    def check_options(self, allowed: Sequence[str], *, extra: str = "") -> None:
        """Refuse options not in ``allowed`` (``extra`` says what else is allowed)."""
        unknown = [option for option in self.options if option not in allowed]
        if unknown:
            known = ", ".join(allowed) + extra
            self.fail(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {known}")

    def ttl(self, ttl_s: float | None) -> float | None:
        """The table's default TTL: ``ttl_s`` if given, else the ``ttl`` option."""
        if ttl_s is not None:
            return check_ttl(ttl_s, what="ttl_s")
        text = self.options.get("ttl")
        if text is None:
            return None
        try:
            seconds = float(text)
        except ValueError:
            try:
                return parse_duration(text, what="ttl")
            except WindowError as exc:
                self.fail(f"{exc.problems[0].message} (or a number of seconds)")
        if not 0 < seconds < math.inf:
            self.fail(f"ttl must be positive, got {text!r}")
        return seconds

    def name(self, name: str | None, *, sql: bool = False, schema: bool = False) -> str:
        """The table's name: ``name`` if given, else the ``table`` option, else the default;
        with ``sql``, it must be a plain SQL identifier (with ``schema``, or two of them as
        ``schema.table``)."""
        chosen = name if name is not None else self.options.get("table", DEFAULT_NAME)
        if not chosen:
            self.fail("the table name is empty")
        parts = chosen.split(".", 1) if schema else [chosen]
        if sql and not all(SQL_IDENTIFIER.fullmatch(part) for part in parts):
            also = " (or 'schema.table' of two such names)" if schema else ""
            self.fail(
                f"table name {chosen!r} is not a safe SQL identifier: use letters, digits and "
                f"underscores, not starting with a digit, at most 55 characters{also}"
            )
        return chosen


def open_table(url: str, *, name: str | None = None, ttl_s: float | None = None) -> Table:
    """Open the table at ``url`` (nothing is connected before the first call or ``ping``).

    Args:
        url: ``memory://[name]``, ``sqlite:///abs/path.db`` / ``sqlite://rel/path.db``,
            ``redis://host:port/db``, ``postgresql://user@host:port/db``, with options
            ``table`` (not memory), ``ttl`` and, on Redis, ``prefix`` (see docs/tables.md).
        name: the table's name, over the URL's ``table`` option.
        ttl_s: the table's default time to live in seconds, over the URL's ``ttl`` option.

    Raises:
        TableURLError: an unknown scheme or option, an unsafe SQL name, a bad TTL.
        MissingDependencyError: the backend's client library is not installed.

    Example:
        >>> import asyncio
        >>> async def demo() -> object:
        ...     table = open_table("memory://")
        ...     await table.set("user-1", {"visits": 1})
        ...     merged = await table.update("user-1", {"country": "fr"})
        ...     await table.aclose()
        ...     return merged
        >>> asyncio.run(demo())
        {'visits': 1, 'country': 'fr'}
    """
    parsed = TableURL(url)
    scheme = parsed.scheme
    if scheme == "memory":
        from .memory_table import MemoryTable

        return MemoryTable.from_url(parsed, name=name, ttl_s=ttl_s)
    if scheme == "sqlite":
        from .sqlite_table import SqliteTable

        return SqliteTable.from_url(parsed, name=name, ttl_s=ttl_s)
    if scheme in ("redis", "rediss"):
        from .redis_table import RedisTable

        return RedisTable.from_url(parsed, name=name, ttl_s=ttl_s)
    if scheme in ("postgresql", "postgres"):
        from .postgres_table import PostgresTable

        return PostgresTable.from_url(parsed, name=name, ttl_s=ttl_s)
    known = ", ".join(f"{known}://" for known in SCHEMES)
    parsed.fail(f"unknown scheme {scheme!r}; known schemes: {known}")
