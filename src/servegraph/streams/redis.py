"""A queue backend on Redis Streams (``pip install 'servegraph[redis]'``).

Publishing is ``XADD`` (with approximate ``MAXLEN`` trimming); a consumer group is a Redis
consumer group, created on first use from the stream's start (``XGROUP CREATE ... 0
MKSTREAM``); consuming is ``XREADGROUP``, acking is ``XACK``, and taking over the messages
of a dead consumer is ``XPENDING ... IDLE`` followed by ``XCLAIM``.

Nack. Redis has no native nack, so a nacked message is *parked*: one atomic script
``XCLAIM``s it (``JUSTID``, which leaves its delivery count alone) to the reserved consumer
``servegraph:parked`` and records its due time (Redis server time + ``delay_s``) in the
sorted set ``<stream>:retry:<group>``. ``consume`` first runs a second atomic script that
pops the due ids from that set and ``XCLAIM``s them to the caller, which increments their
delivery count (read back with ``XPENDING``); only then does it read new messages with
``XREADGROUP ... >``. While it blocks for new messages it wakes up for the next due retry,
so a nacked message comes back after ``delay_s`` even to a consumer already waiting. A
parked message stays in the group's pending list the whole time (it is never lost), and
``claim_stale`` skips the parking consumer, so a retry is not taken before it is due. Both
steps are Lua scripts, so two consumers never receive the same due retry and a crash
between the two halves of a step cannot orphan a message.

Order per key: Redis Streams deliver in stream order, so messages with one key arrive in
order within one consumer. Across several consumers of a group, order per key is the
stream runtime's job (it routes a key to one consumer); this backend does not enforce it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

from ..errors import BackendError, MissingDependencyError
from .base import BackendStatistics, Message

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    module = "redis"
    raise MissingDependencyError(module, "redis") from exc

__all__ = ["PARKING_CONSUMER", "RedisBackend"]

PARKING_CONSUMER = "servegraph:parked"
"""The consumer name that holds nacked messages until they are due again."""

_HEADER_PREFIX = "h:"
_CLAIM_PAGE = 100

# KEYS: stream, retry set. ARGV: group, parking consumer, message id, delay in ms.
_NACK_SCRIPT = """
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
if #claimed == 0 then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[3])
return 1
"""

# KEYS: stream, retry set. ARGV: group, consumer, count.
# Returns {claimed entries, milliseconds until the next due retry or -1}.
_CLAIM_DUE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[3]))
local entries = {}
if #ids > 0 then
  redis.call('ZREM', KEYS[2], unpack(ids))
  entries = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
end
local wait = -1
local next_due = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #next_due > 0 then
  wait = math.max(0, tonumber(next_due[2]) - now_ms)
end
return {entries, wait}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _wrap(exc: Exception, *, action: str) -> BackendError:
    retryable = isinstance(
        exc,
        redis_exceptions.ConnectionError
        | redis_exceptions.TimeoutError
        | redis_exceptions.BusyLoadingError
        | OSError,
    )
    message = f"redis {action} failed: {type(exc).__name__}: {exc}"
    return BackendError(message, retryable=retryable)


class RedisBackend:
    """A ``QueueBackend`` on one Redis stream (see the module docstring for the design).

    Args:
        stream: the stream's key.
        url: the Redis server, used when ``client`` is not given.
        maxlen: trim the stream to about this many entries on publish (None: never trim).
        client: a ``redis.asyncio.Redis`` to use; the backend does not close it.
    """

    def __init__(
        self,
        stream: str,
        *,
        url: str = "redis://127.0.0.1:6379",
        maxlen: int | None = 100_000,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.stream = stream
        self.maxlen = maxlen
        self._owns_client = client is None
        self._client: Any = client if client is not None else aioredis.Redis.from_url(url)
        self._groups: set[str] = set()
        self._closed = False
        self._nack_script: Any = self._client.register_script(_NACK_SCRIPT)
        self._claim_due_script: Any = self._client.register_script(_CLAIM_DUE_SCRIPT)
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._redelivered = 0
        self._in_flight: set[tuple[str, str]] = set()

    def retry_key(self, group: str) -> str:
        """The sorted set of (due time, message id) holding ``group``'s nacked messages."""
        return f"{self.stream}:retry:{group}"

    async def publish(
        self,
        body: bytes,
        *,
        event_id: str,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        fields: dict[str, bytes | str] = {"body": body, "event_id": event_id}
        if key is not None:
            fields["key"] = key
        if headers:
            for name, value in headers.items():
                fields[_HEADER_PREFIX + name] = value
        try:
            message_id = await self._client.xadd(
                self.stream, fields, maxlen=self.maxlen, approximate=True
            )
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="XADD") from exc
        self._published += 1
        return _text(message_id)

    async def consume(
        self, group: str, consumer: str, *, count: int = 16, block_ms: int = 1000
    ) -> list[Message]:
        await self._ensure_group(group)
        loop_deadline = _now_ms() + max(0, block_ms)
        while True:
            try:
                entries, wait_ms = await self._claim_due_script(
                    keys=[self.stream, self.retry_key(group)], args=[group, consumer, count]
                )
                messages = await self._messages(group, _entries(entries), known=None)
                remaining = count - len(messages)
                left_ms = loop_deadline - _now_ms()
                if remaining > 0:
                    block: int | None = None
                    if not messages and left_ms > 0:
                        block = left_ms if wait_ms < 0 else min(left_ms, max(1, int(wait_ms)))
                    response = await self._client.xreadgroup(
                        group, consumer, {self.stream: ">"}, count=remaining, block=block
                    )
                    for _stream, stream_entries in response or ():
                        fresh = [(_text(i), f) for i, f in stream_entries if f is not None]
                        messages += await self._messages(group, fresh, known=1)
            except redis_exceptions.RedisError as exc:
                raise _wrap(exc, action="consume") from exc
            if messages or _now_ms() >= loop_deadline:
                return messages

    async def ack(self, group: str, message: Message) -> None:
        try:
            acked = await self._client.xack(self.stream, group, message.id)
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="XACK") from exc
        self._in_flight.discard((group, message.id))
        self._acked += int(acked)

    async def nack(self, group: str, message: Message, *, delay_s: float = 0.0) -> None:
        delay_ms = max(0, round(delay_s * 1000))
        try:
            await self._nack_script(
                keys=[self.stream, self.retry_key(group)],
                args=[group, PARKING_CONSUMER, message.id, delay_ms],
            )
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="nack") from exc
        self._in_flight.discard((group, message.id))

    async def claim_stale(
        self, group: str, consumer: str, *, idle_ms: int, count: int = 16
    ) -> list[Message]:
        await self._ensure_group(group)
        try:
            ids: list[str] = []
            start = "-"
            while len(ids) < count:
                page = await self._client.xpending_range(
                    self.stream, group, min=start, max="+", count=_CLAIM_PAGE, idle=idle_ms
                )
                if not page:
                    break
                for entry in page:
                    if _text(entry["consumer"]) != PARKING_CONSUMER and len(ids) < count:
                        ids.append(_text(entry["message_id"]))
                start = "(" + _text(page[-1]["message_id"])
                if len(page) < _CLAIM_PAGE:
                    break
            if not ids:
                return []
            # XCLAIM re-checks the idle time, so a message that another consumer claimed
            # meanwhile is not taken twice.
            claimed = await self._client.xclaim(self.stream, group, consumer, idle_ms, ids)
            entries = [(_text(i), f) for i, f in claimed if f is not None]
            return await self._messages(group, entries, known=None)
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="claim") from exc

    def statistics(self) -> BackendStatistics:
        return BackendStatistics(
            published=self._published,
            delivered=self._delivered,
            acked=self._acked,
            redelivered=self._redelivered,
            pending=len(self._in_flight),
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            await self._client.xgroup_create(self.stream, group, id="0", mkstream=True)
        except redis_exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _wrap(exc, action="XGROUP CREATE") from exc
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="XGROUP CREATE") from exc
        self._groups.add(group)

    async def _messages(
        self,
        group: str,
        entries: Sequence[tuple[str, Mapping[Any, Any]]],
        *,
        known: int | None,
    ) -> list[Message]:
        """Build messages from stream entries; ``known`` is their delivery count if known,
        else it is read from the pending list."""
        if not entries:
            return []
        if known is None:
            async with self._client.pipeline(transaction=False) as pipe:
                for message_id, _fields in entries:
                    pipe.xpending_range(self.stream, group, message_id, message_id, 1)
                pending = await pipe.execute()
            counts = [int(rows[0]["times_delivered"]) if rows else 1 for rows in pending]
        else:
            counts = [known] * len(entries)
        messages = []
        for (message_id, fields), deliveries in zip(entries, counts, strict=True):
            messages.append(_message(message_id, fields, deliveries))
            self._in_flight.add((group, message_id))
            self._delivered += 1
            if deliveries > 1:
                self._redelivered += 1
        return messages


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _entries(raw: Any) -> list[tuple[str, Mapping[Any, Any]]]:
    """Parse a script's raw ``XCLAIM`` reply: ``[[id, [field, value, ...]], ...]``."""
    entries: list[tuple[str, Mapping[Any, Any]]] = []
    for item in raw or ():
        message_id, flat = item[0], item[1]
        if flat is None:
            continue
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        entries.append((_text(message_id), fields))
    return entries


def _message(message_id: str, fields: Mapping[Any, Any], deliveries: int) -> Message:
    body = b""
    event_id = ""
    key: str | None = None
    headers: dict[str, str] = {}
    for raw_name, value in fields.items():
        name = _text(raw_name)
        if name == "body":
            body = _bytes(value)
        elif name == "event_id":
            event_id = _text(value)
        elif name == "key":
            key = _text(value)
        elif name.startswith(_HEADER_PREFIX):
            headers[name[len(_HEADER_PREFIX) :]] = _text(value)
    return Message(
        id=message_id,
        event_id=event_id,
        body=body,
        headers=headers,
        key=key,
        deliveries=deliveries,
    )
