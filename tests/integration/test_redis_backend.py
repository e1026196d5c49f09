"""RedisBackend against a real Redis: the conformance suite plus Redis-specific behaviour.

The server comes from ``SERVEGRAPH_REDIS_URL`` (default ``redis://127.0.0.1:6379``; CI starts
it with ``scripts/services.sh``). There is no skip: without Redis these tests fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from servegraph.errors import BackendError
from servegraph.streams.base import QueueBackend
from servegraph.streams.conformance import CHECKS, BackendFactory, run_check
from servegraph.streams.redis import PARKING_CONSUMER, RedisBackend

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("SERVEGRAPH_REDIS_URL", "redis://127.0.0.1:6379")


async def _delete_streams(*streams: str) -> None:
    """Delete the test streams and their retry sets."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for stream in streams:
            keys = [key async for key in client.scan_iter(match=f"{stream}:retry:*")]
            await client.delete(stream, *keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="module", autouse=True)
def _redis_is_up() -> None:
    """Fail (never skip) with a clear message when Redis is not reachable."""

    async def ping() -> None:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except redis_exceptions.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with scripts/services.sh "
            "or point SERVEGRAPH_REDIS_URL at a server",
            pytrace=False,
        )


@asynccontextmanager
async def redis_factory(stream: str) -> AsyncIterator[QueueBackend]:
    try:
        async with RedisBackend(stream, url=REDIS_URL) as backend:
            yield backend
    finally:
        await _delete_streams(stream)


def _unique(prefix: str) -> str:
    return f"sg-test-{prefix}-{uuid.uuid4().hex}"


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_conformance(check: Callable[[BackendFactory], Awaitable[None]]) -> None:
    run_check(check, redis_factory)


def test_maxlen_trims_the_stream_approximately() -> None:
    async def run() -> int:
        stream = _unique("maxlen")
        try:
            async with RedisBackend(stream, url=REDIS_URL, maxlen=50) as backend:
                for i in range(1000):
                    await backend.publish(b"x", event_id=f"ev-{i}")
                client = aioredis.Redis.from_url(REDIS_URL)
                try:
                    return int(await client.xlen(stream))
                finally:
                    await client.aclose()
        finally:
            await _delete_streams(stream)

    length = asyncio.run(run())
    # Approximate trimming drops whole radix-tree nodes (100 entries by default).
    assert 50 <= length <= 250, f"maxlen=50 left {length} of 1000 entries"


def test_no_maxlen_keeps_everything() -> None:
    async def run() -> int:
        stream = _unique("nomaxlen")
        try:
            async with RedisBackend(stream, url=REDIS_URL, maxlen=None) as backend:
                for i in range(300):
                    await backend.publish(b"x", event_id=f"ev-{i}")
                client = aioredis.Redis.from_url(REDIS_URL)
                try:
                    return int(await client.xlen(stream))
                finally:
                    await client.aclose()
        finally:
            await _delete_streams(stream)

    assert asyncio.run(run()) == 300


def test_connection_error_is_retryable_backend_error() -> None:
    async def run() -> None:
        # Port 1 is closed: connecting is refused at once.
        async with RedisBackend(_unique("down"), url="redis://127.0.0.1:1") as backend:
            await backend.publish(b"x", event_id="ev-1")

    with pytest.raises(BackendError) as info:
        asyncio.run(run())
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, redis_exceptions.ConnectionError)


def test_group_created_later_sees_earlier_messages() -> None:
    async def run() -> list[str]:
        stream = _unique("late-group")
        try:
            async with RedisBackend(stream, url=REDIS_URL) as backend:
                for i in range(3):
                    await backend.publish(b"x", event_id=f"ev-{i}")
                got = await backend.consume("late", "c", count=10, block_ms=100)
                for message in got:
                    await backend.ack("late", message)
                return [m.event_id for m in got]
        finally:
            await _delete_streams(stream)

    assert asyncio.run(run()) == ["ev-0", "ev-1", "ev-2"]


def test_parked_message_is_not_claimed_before_it_is_due() -> None:
    async def run() -> None:
        stream = _unique("parked")
        try:
            async with RedisBackend(stream, url=REDIS_URL) as backend:
                await backend.publish(b"x", event_id="ev-1")
                (first,) = await backend.consume("g", "c1", block_ms=100)
                await backend.nack("g", first, delay_s=5.0)
                await asyncio.sleep(0.05)
                stolen = await backend.claim_stale("g", "c2", idle_ms=0)
                assert stolen == [], f"claim_stale took a parked message: {stolen}"
                client = aioredis.Redis.from_url(REDIS_URL)
                try:
                    rows = await client.xpending_range(stream, "g", "-", "+", 10)
                finally:
                    await client.aclose()
                assert [row["consumer"] for row in rows] == [PARKING_CONSUMER.encode()]
        finally:
            await _delete_streams(stream)

    asyncio.run(run())


def test_due_retry_goes_to_exactly_one_consumer() -> None:
    async def run() -> None:
        stream = _unique("race")
        try:
            async with (
                RedisBackend(stream, url=REDIS_URL) as one,
                RedisBackend(stream, url=REDIS_URL) as two,
            ):
                await one.publish(b"x", event_id="ev-1")
                (first,) = await one.consume("g", "c1", block_ms=100)
                await one.nack("g", first, delay_s=0.1)
                async with asyncio.TaskGroup() as group:
                    a = group.create_task(one.consume("g", "a", block_ms=500))
                    b = group.create_task(two.consume("g", "b", block_ms=500))
                got = a.result() + b.result()
                assert [(m.event_id, m.deliveries) for m in got] == [("ev-1", 2)]
                await one.ack("g", got[0])
        finally:
            await _delete_streams(stream)

    asyncio.run(run())
