"""The queue backend interface: publish, consume in a consumer group, ack, retry, claim, close.

Every backend (``memory``, ``redis``, ``nats``) implements ``QueueBackend`` and passes the
conformance suite in ``servegraph.streams.conformance``: at-least-once delivery, ack and
redelivery, consumer groups sharing a stream, order per key, idempotent ``aclose``.
Messages carry bytes and a few string headers; turning events into messages (the envelope,
with the event id that sinks de-duplicate on) is the stream runtime's job, not the backend's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery of a message from a stream.

    Args:
        id: the backend's id of the message (what ``ack`` and ``nack`` take).
        event_id: the id of the event it carries, the same on every delivery and every hop.
        body: the payload.
        headers: string headers published with it (trace context, content type...).
        key: the ordering key (messages with one key are delivered in order to one consumer).
        deliveries: 1 on the first delivery, then counting redeliveries.
    """

    id: str
    event_id: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class BackendStatistics:
    """A backend's counters, as seen by this process."""

    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    pending: int = 0


class QueueBackend(Protocol):
    """A stream of messages consumed in consumer groups, at least once.

    A consumer group shares the stream's messages among its consumers: each message goes to
    one consumer of the group, and comes back (to that group) until it is acked. Every method
    is async and safe to call from many tasks of one event loop.
    """

    stream: str
    """The stream (topic, subject) this backend publishes to and consumes from."""

    async def publish(
        self,
        body: bytes,
        *,
        event_id: str,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Append a message durably and return its id (once it returns, it is not lost)."""
        ...

    async def consume(
        self, group: str, consumer: str, *, count: int = 16, block_ms: int = 1000
    ) -> list[Message]:
        """Up to ``count`` new messages for ``consumer`` of ``group``, waiting up to
        ``block_ms`` for the first; the group is created on first use (from the stream's
        start)."""
        ...

    async def ack(self, group: str, message: Message) -> None:
        """Mark ``message`` processed by ``group``: it is not delivered to the group again."""
        ...

    async def ack_many(self, group: str, messages: Sequence[Message]) -> None:
        """Ack several messages of ``group`` in one round trip where the broker allows: the
        same as ``ack`` of each in turn (acking a message again does nothing)."""
        ...

    async def nack(self, group: str, message: Message, *, delay_s: float = 0.0) -> None:
        """Give ``message`` back to ``group`` for another delivery, after ``delay_s``."""
        ...

    async def claim_stale(
        self, group: str, consumer: str, *, idle_ms: int, count: int = 16
    ) -> list[Message]:
        """Take over messages delivered to other consumers of ``group`` but not acked for
        ``idle_ms`` (their consumer died): they are delivered to ``consumer`` again."""
        ...

    async def ping(self) -> None:
        """Reach the broker (connecting if need be); raise BackendError naming it if it cannot
        be reached."""
        ...

    def statistics(self) -> BackendStatistics:
        """This process's counters."""
        ...

    async def aclose(self) -> None:
        """Release connections; calling it again does nothing."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *_: object) -> None: ...
