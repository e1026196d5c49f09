"""The memory backend passes the conformance suite, plus its own behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from servegraph.streams.base import QueueBackend
from servegraph.streams.conformance import CHECKS, BackendFactory, run_check
from servegraph.streams.memory import MemoryBackend, MemoryBroker, default_broker


@asynccontextmanager
async def memory_factory(stream: str) -> AsyncIterator[QueueBackend]:
    """A backend on the default broker (so backends of one check share the stream)."""
    async with MemoryBackend(stream) as backend:
        yield backend
    default_broker().delete(stream)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_conformance(check: Callable[[BackendFactory], Awaitable[None]]) -> None:
    run_check(check, memory_factory)


def test_memory_backend_is_a_queue_backend() -> None:
    backend: QueueBackend = MemoryBackend("s", broker=MemoryBroker())
    assert backend.stream == "s"


def test_backends_made_separately_share_the_default_broker() -> None:
    async def run() -> list[bytes]:
        async with MemoryBackend("shared-default") as publisher:
            await publisher.publish(b"hi", event_id="ev-1")
        async with MemoryBackend("shared-default") as consumer:
            messages = await consumer.consume("g", "c", block_ms=0)
        default_broker().delete("shared-default")
        return [m.body for m in messages]

    assert asyncio.run(run()) == [b"hi"]


def test_separate_brokers_are_isolated() -> None:
    async def run() -> list[bytes]:
        async with MemoryBackend("s", broker=MemoryBroker()) as publisher:
            await publisher.publish(b"hi", event_id="ev-1")
        async with MemoryBackend("s", broker=MemoryBroker()) as consumer:
            messages = await consumer.consume("g", "c", block_ms=0)
        return [m.body for m in messages]

    assert asyncio.run(run()) == []


def test_consume_wakes_on_publish_before_block_ms() -> None:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        broker = MemoryBroker()
        async with MemoryBackend("s", broker=broker) as backend:
            started = loop.time()
            async with asyncio.TaskGroup() as tasks:
                consumed = tasks.create_task(backend.consume("g", "c", block_ms=5000))
                await asyncio.sleep(0)
                await backend.publish(b"x", event_id="ev-1")
            assert [m.event_id for m in consumed.result()] == ["ev-1"]
            return loop.time() - started

    assert asyncio.run(run()) < 1.0


def test_aclose_releases_a_blocked_consume() -> None:
    async def run() -> list[object]:
        backend = MemoryBackend("s", broker=MemoryBroker())
        async with asyncio.TaskGroup() as tasks:
            consumed = tasks.create_task(backend.consume("g", "c", block_ms=5000))
            await asyncio.sleep(0)
            await backend.aclose()
        return list(consumed.result())

    assert asyncio.run(run()) == []


def test_closed_backend_refuses_operations() -> None:
    async def run() -> None:
        backend = MemoryBackend("s", broker=MemoryBroker())
        await backend.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await backend.publish(b"x", event_id="ev-1")

    asyncio.run(run())


def test_consume_respects_count_and_statistics_count_pending() -> None:
    async def run() -> None:
        broker = MemoryBroker()
        async with MemoryBackend("s", broker=broker) as backend:
            for i in range(5):
                await backend.publish(b"x", event_id=f"ev-{i}")
            first = await backend.consume("g", "c", count=2, block_ms=0)
            assert [m.event_id for m in first] == ["ev-0", "ev-1"]
            assert backend.statistics().pending == 2
            await backend.ack("g", first[0])
            await backend.ack("g", first[0])  # acking twice counts once
            stats = backend.statistics()
            assert (stats.acked, stats.pending, stats.delivered) == (1, 1, 2)
            assert broker.streams() == ["s"]

    asyncio.run(run())


def test_stale_nack_after_claim_is_ignored() -> None:
    async def run() -> None:
        async with MemoryBackend("s", broker=MemoryBroker()) as backend:
            await backend.publish(b"x", event_id="ev-1")
            (old,) = await backend.consume("g", "a", block_ms=0)
            (claimed,) = await backend.claim_stale("g", "b", idle_ms=0)
            await backend.nack("g", old)  # a's copy is out of date: b holds it now
            assert await backend.consume("g", "a", block_ms=0) == []
            assert claimed.deliveries == 2
            assert backend.statistics().redelivered == 1

    asyncio.run(run())
