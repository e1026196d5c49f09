"""A queue backend on Redis Streams (``pip install 'servegraph[redis]'``).

Publishing is ``XADD`` (with approximate ``MAXLEN`` trimming); a consumer group is a Redis
consumer group, created on first use from the stream's start (``XGROUP CREATE ... 0
MKSTREAM``); consuming is ``XREADGROUP``, acking is ``XACK`` (``ack_many`` sends one ``XACK``
per 1000 ids), and taking over the messages of a dead consumer is ``XPENDING ... IDLE``
followed by ``XCLAIM``.

Publish coalescing. ``publish`` calls made concurrently by tasks of one event loop share
round trips. A call made while no ``XADD`` is in flight sends its own at once, so a lone
publish costs one round trip as ever (nothing waits for more calls to come). Calls made
while one is in flight queue up; when it ends, a flush task sends everything queued in one
script call (a Lua loop of up to 1000 ``XADD``s: one command for redis-py to pack and one
reply to parse, where a pipeline costs both per entry), then what was queued meanwhile, until
nothing is left. Each caller returns once the batch has been answered (its message is in
Redis) and gets a ``BackendError`` if it failed (a failed batch fails each of its callers:
entries before the failure may be in the stream, so their retry can duplicate them). The
flush task belongs to the backend: ``aclose`` waits for it, and publishes after ``aclose``
raise.

Trimming. ``maxlen`` trims the stream on publish to about that many entries by dropping
the *oldest* ones, whether or not every consumer group has read and acked them: Redis 7.0
has no trimming that respects consumer groups. A message trimmed before a group read it is
lost to that group without notice, and a trimmed pending message is skipped when claimed or
retried. Keep ``maxlen`` well above the largest backlog the consumers may fall behind by.

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

import asyncio
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
RETRY_POLL_MS = 50
"""How often a consumer looks for nacked messages that fell due (at most)."""
_CLAIM_PAGE = 100
_ACK_CHUNK = 1000
"""The most ids one ``XACK`` of ``ack_many`` carries."""
_PUBLISH_BATCH = 1000
"""The most ``XADD``s one publish batch carries (more wait for the next one)."""

_Fields = dict[str, bytes | str]
_Queued = tuple[_Fields, asyncio.Future[bytes | str | Exception]]

# KEYS: stream, retry set. ARGV: group, parking consumer, message id, delay in ms.
# ARGV: maxlen ('' for none), then per entry the number of field names and values, and them.
_PUBLISH_SCRIPT = """
local stream, maxlen = KEYS[1], ARGV[1]
local ids, i = {}, 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local fields = {unpack(ARGV, i + 1, i + n)}
  if maxlen == '' then
    ids[#ids + 1] = redis.call('XADD', stream, '*', unpack(fields))
  else
    ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  i = i + n + 1
end
return ids
"""

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
            Trimming drops the oldest entries whether or not they were consumed and acked
            (Redis 7.0 has no ack-aware trimming), so ``maxlen`` must exceed the largest
            backlog of unconsumed messages, or those are lost.
        client: a ``redis.asyncio.Redis`` to use; the backend does not close it.
    """

    def __init__(
        self,
        stream: str,
        *,
        url: str = "redis://127.0.0.1:6379",
        maxlen: int | None = 1_000_000,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.stream = stream
        self.maxlen = maxlen
        self._owns_client = client is None
        self._client: Any = client if client is not None else aioredis.Redis.from_url(url)
        self._groups: set[str] = set()
        self._next_due_check: dict[str, int] = {}
        self._closed = False
        self._nack_script: Any = self._client.register_script(_NACK_SCRIPT)
        self._publish_script: Any = self._client.register_script(_PUBLISH_SCRIPT)
        self._claim_due_script: Any = self._client.register_script(_CLAIM_DUE_SCRIPT)
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._redelivered = 0
        self._in_flight: set[tuple[str, str]] = set()
        self._queued: list[_Queued] = []
        """Publishes waiting for the XADD in flight to end, with their callers' futures."""
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        """Set when no XADD is in flight (neither a lone one nor a flush task's pipeline)."""
        self._idle.set()

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
        """Append a message with ``XADD`` and return its id, once Redis has answered.

        Concurrent calls share round trips (see the module docstring).

        Raises:
            BackendError: the ``XADD`` failed, or the backend is closed.
        """
        if self._closed:
            message = f"redis backend for stream {self.stream!r} is closed"
            raise BackendError(message, retryable=False)
        fields: _Fields = {"body": body, "event_id": event_id}
        if key is not None:
            fields["key"] = key
        if headers:
            for name, value in headers.items():
                fields[_HEADER_PREFIX + name] = value
        if not self._idle.is_set():
            # an XADD is in flight: queue behind it, to go in the next batch
            reply: asyncio.Future[bytes | str | Exception] = (
                asyncio.get_running_loop().create_future()
            )
            self._queued.append((fields, reply))
            result = await reply
            if isinstance(result, redis_exceptions.RedisError):
                raise _wrap(result, action="XADD") from result
            if isinstance(result, Exception):
                raise result  # not a Redis error (a bug): as it came, like a lone XADD's
            return _text(result)
        # nothing in flight: send at once (a lone publish costs one round trip, as ever)
        self._idle.clear()
        try:
            message_id = await self._client.xadd(
                self.stream, fields, maxlen=self.maxlen, approximate=True
            )
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="XADD") from exc
        finally:
            self._send_queued()
        self._published += 1
        return _text(message_id)

    def _send_queued(self) -> None:
        """An XADD ended: hand the calls queued meanwhile to a flush task, or be idle."""
        if any(not reply.done() for _fields, reply in self._queued):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_publishes())
        else:
            self._queued.clear()  # only callers cancelled while they waited, if any
            self._idle.set()

    async def _flush_publishes(self) -> None:
        """Send the queued ``XADD``s, a batch at a time, until none is left; each reply
        (or the error) goes to its caller's future."""
        try:
            while self._queued:
                # a caller cancelled while it waited has given up: its XADD is not sent
                batch = [item for item in self._queued[:_PUBLISH_BATCH] if not item[1].done()]
                del self._queued[:_PUBLISH_BATCH]
                if batch:
                    await self._publish_batch(batch)
        finally:
            self._flusher = None
            self._idle.set()

    async def _publish_batch(self, batch: list[_Queued]) -> None:
        replies: list[Any]
        try:
            # One script call appends the whole batch: one command to pack and one reply to
            # parse, where a pipeline of XADDs costs redis-py both per entry.
            arguments: list[Any] = ["" if self.maxlen is None else self.maxlen]
            for fields, _reply in batch:
                arguments.append(2 * len(fields))
                for name, value in fields.items():
                    arguments += (name, value)
            replies = await self._publish_script(keys=[self.stream], args=arguments)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # cancelled, the loop is stopping: the callers are cancelled too
                for _fields, reply in batch + self._queued:
                    reply.cancel()
                self._queued.clear()
                raise
            replies = [exc] * len(batch)  # a failed round trip fails each of its XADDs
        for (_fields, reply), result in zip(batch, replies, strict=True):
            if not isinstance(result, Exception):
                self._published += 1
            if not reply.done():  # its caller may have been cancelled meanwhile
                reply.set_result(result)

    async def consume(
        self, group: str, consumer: str, *, count: int = 16, block_ms: int = 1000
    ) -> list[Message]:
        await self._ensure_group(group)
        loop_deadline = _now_ms() + max(0, block_ms)
        while True:
            try:
                now = _now_ms()
                next_check = self._next_due_check.get(group, 0)
                if now >= next_check:
                    # Retries that fell due come first; the script costs a round trip, so it
                    # runs at most every RETRY_POLL_MS (or when the next retry is due).
                    entries, wait_ms = await self._claim_due_script(
                        keys=[self.stream, self.retry_key(group)], args=[group, consumer, count]
                    )
                    wait_ms = int(wait_ms)
                    soon = wait_ms if 0 <= wait_ms < RETRY_POLL_MS else RETRY_POLL_MS
                    self._next_due_check[group] = now + soon
                    messages = await self._messages(group, _entries(entries), known=None)
                else:
                    messages, wait_ms = [], next_check - now
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

    async def ack_many(self, group: str, messages: Sequence[Message]) -> None:
        """Ack ``messages`` with one ``XACK`` per 1000 ids, in one round trip.

        Raises:
            BackendError: the ``XACK`` failed; none of the messages is taken as acked here
                (some may be in Redis: acking them again does nothing).
        """
        if not messages:
            return
        ids = [message.id for message in messages]
        try:
            if len(ids) <= _ACK_CHUNK:
                counts = [await self._client.xack(self.stream, group, *ids)]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for start in range(0, len(ids), _ACK_CHUNK):
                        pipe.xack(self.stream, group, *ids[start : start + _ACK_CHUNK])
                    counts = await pipe.execute()
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="XACK") from exc
        for message_id in ids:
            self._in_flight.discard((group, message_id))
        self._acked += sum(int(count) for count in counts)

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
        due = _now_ms() + delay_ms
        self._next_due_check[group] = min(self._next_due_check.get(group, due), due)

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

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except redis_exceptions.RedisError as exc:
            raise _wrap(exc, action="PING") from exc

    def statistics(self) -> BackendStatistics:
        return BackendStatistics(
            published=self._published,
            delivered=self._delivered,
            acked=self._acked,
            redelivered=self._redelivered,
            pending=len(self._in_flight),
        )

    async def aclose(self) -> None:
        """Close: the publishes under way are sent and answered first, then the client is
        closed if this backend opened it; later publishes raise ``BackendError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._idle.wait()  # the publishes under way, the flush task's included
            if self._flusher is not None:
                await self._flusher  # done by now: it set ``_idle`` as it ended
        finally:
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
    get = fields.get
    body, event_id, key = get(b"body"), get(b"event_id"), get(b"key")
    headers: dict[str, str] = {}
    if body is None or len(fields) > 2 + (key is not None):  # headers, or str field names
        body = body if body is not None else get("body")
        event_id = event_id if event_id is not None else get("event_id")
        key = key if key is not None else get("key")
        for raw_name, value in fields.items():
            name = _text(raw_name)
            if name.startswith(_HEADER_PREFIX):
                headers[name[len(_HEADER_PREFIX) :]] = _text(value)
    return Message(
        id=message_id,
        event_id=_text(event_id) if event_id is not None else "",
        body=_bytes(body) if body is not None else b"",
        headers=headers,
        key=_text(key) if key is not None else None,
        deliveries=deliveries,
    )
