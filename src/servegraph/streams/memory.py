"""The in-process queue backend, the embedded default.

A :class:`MemoryBroker` holds the streams of one process. Backends made without a broker
share the module's default broker, so a publisher and a consumer made separately (by two
steps of one graph, say) see the same stream. Nothing survives the process: use the Redis or
NATS backend when messages must outlive it.

Each consumer group keeps a cursor into the stream and its pending entries (the consumer
holding the message, its delivery count, the time of its last delivery). A blocked
``consume`` waits on an ``asyncio.Event`` with a timeout; a delayed ``nack`` only records the
loop time at which the message is due again, so no sleeping task is left behind.

Example:
    >>> import asyncio
    >>> async def demo() -> list[bytes]:
    ...     async with MemoryBackend("demo", broker=MemoryBroker()) as backend:
    ...         await backend.publish(b"hello", event_id="ev-1")
    ...         messages = await backend.consume("g", "c1", block_ms=10)
    ...         for message in messages:
    ...             await backend.ack("g", message)
    ...         return [message.body for message in messages]
    >>> asyncio.run(demo())
    [b'hello']
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Self

from servegraph.streams.base import BackendStatistics, Message

__all__ = ["MemoryBackend", "MemoryBroker", "default_broker"]


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    event_id: str
    body: bytes
    headers: Mapping[str, str]
    key: str | None


@dataclass(slots=True)
class _Pending:
    """A message delivered to a group and not acked yet.

    ``consumer`` is ``None`` once it is nacked: it then waits until ``due`` (loop time) to be
    delivered again by ``consume``.
    """

    consumer: str | None
    deliveries: int
    delivered_at: float
    due: float = 0.0


@dataclass(slots=True)
class _Group:
    cursor: int = 0
    """Index of the first entry of the stream never delivered to the group."""
    pending: dict[int, _Pending] = field(default_factory=dict)
    """Pending entries by their index in the stream (dicts keep delivery order)."""


@dataclass(slots=True)
class _Stream:
    entries: list[_Entry] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    waiters: set[asyncio.Event] = field(default_factory=set)

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class MemoryBroker:
    """The streams of one process, shared by the :class:`MemoryBackend` objects using it.

    The broker holds no loop-bound object between calls, so one broker may serve backends
    on successive event loops (each ``asyncio.run`` of a test, say).
    """

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def streams(self) -> list[str]:
        """The names of the streams that exist (were published to or consumed from)."""
        return list(self._streams)

    def delete(self, stream: str) -> None:
        """Drop a stream with its messages and consumer groups (nothing if it is unknown)."""
        removed = self._streams.pop(stream, None)
        if removed is not None:
            removed.wake()

    def pending(self, stream: str) -> int:
        """How many messages of ``stream`` are delivered and not acked, over all groups."""
        state = self._streams.get(stream)
        if state is None:
            return 0
        return sum(len(group.pending) for group in state.groups.values())


_DEFAULT_BROKER = MemoryBroker()


def default_broker() -> MemoryBroker:
    """The process's broker, used by every :class:`MemoryBackend` made without one."""
    return _DEFAULT_BROKER


class MemoryBackend:
    """A ``QueueBackend`` over a stream held in memory by a :class:`MemoryBroker`.

    Args:
        stream: the stream to publish to and consume from.
        broker: the broker holding the stream; the process's default broker when ``None``.

    Messages are delivered at least once per consumer group: redeliveries that are due come
    first, then new messages in publish order, so a group with one consumer gets each key's
    messages in order. Operations on a closed backend raise ``RuntimeError``.
    """

    def __init__(self, stream: str, *, broker: MemoryBroker | None = None) -> None:
        self.stream = stream
        self._broker = broker if broker is not None else _DEFAULT_BROKER
        self._closed = False
        self._waiters: set[asyncio.Event] = set()
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._redelivered = 0

    @property
    def broker(self) -> MemoryBroker:
        """The broker holding this backend's stream."""
        return self._broker

    def _state(self) -> _Stream:
        if self._closed:
            msg = f"memory backend for stream {self.stream!r} is closed"
            raise RuntimeError(msg)
        return self._broker._stream(self.stream)

    async def publish(
        self,
        body: bytes,
        *,
        event_id: str,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Append a message to the stream and return its id.

        Args:
            body: the payload.
            event_id: the id of the event the message carries.
            key: the ordering key.
            headers: string headers delivered with the message.

        Returns:
            The message's id, unique within the stream.

        Raises:
            RuntimeError: the backend is closed.
        """
        state = self._state()
        message_id = str(len(state.entries) + 1)
        frozen = MappingProxyType(dict(headers or {}))
        state.entries.append(_Entry(message_id, event_id, bytes(body), frozen, key))
        self._published += 1
        state.wake()
        return message_id

    async def consume(
        self, group: str, consumer: str, *, count: int = 16, block_ms: int = 1000
    ) -> list[Message]:
        """Up to ``count`` messages for ``consumer`` of ``group``, waiting up to ``block_ms``.

        Due redeliveries come before new messages. The group is created on first use and
        starts at the stream's first message.

        Args:
            group: the consumer group.
            consumer: the consumer's name within the group.
            count: the most messages to return.
            block_ms: how long to wait for the first message when none is available.

        Returns:
            The messages, or ``[]`` when none came within ``block_ms`` (or the backend was
            closed while waiting).

        Raises:
            RuntimeError: the backend is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_ms, 0) / 1000
        state = self._state()
        while True:
            messages, next_due = self._take(state, group, consumer, count, loop.time())
            if messages or loop.time() >= deadline:
                return messages
            waiter = asyncio.Event()
            state.waiters.add(waiter)
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout_at(min(deadline, next_due)):
                    await waiter.wait()
            except TimeoutError:
                pass
            finally:
                state.waiters.discard(waiter)
                self._waiters.discard(waiter)
            if self._closed:
                return []
            state = self._broker._stream(self.stream)

    def _take(
        self, state: _Stream, group: str, consumer: str, count: int, now: float
    ) -> tuple[list[Message], float]:
        """Deliver what is available now; also return when the next redelivery is due."""
        group_state = state.groups.get(group)
        if group_state is None:
            group_state = state.groups[group] = _Group()
        messages: list[Message] = []
        next_due = float("inf")
        for index, pending in group_state.pending.items():
            if len(messages) >= count:
                break
            if pending.consumer is not None:
                continue
            if pending.due > now:
                next_due = min(next_due, pending.due)
                continue
            pending.consumer = consumer
            pending.deliveries += 1
            pending.delivered_at = now
            self._redelivered += 1
            messages.append(_message(state.entries[index], pending.deliveries))
        while len(messages) < count and group_state.cursor < len(state.entries):
            index = group_state.cursor
            group_state.cursor += 1
            group_state.pending[index] = _Pending(consumer, 1, now)
            messages.append(_message(state.entries[index], 1))
        self._delivered += len(messages)
        return messages, next_due

    def _pending(self, group: str, message: Message) -> tuple[_Group, int] | None:
        group_state = self._state().groups.get(group)
        if group_state is None or not message.id.isdigit():
            return None
        index = int(message.id) - 1
        if index not in group_state.pending:
            return None
        return group_state, index

    async def ack(self, group: str, message: Message) -> None:
        """Mark ``message`` processed by ``group`` (acking it again does nothing).

        Args:
            group: the consumer group.
            message: a message delivered to the group.

        Raises:
            RuntimeError: the backend is closed.
        """
        found = self._pending(group, message)
        if found is not None:
            group_state, index = found
            del group_state.pending[index]
            self._acked += 1

    async def ack_many(self, group: str, messages: Sequence[Message]) -> None:
        """Ack each of ``messages`` (what ``ack`` does, for several at once).

        Args:
            group: the consumer group.
            messages: messages delivered to the group.

        Raises:
            RuntimeError: the backend is closed.
        """
        self._state()  # closed or not, even with nothing to ack
        for message in messages:
            await self.ack(group, message)

    async def nack(self, group: str, message: Message, *, delay_s: float = 0.0) -> None:
        """Give ``message`` back to ``group``, to be delivered again after ``delay_s``.

        Args:
            group: the consumer group.
            message: a message delivered to the group and not acked.
            delay_s: seconds before the message may be delivered again.

        Raises:
            RuntimeError: the backend is closed.
        """
        found = self._pending(group, message)
        if found is None:
            return
        group_state, index = found
        pending = group_state.pending[index]
        if pending.consumer is None or pending.deliveries != message.deliveries:
            return  # already given back, or claimed by another consumer since
        pending.consumer = None
        pending.due = asyncio.get_running_loop().time() + max(delay_s, 0.0)
        if delay_s <= 0:
            self._state().wake()

    async def claim_stale(
        self, group: str, consumer: str, *, idle_ms: int, count: int = 16
    ) -> list[Message]:
        """Deliver to ``consumer`` the messages that other consumers of ``group`` have held
        unacked for at least ``idle_ms``.

        Args:
            group: the consumer group.
            consumer: the consumer taking the messages over.
            idle_ms: how long since their last delivery messages must have been held.
            count: the most messages to take.

        Returns:
            The claimed messages, their delivery counts incremented.

        Raises:
            RuntimeError: the backend is closed.
        """
        state = self._state()
        group_state = state.groups.get(group)
        if group_state is None:
            return []
        now = asyncio.get_running_loop().time()
        oldest = now - idle_ms / 1000
        claimed: list[Message] = []
        for index, pending in group_state.pending.items():
            if len(claimed) >= count:
                break
            if pending.consumer in (None, consumer) or pending.delivered_at > oldest:
                continue
            pending.consumer = consumer
            pending.deliveries += 1
            pending.delivered_at = now
            claimed.append(_message(state.entries[index], pending.deliveries))
        self._delivered += len(claimed)
        self._redelivered += len(claimed)
        return claimed

    async def ping(self) -> None:
        self._state()  # raises when closed; the in-process broker is always there

    def statistics(self) -> BackendStatistics:
        """This backend's counters; ``pending`` counts the stream's unacked messages."""
        return BackendStatistics(
            published=self._published,
            delivered=self._delivered,
            acked=self._acked,
            redelivered=self._redelivered,
            pending=self._broker.pending(self.stream),
        )

    async def aclose(self) -> None:
        """Close the backend: blocked ``consume`` calls return ``[]``. Idempotent."""
        self._closed = True
        for waiter in self._waiters:
            waiter.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _message(entry: _Entry, deliveries: int) -> Message:
    return Message(
        id=entry.id,
        event_id=entry.event_id,
        body=entry.body,
        headers=entry.headers,
        key=entry.key,
        deliveries=deliveries,
    )
