"""A table on Redis (``pip install 'servegraph[redis]'``).

Layout: one hash per key, named ``{prefix}:{name}:{key}``, with a field per top-level field of
the value, each field's value encoded as JSON. A hash makes ``update`` a native, atomic
``HSET`` of the changed fields, with no decoding on the server (Redis's Lua JSON library
rounds numbers to 14 digits, so a JSON string merged by a script would not round-trip). An
empty value is a hash whose one field is ``""`` set to the empty string (which no JSON value
is, so no user field is mistaken for it); reads leave it out.

Round trips: ``get`` is one ``HGETALL``, ``delete`` one ``DEL``, ``ping`` one ``PING``;
``get_many``, ``set``, ``set_many`` and ``update`` are one script call each (a Lua loop of
``HGETALL``, or ``DEL`` + ``HSET`` + ``PEXPIRE`` per key), atomic; ``set_many`` sends its rows
as one JSON argument, which redis-py packs much faster than a list of fields. The scripts touch
several keys, so this table is not for Redis Cluster.

TTL: Redis expires the keys itself (``PEXPIRE``, in milliseconds). A write without a TTL (of the
call or the table) leaves its key without one: ``set`` deletes the old hash, ``update``
``PERSIST``\\ s it.

Failures: connecting gives up after :data:`CONNECT_TIMEOUT_S`, a reply is awaited for at most
:data:`SOCKET_TIMEOUT_S`, and a command that failed on a dropped connection (a restarted server)
is retried once at once. Failures raise ``TableError`` naming the URL, retryable for connection
errors and timeouts. The connections belong to the event loop of the first call: calls from
another loop are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlunsplit

import msgspec

from ..errors import MissingDependencyError
from .tables import CONNECT_TIMEOUT_S, ConnectedTable, Row, TableURL

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_exceptions
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    module = "redis"
    raise MissingDependencyError(module, "redis") from exc

__all__ = ["DEFAULT_PREFIX", "SOCKET_TIMEOUT_S", "RedisTable"]

DEFAULT_PREFIX = "servegraph"
"""The first segment of every key (the ``prefix`` option)."""
SOCKET_TIMEOUT_S = 10.0
"""How long a command waits for its reply before failing."""

_OPTIONS = ("table", "prefix", "ttl")
_EMPTY = b""
"""The field (and its value) that keeps an empty value's hash in existence."""

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# KEYS: the hashes. ARGV: TTL in ms (0: none), and a JSON array with, per key, the array of
# its field names and JSON-encoded values in turn: one argument for redis-py to pack, where a
# flat list of arguments costs it time per field. Every leaf is a string, so the Lua JSON
# decoder (which rounds numbers) leaves the values as they were encoded. HSET takes at most
# 1000 arguments at a time (Lua's stack).
_SET_SCRIPT = """
local ttl = tonumber(ARGV[1])
local rows = cjson.decode(ARGV[2])
for k = 1, #KEYS do
  local key, row = KEYS[k], rows[k]
  local n = #row
  redis.call('DEL', key)
  if n == 0 then
    redis.call('HSET', key, '', '')
  else
    for j = 1, n, 1000 do
      redis.call('HSET', key, unpack(row, j, math.min(j + 999, n)))
    end
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end
return #KEYS
"""

# KEYS: the hash. ARGV: TTL in ms (0: none), then field names and values.
# Returns the merged hash (HGETALL).
_UPDATE_SCRIPT = """
local key, ttl = KEYS[1], tonumber(ARGV[1])
if #ARGV > 1 then
  for j = 2, #ARGV, 1000 do
    redis.call('HSET', key, unpack(ARGV, j, math.min(j + 999, #ARGV)))
  end
elseif redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, '', '')
end
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('PERSIST', key)
end
return redis.call('HGETALL', key)
"""

# KEYS: the hashes. Returns their HGETALLs (an empty list for a missing one).
_GET_MANY_SCRIPT = """
local rows = {}
for k = 1, #KEYS do
  rows[k] = redis.call('HGETALL', KEYS[k])
end
return rows
"""


def _row(fields: dict[bytes, bytes]) -> Row:
    """A stored hash as a value (the caller knows it exists)."""
    if fields.get(_EMPTY) == _EMPTY:
        del fields[_EMPTY]
        if not fields:
            return {}
    # One decode of a JSON array of every field's value is faster than one per field.
    values = _decode(b"[" + b",".join(fields.values()) + b"]")
    return dict(zip([name.decode() for name in fields], values, strict=True))


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A script's HGETALL reply (names and values in turn) as a dict."""
    items = iter(flat)
    return dict(zip(items, items, strict=True))


def _ttl_ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, round(ttl * 1000))


def _retryable(exc: Exception) -> bool:
    return isinstance(
        exc,
        redis_exceptions.ConnectionError
        | redis_exceptions.TimeoutError
        | redis_exceptions.BusyLoadingError
        | OSError,
    )


MAX_CONNECTIONS = 32
"""Connections a Redis table opens at most; more concurrent calls wait for one."""


class RedisTable(ConnectedTable):
    """A table of Redis hashes (see the module docstring).

    Args:
        server: the Redis URL given to redis-py (``redis://host:port/db``, with its own
            options, e.g. ``socket_timeout``).
        name: the table's name, the middle segment of its keys.
        prefix: the first segment of its keys.
        ttl_s: the default time to live of written keys, in seconds (None: they never expire).
        url: the URL it was opened from, for messages (default: ``server``).
    """

    def __init__(
        self,
        server: str = "redis://127.0.0.1:6379/0",
        *,
        name: str = "state",
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(name=name, url=url or server, ttl_s=ttl_s)
        self.prefix = prefix
        self._keyspace = f"{prefix}:{name}:"
        # A blocking pool: more calls at once than connections wait for one (redis-py's
        # default pool raises "Too many connections" instead).
        self._pool: Any = aioredis.BlockingConnectionPool.from_url(
            server,
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._client: Any = aioredis.Redis(connection_pool=self._pool)
        self._set_script: Any = self._client.register_script(_SET_SCRIPT)
        self._update_script: Any = self._client.register_script(_UPDATE_SCRIPT)
        self._get_many_script: Any = self._client.register_script(_GET_MANY_SCRIPT)

    @classmethod
    def from_url(cls, url: TableURL, *, name: str | None, ttl_s: float | None) -> RedisTable:
        allowed = (*_OPTIONS, *URL_QUERY_ARGUMENT_PARSERS)
        url.check_options(allowed)
        prefix = url.options.get("prefix", DEFAULT_PREFIX)
        if not prefix:
            url.fail("the prefix is empty")
        client_options = {k: v for k, v in url.options.items() if k not in _OPTIONS}
        server = urlunsplit(url.parts._replace(query=urlencode(client_options), fragment=""))
        return cls(server, name=url.name(name), prefix=prefix, ttl_s=url.ttl(ttl_s), url=url.raw)

    def key(self, key: str) -> str:
        """The Redis key of the table's ``key``."""
        return self._keyspace + key

    async def get(self, key: str) -> Row | None:
        self._check()
        try:
            fields = await self._client.hgetall(self._keyspace + key)
        except redis_exceptions.RedisError as exc:
            self._fail("HGETALL", exc, retryable=_retryable(exc))
        return _row(fields) if fields else None

    async def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        self._check()
        if not keys:
            return []
        keyspace = self._keyspace
        try:
            replies = await self._get_many_script(keys=[keyspace + key for key in keys])
        except redis_exceptions.RedisError as exc:
            self._fail("get_many script", exc, retryable=_retryable(exc))
        return [_row(_pairs(flat)) if flat else None for flat in replies]

    async def set(self, key: str, value: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        await self.set_many(((key, value),), ttl_s=ttl_s)

    async def set_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, ttl_s: float | None = None
    ) -> None:
        self._check()
        if not items:
            return
        keyspace = self._keyspace
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        keys = [keyspace + key for key, _ in items]
        rows = [
            [text for field, v in value.items() for text in (field, _encode(v).decode())]
            for _, value in items
        ]
        arguments = (_ttl_ms(ttl), _encode(rows))
        try:
            await self._set_script(keys=keys, args=arguments)
        except redis_exceptions.RedisError as exc:
            self._fail("set script", exc, retryable=_retryable(exc))

    async def update(
        self, key: str, changes: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> Row:
        self._check()
        ttl = self.ttl_s if ttl_s is None else self._ttl(ttl_s)
        arguments: list[Any] = [_ttl_ms(ttl)]
        for field, value in changes.items():
            arguments += (field, _encode(value))
        try:
            flat = await self._update_script(keys=[self._keyspace + key], args=arguments)
        except redis_exceptions.RedisError as exc:
            self._fail("update script", exc, retryable=_retryable(exc))
        return _row(_pairs(flat))

    async def delete(self, key: str) -> bool:
        self._check()
        try:
            deleted = await self._client.delete(self._keyspace + key)
        except redis_exceptions.RedisError as exc:
            self._fail("DEL", exc, retryable=_retryable(exc))
        return bool(deleted)

    async def ping(self) -> None:
        self._check()
        try:
            await self._client.ping()
        except redis_exceptions.RedisError as exc:
            self._fail("connecting (PING)", exc, retryable=_retryable(exc))

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._in_own_loop():
            await self._client.aclose()
            await self._pool.aclose()
