"""The conformance suite that every ``QueueBackend`` must pass (STYLE §32).

Each check is a plain coroutine function taking a :data:`BackendFactory`. It opens one or
more backends on a fresh stream (``sg-conformance-<uuid>``), raises ``AssertionError`` with
a clear message when the backend misbehaves, finishes within 10 seconds (a hang is reported
as an ``AssertionError`` naming the step it was waiting on), and acks what it consumed.

Run them from a test, for example parametrised over :data:`CHECKS`::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    def test_conformance(check: Callable[[BackendFactory], Awaitable[None]]) -> None:
        asyncio.run(check(factory))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from servegraph.streams.base import Message, QueueBackend

__all__ = [
    "CHECKS",
    "BackendFactory",
    "check_ack_many",
    "check_aclose_is_idempotent",
    "check_claim_stale",
    "check_consume_empty_waits_block_ms",
    "check_consumer_group_sharing",
    "check_groups_each_get_every_message",
    "check_nack_delay",
    "check_order_per_key",
    "check_publish_consume",
    "check_redelivery_after_nack_not_after_ack",
    "check_statistics",
]

BackendFactory = Callable[[str], AbstractAsyncContextManager[QueueBackend]]
"""Makes a fresh backend on the stream named by its argument (a unique name per check)."""

_TIME_LIMIT_S = 10.0
_POLL_BLOCK_MS = 200
"""``block_ms`` of the consume calls that poll for messages expected to arrive."""


class _Progress:
    """What a check is doing, so that a timeout says where it hung."""

    def __init__(self, check: str) -> None:
        self.check = check
        self.step = "starting"


@asynccontextmanager
async def _bounded(check: str) -> AsyncIterator[_Progress]:
    """Run a check's body within ``_TIME_LIMIT_S``, reporting a hang as an AssertionError."""
    progress = _Progress(check)
    try:
        async with asyncio.timeout(_TIME_LIMIT_S):
            yield progress
    except TimeoutError as exc:
        msg = f"{check}: timed out after {_TIME_LIMIT_S:g} s while {progress.step}"
        raise AssertionError(msg) from exc


def _stream_name() -> str:
    return f"sg-conformance-{uuid.uuid4().hex}"


async def _collect(
    backend: QueueBackend, group: str, consumer: str, n: int, *, count: int = 16
) -> list[Message]:
    """Consume until at least ``n`` messages came (the caller's timeout bounds the wait)."""
    got: list[Message] = []
    while len(got) < n:
        got.extend(await backend.consume(group, consumer, count=count, block_ms=_POLL_BLOCK_MS))
    return got


async def _expect_nothing(
    backend: QueueBackend, group: str, consumer: str, *, block_ms: int, why: str
) -> None:
    got = await backend.consume(group, consumer, count=16, block_ms=block_ms)
    assert got == [], f"{why}, but consume returned {_describe(got)}"


async def _ack_all(backend: QueueBackend, group: str, messages: Sequence[Message]) -> None:
    for message in messages:
        await backend.ack(group, message)


def _describe(messages: Sequence[Message]) -> str:
    return "[" + ", ".join(f"{m.event_id}(deliveries={m.deliveries})" for m in messages) + "]"


async def check_publish_consume(factory: BackendFactory) -> None:
    """A published message is consumed with its id, body, event id, headers and key."""
    async with _bounded("check_publish_consume") as progress, factory(_stream_name()) as backend:
        headers = {"traceparent": "00-abc-def-01", "content-type": "application/json"}
        progress.step = "publishing"
        message_id = await backend.publish(
            b'{"x": 1}', event_id="ev-1", key="user-7", headers=headers
        )
        assert isinstance(message_id, str), f"publish returned {message_id!r}, not a str id"
        progress.step = "consuming the published message"
        got = await _collect(backend, "g", "c1", 1)
        assert len(got) == 1, f"expected 1 message, got {_describe(got)}"
        message = got[0]
        assert message.id == message_id, f"id {message.id!r} != published id {message_id!r}"
        assert message.event_id == "ev-1", f"event_id {message.event_id!r} != 'ev-1'"
        assert message.body == b'{"x": 1}', f"body {message.body!r} != published body"
        assert dict(message.headers) == headers, f"headers {dict(message.headers)} != {headers}"
        assert message.key == "user-7", f"key {message.key!r} != 'user-7'"
        assert message.deliveries == 1, f"first delivery has deliveries={message.deliveries}"
        progress.step = "acking"
        await backend.ack("g", message)
        # A message without key or headers comes back with key None and empty headers.
        await backend.publish(b"", event_id="ev-2")
        progress.step = "consuming a message without key or headers"
        (bare,) = await _collect(backend, "g", "c1", 1)
        assert bare.event_id == "ev-2", f"expected ev-2, got {bare.event_id!r}"
        assert bare.body == b"", f"empty body came back as {bare.body!r}"
        assert bare.key is None, f"message published without key has key {bare.key!r}"
        assert dict(bare.headers) == {}, f"message without headers has {dict(bare.headers)}"
        await backend.ack("g", bare)


async def check_redelivery_after_nack_not_after_ack(factory: BackendFactory) -> None:
    """A nacked message comes back (deliveries 2); once acked it does not come back."""
    check = "check_redelivery_after_nack_not_after_ack"
    async with _bounded(check) as progress, factory(_stream_name()) as backend:
        await backend.publish(b"payload", event_id="ev-1")
        progress.step = "consuming the first delivery"
        (first,) = await _collect(backend, "g", "c1", 1)
        assert first.deliveries == 1, f"first delivery has deliveries={first.deliveries}"
        await backend.nack("g", first)
        progress.step = "waiting for the redelivery after nack"
        (second,) = await _collect(backend, "g", "c1", 1)
        assert second.event_id == "ev-1", f"redelivered {second.event_id!r}, expected ev-1"
        assert second.body == b"payload", f"redelivered body {second.body!r} != b'payload'"
        assert second.deliveries == 2, f"redelivery has deliveries={second.deliveries}, not 2"
        await backend.ack("g", second)
        progress.step = "checking that the acked message does not come back"
        await _expect_nothing(
            backend, "g", "c1", block_ms=300, why="the message was acked after its redelivery"
        )
        claimed = await backend.claim_stale("g", "c2", idle_ms=0)
        assert claimed == [], f"claim_stale took acked messages {_describe(claimed)}"


async def check_nack_delay(factory: BackendFactory) -> None:
    """``nack(delay_s=0.3)`` holds the message back for about 0.3 s."""
    loop = asyncio.get_running_loop()
    async with _bounded("check_nack_delay") as progress, factory(_stream_name()) as backend:
        await backend.publish(b"later", event_id="ev-1")
        progress.step = "consuming the first delivery"
        (first,) = await _collect(backend, "g", "c1", 1)
        started = loop.time()
        await backend.nack("g", first, delay_s=0.3)
        progress.step = "checking that the delayed message is not redelivered at once"
        await _expect_nothing(
            backend, "g", "c1", block_ms=100, why="the message was nacked with delay_s=0.3"
        )
        progress.step = "waiting for the delayed redelivery"
        (second,) = await _collect(backend, "g", "c1", 1)
        waited = loop.time() - started
        assert waited >= 0.25, f"nack(delay_s=0.3) redelivered after only {waited:.3f} s"
        assert second.event_id == "ev-1", f"redelivered {second.event_id!r}, expected ev-1"
        assert second.deliveries == 2, f"redelivery has deliveries={second.deliveries}, not 2"
        await backend.ack("g", second)


async def check_consumer_group_sharing(factory: BackendFactory) -> None:
    """Two consumers of one group (on separate backends) share the messages: each message
    goes to exactly one of them and all are delivered."""
    stream = _stream_name()
    total = 10
    async with (
        _bounded("check_consumer_group_sharing") as progress,
        factory(stream) as publisher,
        factory(stream) as backend_a,
        factory(stream) as backend_b,
    ):
        for i in range(total):
            await publisher.publish(f"m{i}".encode(), event_id=f"ev-{i}")
        seen: dict[str, list[str]] = {"a": [], "b": []}
        consumers = (("a", backend_a), ("b", backend_b))
        progress.step = f"consuming {total} messages with two consumers, 2 at a time"
        while len(seen["a"]) + len(seen["b"]) < total:
            for name, backend in consumers:
                batch = await backend.consume("g", name, count=2, block_ms=_POLL_BLOCK_MS)
                assert len(batch) <= 2, f"consume(count=2) returned {len(batch)} messages"
                seen[name].extend(m.event_id for m in batch)
                await _ack_all(backend, "g", batch)
        both = seen["a"] + seen["b"]
        assert sorted(both) == sorted(f"ev-{i}" for i in range(total)), (
            f"the group's consumers got {sorted(both)}, expected each of ev-0..ev-{total - 1} "
            "exactly once"
        )
        assert seen["a"], f"consumer b got every message, a none: {seen}"
        assert seen["b"], f"consumer a got every message, b none: {seen}"
        progress.step = "checking that nothing more is delivered"
        await _expect_nothing(
            backend_a, "g", "a", block_ms=100, why="every message was acked by the group"
        )


async def check_groups_each_get_every_message(factory: BackendFactory) -> None:
    """Two consumer groups on one stream each get every message."""
    total = 5
    async with (
        _bounded("check_groups_each_get_every_message") as progress,
        factory(_stream_name()) as backend,
    ):
        for i in range(total):
            await backend.publish(f"m{i}".encode(), event_id=f"ev-{i}")
        expected = [f"ev-{i}" for i in range(total)]
        for group in ("g1", "g2"):
            progress.step = f"consuming {total} messages in group {group}"
            got = await _collect(backend, group, "c", total)
            ids = sorted(m.event_id for m in got)
            assert ids == expected, f"group {group} got {ids}, expected {expected}"
            await _ack_all(backend, group, got)


async def check_order_per_key(factory: BackendFactory) -> None:
    """One consumer gets the messages of each key in publish order."""
    total = 20
    keys = ("k0", "k1", "k2")
    async with _bounded("check_order_per_key") as progress, factory(_stream_name()) as backend:
        for i in range(total):
            await backend.publish(str(i).encode(), event_id=f"ev-{i}", key=keys[i % 3])
        progress.step = f"consuming {total} messages, 5 at a time"
        got = await _collect(backend, "g", "c", total, count=5)
        assert len(got) == total, f"expected {total} messages, got {_describe(got)}"
        for key in keys:
            order = [int(m.body) for m in got if m.key == key]
            expected = [i for i in range(total) if keys[i % 3] == key]
            assert order == expected, f"key {key}: delivered in order {order}, expected {expected}"
        await _ack_all(backend, "g", got)


async def check_claim_stale(factory: BackendFactory) -> None:
    """A message delivered to a consumer that never acks goes to another consumer through
    ``claim_stale`` once it has been idle for ``idle_ms``."""
    stream = _stream_name()
    loop = asyncio.get_running_loop()
    async with (
        _bounded("check_claim_stale") as progress,
        factory(stream) as dead,
        factory(stream) as alive,
    ):
        await dead.publish(b"orphan", event_id="ev-1")
        progress.step = "consuming with the consumer that will never ack"
        (first,) = await _collect(dead, "g", "dead", 1)
        delivered_at = loop.time()
        fresh = await alive.claim_stale("g", "alive", idle_ms=5000)
        assert fresh == [], f"claim_stale(idle_ms=5000) took fresh messages {_describe(fresh)}"
        progress.step = "claiming the stale message with another consumer"
        claimed: list[Message] = []
        while not claimed:
            await asyncio.sleep(0.05)
            claimed = await alive.claim_stale("g", "alive", idle_ms=200)
        idle = loop.time() - delivered_at
        assert idle >= 0.15, f"claim_stale(idle_ms=200) took a message idle for {idle:.3f} s"
        assert [m.event_id for m in claimed] == ["ev-1"], f"claimed {_describe(claimed)}"
        (message,) = claimed
        assert message.body == b"orphan", f"claimed body {message.body!r} != b'orphan'"
        assert message.deliveries == first.deliveries + 1, (
            f"claimed message has deliveries={message.deliveries}, expected {first.deliveries + 1}"
        )
        await alive.ack("g", message)
        again = await alive.claim_stale("g", "other", idle_ms=0)
        assert again == [], f"claim_stale took acked messages {_describe(again)}"


async def check_consume_empty_waits_block_ms(factory: BackendFactory) -> None:
    """``consume`` with nothing waiting returns ``[]`` after about ``block_ms``."""
    loop = asyncio.get_running_loop()
    async with (
        _bounded("check_consume_empty_waits_block_ms") as progress,
        factory(_stream_name()) as backend,
    ):
        progress.step = "consuming from an empty stream with block_ms=300"
        started = loop.time()
        got = await backend.consume("g", "c", block_ms=300)
        waited = loop.time() - started
        assert got == [], f"empty stream returned {_describe(got)}"
        assert 0.2 <= waited <= 3.0, f"consume(block_ms=300) returned after {waited:.3f} s"


async def check_statistics(factory: BackendFactory) -> None:
    """``statistics()`` counts what this backend published, delivered and acked."""
    async with _bounded("check_statistics") as progress, factory(_stream_name()) as backend:
        before = backend.statistics()
        assert (before.published, before.acked) == (0, 0), f"fresh backend has {before}"
        for i in range(3):
            await backend.publish(b"x", event_id=f"ev-{i}")
        after_publish = backend.statistics()
        assert after_publish.published == 3, f"published 3 messages, statistics: {after_publish}"
        progress.step = "consuming 3 messages"
        got = await _collect(backend, "g", "c", 3)
        await _ack_all(backend, "g", got[:2])
        stats = backend.statistics()
        assert stats.published == 3, f"published 3 messages, statistics: {stats}"
        assert stats.delivered >= 3, f"delivered 3 messages, statistics: {stats}"
        assert stats.acked == 2, f"acked 2 messages, statistics: {stats}"
        await backend.ack("g", got[2])
        assert backend.statistics().acked == 3, f"acked 3, statistics: {backend.statistics()}"


async def check_ack_many(factory: BackendFactory) -> None:
    """``ack_many`` acks every message it is given, and only those: they do not come back,
    the others do once nacked, and acking again (or nothing) changes nothing."""
    total = 6
    async with _bounded("check_ack_many") as progress, factory(_stream_name()) as backend:
        for i in range(total):
            await backend.publish(f"m{i}".encode(), event_id=f"ev-{i}")
        progress.step = f"consuming {total} messages"
        got = await _collect(backend, "g", "c", total)
        assert len(got) == total, f"expected {total} messages, got {_describe(got)}"
        await backend.ack_many("g", [])
        assert backend.statistics().acked == 0, f"ack_many([]) acked: {backend.statistics()}"
        acked, kept = got[:4], got[4:]
        await backend.ack_many("g", acked)
        stats = backend.statistics()
        assert stats.acked == len(acked), f"ack_many of {len(acked)} messages: {stats}"
        await backend.ack_many("g", acked[:2])
        again = backend.statistics().acked
        assert again == len(acked), f"acking twice counted again: acked={again}"
        for message in kept:
            await backend.nack("g", message)
        progress.step = "waiting for the nacked messages only"
        back = await _collect(backend, "g", "c", len(kept))
        expected = sorted(m.event_id for m in kept)
        assert sorted(m.event_id for m in back) == expected, (
            f"after ack_many of {_describe(acked)} and nack of the rest, "
            f"consume returned {_describe(back)}, expected {expected}"
        )
        await backend.ack_many("g", back)
        assert backend.statistics().acked == total, f"acked all: {backend.statistics()}"
        progress.step = "checking that nothing more is delivered"
        await _expect_nothing(backend, "g", "c", block_ms=300, why="every message was acked")
        claimed = await backend.claim_stale("g", "other", idle_ms=0)
        assert claimed == [], f"claim_stale took acked messages {_describe(claimed)}"


async def check_aclose_is_idempotent(factory: BackendFactory) -> None:
    """``aclose()`` may be called twice (and again on leaving the ``async with``)."""
    async with (
        _bounded("check_aclose_is_idempotent") as progress,
        factory(_stream_name()) as backend,
    ):
        await backend.publish(b"x", event_id="ev-1")
        progress.step = "closing twice"
        await backend.aclose()
        await backend.aclose()


CHECKS: tuple[Callable[[BackendFactory], Awaitable[None]], ...] = (
    check_publish_consume,
    check_redelivery_after_nack_not_after_ack,
    check_nack_delay,
    check_consumer_group_sharing,
    check_groups_each_get_every_message,
    check_order_per_key,
    check_claim_stale,
    check_consume_empty_waits_block_ms,
    check_statistics,
    check_ack_many,
    check_aclose_is_idempotent,
)
"""Every check, in a stable order (use ``check.__name__`` as the test id)."""


def run_check(check: Callable[[BackendFactory], Awaitable[None]], factory: BackendFactory) -> None:
    """Run one check to completion on a new event loop (what a test of a backend calls)."""

    async def checked() -> None:
        await check(factory)

    asyncio.run(checked())
