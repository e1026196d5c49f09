"""The embedded table: a SQLite file, the default for state that must survive restarts.

Layout: ``(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL) WITHOUT ROWID``, the
value as JSON text (readable with ``sqlite3`` and its JSON functions), ``expires_at`` in epoch
seconds (NULL: never), and a partial index on ``expires_at``; created when missing, along with
the file's directory.

Threading: one connection, opened on and used by one dedicated worker thread (a single-thread
executor), so the event loop never waits for the disk and the connection stays on its thread.
Each call is one job on that thread, in call order; a batch (``set_many``, ``get_many``) is one
job and, when it writes, one transaction.

Durability: WAL journal, ``synchronous=NORMAL``: a committed write survives a crash of the
process, a power loss may lose the last transactions, and the file is never corrupted. Several
processes may share a file (they wait up to :data:`BUSY_TIMEOUT_S` for each other's writes);
``update`` reads and writes in one ``BEGIN IMMEDIATE`` transaction, so it is atomic across them.

TTL: every read's ``WHERE`` skips expired rows; every :data:`CLEANUP_INTERVAL_S` a write also
deletes up to :data:`CLEANUP_BATCH` expired rows in its transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from .tables import (
    DEFAULT_NAME,
    SQL_IDENTIFIER,
    Row,
    TableBase,
    TableURL,
    TableURLError,
)

__all__ = ["BUSY_TIMEOUT_S", "CLEANUP_BATCH", "CLEANUP_INTERVAL_S", "SqliteTable"]

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another connection's write to the same file."""
CLEANUP_INTERVAL_S = 60.0
"""How often (at most) a write deletes expired rows."""
CLEANUP_BATCH = 1000
"""The most expired rows one cleanup deletes."""
_CHUNK = 500
"""Keys per ``IN (...)`` of ``get_many`` (SQLite limits the parameters of a statement)."""

T = TypeVar("T")
_encode = msgspec.json.encode
_decode = msgspec.json.decode


class SqliteTable(TableBase):
    """A table in a SQLite file (see the module docstring).

    Args:
        path: the database file (created with its directory when missing).
        name: the SQL table's name: letters, digits and underscores.
        ttl_s: the default time to live of written keys, in seconds (None: they never expire).
        url: the URL it was opened from, for messages (default: made from ``path``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str = DEFAULT_NAME,
        ttl_s: float | None = None,
        url: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if url is None:
            url = f"sqlite://{self.path}?table={name}"
        if not SQL_IDENTIFIER.fullmatch(name):
            message = (
                f"table name {name!r} for {url} is not a safe SQL identifier: use letters, "
                "digits and underscores, not starting with a digit, at most 55 characters"
            )
            raise TableURLError(message)
        super().__init__(name=name, url=url, ttl_s=ttl_s)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"servegraph-sqlite-{name}")
        self._connection: sqlite3.Connection | None = None
        """Opened and used on the worker thread only."""
        self._next_cleanup = 0.0
        table = f'"{name}"'
        live = "(expires_at IS NULL OR expires_at > ?)"
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY NOT NULL, "
            "value TEXT NOT NULL, expires_at REAL) WITHOUT ROWID",
            f'CREATE INDEX IF NOT EXISTS "{name}_expires" ON {table} (expires_at) '
            "WHERE expires_at IS NOT NULL",
        )
        self._sql_get = f"SELECT value FROM {table} WHERE key = ? AND {live}"
        self._sql_get_many = f"SELECT key, value FROM {table} WHERE {live} AND key IN "
        self._sql_put = f"INSERT OR REPLACE INTO {table} (key, value, expires_at) VALUES (?, ?, ?)"
        self._sql_delete_live = f"DELETE FROM {table} WHERE key = ? AND {live}"
        self._sql_delete = f"DELETE FROM {table} WHERE key = ?"
        self._sql_cleanup = (
            f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table} "
            f"WHERE expires_at <= ? LIMIT {CLEANUP_BATCH})"
        )

    @classmethod
    def from_url(cls, url: TableURL, *, name: str | None, ttl_s: float | None) -> SqliteTable:
        url.check_options(("table", "ttl"))
        path = unquote(url.parts.netloc + url.parts.path)
        if not path or path.endswith("/"):
            url.fail(
                "it names no database file: use sqlite:///absolute/path.db or "
                "sqlite://relative/path.db"
            )
        return cls(path, name=url.name(name, sql=True), ttl_s=url.ttl(ttl_s), url=url.raw)

    # The coroutines: each runs one job on the worker thread.

    async def get(self, key: str) -> Row | None:
        return await self._run("get", self._get, key)

    async def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        if not keys:
            return []
        return await self._run("get_many", self._get_many, keys)

    async def set(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        expires_at = self._expires_at(ttl_s)
        await self._run("set", self._write, [(key, _encode(value).decode(), expires_at)])

    async def set_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, ttl_s: float | None = None
    ) -> None:
        expires_at = self._expires_at(ttl_s)
        rows = [(key, _encode(value).decode(), expires_at) for key, value in items]
        if rows:
            await self._run("set_many", self._write, rows)

    async def update(
        self, key: str, changes: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> Row:
        expires_at = self._expires_at(ttl_s)
        return await self._run("update", self._update, key, changes, expires_at)

    async def delete(self, key: str) -> bool:
        return await self._run("delete", self._delete, key)

    async def ping(self) -> None:
        await self._run("opening the database", self._db)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _expires_at(self, ttl_s: float | None) -> float | None:
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        return None if ttl is None else time.time() + ttl

    async def _run(self, action: str, function: Callable[..., T], *args: Any) -> T:
        if self.closed:
            self._raise_closed()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (sqlite3.Error, OSError) as exc:
            # "database is locked": another process held the file longer than the busy timeout
            locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
            raise self._error(action, exc, retryable=locked) from exc

    # The jobs: they run on the worker thread.

    def _db(self) -> sqlite3.Connection:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._open()
        return connection

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # isolation_level=None: autocommit, transactions are begun explicitly
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in self._create:
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        return connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _get(self, key: str) -> Row | None:
        row = self._db().execute(self._sql_get, (key, time.time())).fetchone()
        return None if row is None else _decode(row[0])

    def _get_many(self, keys: Sequence[str]) -> list[Row | None]:
        db = self._db()
        now = time.time()
        unique = list(dict.fromkeys(keys))
        found: dict[str, Row] = {}
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            sql = f"{self._sql_get_many}({','.join('?' * len(chunk))})"
            for key, value in db.execute(sql, (now, *chunk)):
                found[key] = _decode(value)
        return [found.get(key) for key in keys]

    def _write(self, rows: list[tuple[str, str, float | None]]) -> None:
        with self._transaction() as db:
            db.executemany(self._sql_put, rows)
            self._cleanup(db)

    def _update(self, key: str, changes: Mapping[str, Any], expires_at: float | None) -> Row:
        with self._transaction() as db:  # the write lock is taken before reading: atomic
            row = db.execute(self._sql_get, (key, time.time())).fetchone()
            merged: Row = dict(changes) if row is None else {**_decode(row[0]), **changes}
            db.execute(self._sql_put, (key, _encode(merged).decode(), expires_at))
            self._cleanup(db)
        return merged

    def _delete(self, key: str) -> bool:
        with self._transaction() as db:
            existed: bool = db.execute(self._sql_delete_live, (key, time.time())).rowcount > 0
            db.execute(self._sql_delete, (key,))  # an expired row, if any
        return existed

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: the file's write lock from the start)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # some errors end the transaction themselves
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _cleanup(self, db: sqlite3.Connection) -> None:
        now = time.time()
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_INTERVAL_S
            db.execute(self._sql_cleanup, (now,))
