"""A queue backend on NATS JetStream.

One JetStream stream per servegraph stream (its name sanitised, since stream names cannot
contain ``.``, ``*``, ``>`` or whitespace) capturing the subject ``stream``; one durable pull
consumer per consumer group. The event id travels in ``Nats-Msg-Id``, so the server drops a
republished event within the stream's duplicate window; the ordering key travels in the
``Servegraph-Key`` header.

``claim_stale`` and JetStream: JetStream has no ``XCLAIM``. The server itself redelivers a
message left unacked for the consumer's ``ack_wait`` (``ack_wait_s``, set when the group's
consumer is created), to whichever consumer of the group fetches next. So ``claim_stale``
does the closest correct thing:

1. messages this process delivered to *another* consumer of the group, unacked for at least
   ``idle_ms``, are given back with an immediate ``nak`` (the server redelivers them now,
   counting the delivery, instead of after ``ack_wait``);
2. it then fetches, and returns the redelivered messages (``deliveries > 1``); new messages
   fetched along the way are kept for the group's next ``consume``, never lost.

Messages held by a consumer that died in another process come back after ``ack_wait_s``,
through ``consume`` or ``claim_stale`` alike: set ``ack_wait_s`` to the idle threshold you
want for crashed processes.

A lost connection (the server restarted, the network dropped) is not repaired by nats-py
here (``allow_reconnect=False``, so that an unreachable server fails at once): the calls made
while it is down raise a retryable ``BackendError``, and the next call after it closed drops
the dead client with its pull subscriptions and the deliveries it held, then connects again.
The durable consumers live on the server, so nothing is lost: the deliveries that were never
acked come back after ``ack_wait_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

from servegraph.errors import BackendError, MissingDependencyError
from servegraph.streams.base import BackendStatistics, Message

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js import api as js_api
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    module = "nats-py"
    raise MissingDependencyError(module, "nats") from exc

__all__ = ["NatsBackend"]

MSG_ID_HEADER = "Nats-Msg-Id"
KEY_HEADER = "Servegraph-Key"
_RESERVED = frozenset({MSG_ID_HEADER, KEY_HEADER})
_INVALID = re.compile(r"[.*>\s/\\]")
_BAD_SUBJECT = re.compile(r"[*>\s]")

_RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)


def sanitise(name: str) -> str:
    """A valid JetStream stream or consumer name for ``name``.

    Invalid characters become ``_``; when anything changed, a short hash of the original is
    appended so that distinct names stay distinct.
    """
    clean = _INVALID.sub("_", name)
    if clean == name and clean:
        return clean
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{clean}_{digest}"


@contextmanager
def _nats_errors(action: str) -> Iterator[None]:
    """Turn NATS (and socket) errors raised inside into ``BackendError``."""
    try:
        yield
    except BackendError:
        raise
    except _RETRYABLE as exc:
        message = f"NATS {action} failed: {type(exc).__name__}: {exc}"
        raise BackendError(message, retryable=True) from exc
    except nats.errors.Error as exc:
        message = f"NATS {action} failed: {type(exc).__name__}: {exc}"
        raise BackendError(message, retryable=False) from exc


@dataclass(slots=True)
class _InFlight:
    """A delivery this process holds: the nats message (to ack or nak) and who has it."""

    msg: Any
    consumer: str
    delivered_at: float


class _Group:
    """One consumer group: its durable consumer, per-consumer pull subscriptions, in-flight."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscriptions: dict[str, Any] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.in_flight: dict[str, _InFlight] = {}
        self.buffer: deque[Any] = deque()
        """Messages fetched by ``claim_stale`` that were not redeliveries: ``consume`` first."""


class NatsBackend:
    """A ``QueueBackend`` on NATS JetStream (see the module docstring for ``claim_stale``).

    Args:
        stream: the servegraph stream; the JetStream stream is named after it (sanitised)
            and captures the subject ``stream``.
        url: the NATS server, when this backend opens its own connection.
        ack_wait_s: how long the server waits for an ack before redelivering a message.
        max_deliver: how many times the server delivers a message at most (-1: no limit).
        client: an already-connected ``nats.aio.client.Client`` to use; it is not closed by
            ``aclose``.
    """

    def __init__(
        self,
        stream: str,
        *,
        url: str = "nats://127.0.0.1:4222",
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
        client: Any = None,
    ) -> None:
        if not stream or _BAD_SUBJECT.search(stream) or "" in stream.split("."):
            # dots separate subject tokens; wildcards and whitespace cannot be published to
            message = f"invalid NATS subject for stream {stream!r}"
            raise ValueError(message)
        self.stream = stream
        self.stream_name = sanitise(stream)
        self.subject = stream
        self.url = url
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self._nc: Any = client
        self._owned = client is None
        self._js: Any = None
        self._closed = False
        self._setup_lock = asyncio.Lock()
        self._groups: dict[str, _Group] = {}
        self._published = 0
        self._delivered = 0
        self._acked = 0
        self._redelivered = 0

    # -- connection and topology ---------------------------------------------------------

    async def _jetstream(self) -> Any:
        if self._closed:
            message = f"NATS backend for stream {self.stream!r} is closed"
            raise BackendError(message, retryable=False)
        if self._js is not None and not self._is_lost():
            return self._js
        async with self._setup_lock:
            if self._is_lost():
                self._forget_connection()
            return await self._connect()

    def _is_lost(self) -> bool:
        """The connection this backend opened has closed (not by ``aclose``)."""
        return self._owned and self._nc is not None and self._nc.is_closed

    def _forget_connection(self) -> None:
        """Drop a closed client, its subscriptions and what was delivered through it (acks
        can no longer reach the server: it redelivers those after ``ack_wait_s``)."""
        self._nc = None
        self._js = None
        for state in self._groups.values():
            state.subscriptions.clear()
            state.in_flight.clear()
            state.buffer.clear()

    async def _connect(self) -> Any:
        """Connect and create the stream, unless another task did (under the setup lock)."""
        if self._js is None:
            if self._nc is None:
                with _nats_errors(f"connect to {self.url}"):
                    self._nc = await nats.connect(
                        self.url,
                        allow_reconnect=False,
                        connect_timeout=2,
                        max_reconnect_attempts=1,  # 0 makes nats-py retry forever
                        error_cb=_ignore_error,
                    )
            js = self._nc.jetstream()
            await self._ensure_stream(js)
            self._js = js
        return self._js

    async def _ensure_stream(self, js: Any) -> None:
        with _nats_errors(f"create stream {self.stream_name}"):
            try:
                await js.stream_info(self.stream_name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(name=self.stream_name, subjects=[self.subject])
                except nats.js.errors.BadRequestError:
                    # created concurrently by another process: fine if it exists now
                    await js.stream_info(self.stream_name)

    async def _subscription(self, group: str, consumer: str) -> tuple[_Group, Any]:
        js = await self._jetstream()
        state = self._groups.get(group)
        if state is None:
            state = self._groups.setdefault(group, _Group(sanitise(group)))
        sub = state.subscriptions.get(consumer)
        if sub is not None:
            return state, sub
        async with self._setup_lock:
            sub = state.subscriptions.get(consumer)
            if sub is not None:
                return state, sub
            with _nats_errors(f"create consumer {state.name} on {self.stream_name}"):
                try:
                    await js.consumer_info(self.stream_name, state.name)
                except nats.js.errors.NotFoundError:
                    config = js_api.ConsumerConfig(
                        name=state.name,
                        durable_name=state.name,
                        deliver_policy=js_api.DeliverPolicy.ALL,
                        ack_policy=js_api.AckPolicy.EXPLICIT,
                        ack_wait=self.ack_wait_s,
                        max_deliver=self.max_deliver,
                        filter_subject=self.subject,
                    )
                    await js.add_consumer(self.stream_name, config=config)
                sub = await js.pull_subscribe_bind(durable=state.name, stream=self.stream_name)
            state.subscriptions[consumer] = sub
            state.locks.setdefault(consumer, asyncio.Lock())  # kept across reconnections
            return state, sub

    # -- the QueueBackend interface ------------------------------------------------------

    async def publish(
        self,
        body: bytes,
        *,
        event_id: str,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Append a message (JetStream-acknowledged) and return its stream sequence.

        A republished ``event_id`` within the stream's duplicate window is dropped by the
        server, and the original message's id is returned.
        """
        js = await self._jetstream()
        nats_headers: dict[str, str] = dict(headers or {})
        nats_headers[MSG_ID_HEADER] = event_id
        if key is not None:
            nats_headers[KEY_HEADER] = key
        with _nats_errors(f"publish to {self.subject}"):
            ack = await js.publish(self.subject, body, headers=nats_headers)
        if not ack.duplicate:
            self._published += 1
        return str(ack.seq)

    async def consume(
        self, group: str, consumer: str, *, count: int = 16, block_ms: int = 1000
    ) -> list[Message]:
        """Up to ``count`` messages for ``consumer`` of ``group`` (fetched from its durable
        pull consumer), waiting up to ``block_ms`` for the first; [] when none came."""
        state, sub = await self._subscription(group, consumer)
        msgs: list[Any] = []
        while state.buffer and len(msgs) < count:
            msgs.append(state.buffer.popleft())
        if not msgs:
            msgs = await self._fetch(state, consumer, sub, count, block_ms)
        return [self._deliver(state, consumer, msg) for msg in msgs]

    async def ack(self, group: str, message: Message) -> None:
        """Ack ``message``; acking one this process does not hold (or acked) does nothing."""
        state = self._groups.get(group)
        held = state.in_flight.pop(message.id, None) if state is not None else None
        if held is None:
            return
        with _nats_errors(f"ack {message.id}"):
            await held.msg.ack()
        self._acked += 1

    async def ack_many(self, group: str, messages: Sequence[Message]) -> None:
        """Ack each of ``messages`` this process holds (the others are skipped, as by ``ack``).

        A JetStream ack is a plain publish to the message's reply subject: nats-py buffers it
        and its flusher writes the buffered acks together, with no reply awaited, so acking a
        batch costs no round trip per message.
        """
        state = self._groups.get(group)
        if state is None:
            return
        for message in messages:
            held = state.in_flight.pop(message.id, None)
            if held is None:
                continue
            with _nats_errors(f"ack {message.id}"):
                await held.msg.ack()
            self._acked += 1

    async def nack(self, group: str, message: Message, *, delay_s: float = 0.0) -> None:
        """``nak`` ``message``: the server redelivers it to the group after ``delay_s``."""
        state = self._groups.get(group)
        held = state.in_flight.pop(message.id, None) if state is not None else None
        if held is None:
            return
        with _nats_errors(f"nak {message.id}"):
            await held.msg.nak(delay=delay_s if delay_s > 0 else None)

    async def claim_stale(
        self, group: str, consumer: str, *, idle_ms: int, count: int = 16
    ) -> list[Message]:
        """Redeliver to ``consumer`` messages of ``group`` left unacked for ``idle_ms``.

        Stale messages held by other consumers in this process are ``nak``-ed so that the
        server redelivers them at once; redeliveries (``deliveries > 1``) are then fetched.
        Messages held by dead processes come back after the consumer's ``ack_wait``.
        """
        state, sub = await self._subscription(group, consumer)
        now = time.monotonic()
        stale = [
            (message_id, held)
            for message_id, held in state.in_flight.items()
            if held.consumer != consumer and (now - held.delivered_at) * 1000 >= idle_ms
        ][:count]
        for message_id, held in stale:
            del state.in_flight[message_id]
            with _nats_errors(f"nak {message_id}"):
                await held.msg.nak()
        if not stale and idle_ms > self.ack_wait_s * 1000:
            # the server redelivers after ack_wait, sooner than idle_ms: nothing it
            # redelivers is known to have been idle that long (consume gets those)
            return []
        block_ms = 1000 if stale else 50
        claimed: list[Message] = []
        for msg in await self._fetch(state, consumer, sub, count, block_ms):
            if msg.metadata.num_delivered > 1:
                claimed.append(self._deliver(state, consumer, msg))
            else:
                state.buffer.append(msg)
        return claimed

    async def ping(self) -> None:
        await self._jetstream()  # connects and creates the stream, or raises BackendError

    def statistics(self) -> BackendStatistics:
        """Counters of this process; ``pending`` is the deliveries it holds unacked."""
        pending = sum(len(g.in_flight) + len(g.buffer) for g in self._groups.values())
        return BackendStatistics(
            published=self._published,
            delivered=self._delivered,
            acked=self._acked,
            redelivered=self._redelivered,
            pending=pending,
        )

    async def aclose(self) -> None:
        """Unsubscribe, and close the connection if this backend opened it; idempotent."""
        if self._closed:
            return
        self._closed = True
        groups, self._groups = self._groups, {}
        nc, self._nc = self._nc, None
        if nc is None or nc.is_closed:
            return
        with _nats_errors("close"):
            for state in groups.values():
                for sub in state.subscriptions.values():
                    await sub.unsubscribe()
            if self._owned:
                # Not drain(): with pull subscriptions it waits out its whole timeout (30 s),
                # and a message fetched but not acked is redelivered by the server anyway.
                await nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- helpers -------------------------------------------------------------------------

    async def _fetch(
        self, state: _Group, consumer: str, sub: Any, count: int, block_ms: int
    ) -> list[Any]:
        timeout = max(block_ms, 10) / 1000
        async with state.locks[consumer]:
            with _nats_errors(f"fetch from {state.name}"):
                try:
                    msgs: list[Any] = await sub.fetch(max(count, 1), timeout=timeout)
                except TimeoutError:
                    # nothing came: nats-py raises its TimeoutError, or on some paths
                    # asyncio's (the builtin, which nats.errors.TimeoutError subclasses)
                    return []
        return msgs

    def _deliver(self, state: _Group, consumer: str, msg: Any) -> Message:
        raw: Mapping[str, str] = msg.headers or {}
        metadata = msg.metadata
        message_id = str(metadata.sequence.stream)
        deliveries = int(metadata.num_delivered)
        state.in_flight[message_id] = _InFlight(msg, consumer, time.monotonic())
        self._delivered += 1
        if deliveries > 1:
            self._redelivered += 1
        return Message(
            id=message_id,
            event_id=raw.get(MSG_ID_HEADER, message_id),
            body=bytes(msg.data),
            headers={k: v for k, v in raw.items() if k not in _RESERVED},
            key=raw.get(KEY_HEADER),
            deliveries=deliveries,
        )


async def _ignore_error(_: Exception) -> None:
    """Connection errors surface as ``BackendError`` from the calls; do not log them twice."""
