"""A table on PostgreSQL (``pip install 'servegraph[postgres]'``: psycopg 3 and psycopg-pool).

Layout: ``(key text PRIMARY KEY, value jsonb NOT NULL, expires_at timestamptz)`` and a partial
index on ``expires_at``, created when missing (by the first call or ``ping``). The table's name
must be a plain SQL identifier (or ``schema.table``); it is quoted with ``psycopg.sql``. jsonb
keeps neither the order of a value's fields nor ``\\u0000`` in strings (PostgreSQL refuses it).

Round trips: every method is one statement on a pooled connection (autocommit): ``get_many`` is
``key = ANY(%s)``, ``set_many`` one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO
UPDATE``, ``update`` one ``INSERT ... ON CONFLICT DO UPDATE SET value = t.value ||
EXCLUDED.value ... RETURNING value``, atomic per key under the row's lock. A repeated key in one
``set_many`` is written once, with its last value (PostgreSQL refuses to upsert a row twice in
one statement). JSON is encoded and decoded with msgspec.

TTL: ``expires_at`` is computed by the server (``now() + ttl``), so clocks of clients do not
matter, and every read's ``WHERE`` skips expired rows; every :data:`CLEANUP_INTERVAL_S` a write
also deletes up to :data:`CLEANUP_BATCH` expired rows (one more statement).

Failures: the first call connects once directly (to create the table and report the real cause
of a failure) within :data:`~servegraph.state.tables.CONNECT_TIMEOUT_S`, then opens a pool of
up to :data:`POOL_SIZE` connections that reconnects by itself. Failures raise ``TableError``
naming the URL (password masked), retryable for connection errors (``OperationalError``).
The pool belongs to the event loop of the first call: calls from another loop are refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlunsplit

import msgspec

from ..errors import MissingDependencyError
from .tables import (
    CONNECT_TIMEOUT_S,
    DEFAULT_NAME,
    SQL_IDENTIFIER,
    ConnectedTable,
    Row,
    TableURL,
    TableURLError,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.types.json import set_json_loads
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    module = "psycopg"
    raise MissingDependencyError(module, "postgres") from exc

__all__ = ["CLEANUP_BATCH", "CLEANUP_INTERVAL_S", "POOL_SIZE", "PostgresTable"]

POOL_SIZE = 8
"""The most connections a table's pool holds (calls beyond wait for one)."""
POOL_TIMEOUT_S = 10.0
"""How long a call waits for a pooled connection before failing."""
CLEANUP_INTERVAL_S = 60.0
"""How often (at most) a write deletes expired rows."""
CLEANUP_BATCH = 1000
"""The most expired rows one cleanup deletes."""

_OPTIONS = ("table", "ttl")
_encode = msgspec.json.encode
_decode = msgspec.json.decode
_LIVE = sql.SQL("(expires_at IS NULL OR expires_at > now())")
_EXPIRES = sql.SQL("now() + %s::float8 * interval '1 second'")  # NULL seconds: NULL


async def _configure(connection: psycopg.AsyncConnection[Any]) -> None:
    set_json_loads(_decode, connection)


class PostgresTable(ConnectedTable):
    """A table in a PostgreSQL table (see the module docstring).

    Args:
        conninfo: the server, as a libpq URL or connection string (its own options, e.g.
            ``sslmode``, are kept).
        name: the SQL table's name: letters, digits and underscores, or ``schema.table``.
        ttl_s: the default time to live of written keys, in seconds (None: they never expire).
        url: the URL it was opened from, for messages (default: ``conninfo``).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        name: str = DEFAULT_NAME,
        ttl_s: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(name=name, url=url or conninfo, ttl_s=ttl_s)
        parts = name.split(".", 1)
        if not all(SQL_IDENTIFIER.fullmatch(part) for part in parts):
            message = (
                f"table name {name!r} for {self.url} is not a safe SQL identifier: use letters, "
                "digits and underscores, not starting with a digit, at most 55 characters, or "
                "'schema.table' of two such names"
            )
            raise TableURLError(message)
        self._conninfo = conninfo
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            message = f"table URL {self.url!r}: {exc}"
            raise TableURLError(message) from exc
        self._connect_options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            self._connect_options["connect_timeout"] = round(CONNECT_TIMEOUT_S)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening: asyncio.Lock | None = None
        self._next_cleanup = 0.0
        table = sql.Identifier(*parts)
        index = sql.Identifier(f"{parts[-1]}_expires")

        def query(text: str) -> bytes:
            composed = sql.SQL(text).format(table=table, index=index, live=_LIVE, exp=_EXPIRES)
            return composed.as_bytes(None)

        self._create = (
            query(
                "CREATE TABLE IF NOT EXISTS {table} "
                "(key text PRIMARY KEY, value jsonb NOT NULL, expires_at timestamptz)"
            ),
            query(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at) "
                "WHERE expires_at IS NOT NULL"
            ),
        )
        self._sql_get = query("SELECT value FROM {table} WHERE key = %s AND {live}")
        self._sql_get_many = query(
            "SELECT key, value FROM {table} WHERE key = ANY(%s::text[]) AND {live}"
        )
        upsert = (
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "expires_at = EXCLUDED.expires_at"
        )
        self._sql_set = query(
            "INSERT INTO {table} AS t (key, value, expires_at) VALUES (%s, %s::jsonb, {exp}) "
            + upsert
        )
        self._sql_set_many = query(
            "INSERT INTO {table} AS t (key, value, expires_at) SELECT k, v::jsonb, {exp} "
            "FROM unnest(%s::text[], %s::text[]) AS u(k, v) " + upsert
        )
        self._sql_update = query(
            "INSERT INTO {table} AS t (key, value, expires_at) VALUES (%s, %s::jsonb, {exp}) "
            "ON CONFLICT (key) DO UPDATE SET value = CASE WHEN t.expires_at IS NULL OR "
            "t.expires_at > now() THEN t.value || EXCLUDED.value ELSE EXCLUDED.value END, "
            "expires_at = EXCLUDED.expires_at RETURNING value"
        )
        self._sql_delete = query(
            "DELETE FROM {table} WHERE key = %s "
            "RETURNING (expires_at IS NULL OR expires_at > now())"
        )
        self._sql_cleanup = query(
            "DELETE FROM {table} WHERE key IN (SELECT key FROM {table} "
            f"WHERE expires_at <= now() LIMIT {CLEANUP_BATCH})"
        )

    @classmethod
    def from_url(cls, url: TableURL, *, name: str | None, ttl_s: float | None) -> PostgresTable:
        # Other options are libpq's (sslmode, application_name...): checked by libpq's parser.
        client_options = {k: v for k, v in url.options.items() if k not in _OPTIONS}
        conninfo = urlunsplit(url.parts._replace(query=urlencode(client_options), fragment=""))
        return cls(
            conninfo,
            name=url.name(name, sql=True, schema=True),
            ttl_s=url.ttl(ttl_s),
            url=url.raw,
        )

    async def get(self, key: str) -> Row | None:
        rows = await self._execute("get", self._sql_get, (key,))
        return rows[0][0] if rows else None

    async def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        if not keys:
            return []
        rows = await self._execute("get_many", self._sql_get_many, (list(keys),))
        found: dict[str, Row] = dict(rows)
        return [found.get(key) for key in keys]

    async def set(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        params = (key, _encode(value).decode(), ttl)
        await self._execute("set", self._sql_set, params, write=True)

    async def set_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, ttl_s: float | None = None
    ) -> None:
        if not items:
            return
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        latest = dict(items)  # the last value of a repeated key
        values = [_encode(value).decode() for value in latest.values()]
        params = (ttl, list(latest), values)
        await self._execute("set_many", self._sql_set_many, params, write=True)

    async def update(
        self, key: str, changes: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> Row:
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        params = (key, _encode(changes).decode(), ttl)
        rows = await self._execute("update", self._sql_update, params, write=True)
        merged: Row = rows[0][0]
        return merged

    async def delete(self, key: str) -> bool:
        rows = await self._execute("delete", self._sql_delete, (key,))
        return bool(rows and rows[0][0])

    async def ping(self) -> None:
        await self._execute("ping", b"SELECT 1", ())

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._in_own_loop():
            await pool.close()

    async def _execute(
        self, action: str, query: bytes, params: Sequence[Any], *, write: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection; its rows (none for a statement without)."""
        self._check()
        pool = self._pool or await self._open()
        try:
            async with pool.connection() as connection:
                cursor = await connection.execute(query, params)
                rows = await cursor.fetchall() if cursor.description is not None else []
                if write and time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + CLEANUP_INTERVAL_S
                    await connection.execute(self._sql_cleanup)
        except psycopg.Error as exc:
            retryable = isinstance(exc, psycopg.OperationalError)
            self._fail(action, exc, retryable=retryable)
        return rows

    async def _open(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """Create the table (a direct connection: its failure says why) and open the pool."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if self.closed:
                self._raise_closed()
            try:
                await self._create_table()
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self._conninfo,
                    kwargs=self._connect_options,
                    min_size=1,
                    max_size=POOL_SIZE,
                    open=False,
                    configure=_configure,
                    name=f"servegraph-table-{self.name}",
                    timeout=POOL_TIMEOUT_S,
                )
                try:
                    await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S + 2)
                except BaseException:
                    await pool.close()
                    raise
            except psycopg.Error as exc:
                retryable = isinstance(exc, psycopg.OperationalError)
                self._fail("connecting", exc, retryable=retryable)
            self._pool = pool
            return pool

    async def _create_table(self) -> None:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_options)
        async with connection:
            # Tables opened at the same moment (by several processes) would race to create
            # the table or its index: a lock on the table's name makes them take turns. It is
            # a session lock, released when this connection closes.
            await connection.execute(b"SELECT pg_advisory_lock(hashtext(%s))", (self.name,))
            for statement in self._create:
                await connection.execute(statement)
