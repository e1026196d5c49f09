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
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from servegraph.errors import BackendError
from servegraph.streams.base import QueueBackend
from servegraph.streams.conformance import CHECKS, BackendFactory, run_check
from servegraph.streams.redis import PARKING_CONSUMER, RedisBackend


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


class CountingRedis(aioredis.Redis):
    """A real Redis client that counts the batched appends it sends (one script call each),
    to see publishes coalesce."""

    pipelines = 0

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.pipelines += 1
        return await super().evalsha(sha, numkeys, *keys_and_args)


def _counting_client() -> CountingRedis:
    client = CountingRedis.from_url(REDIS_URL)
    assert isinstance(client, CountingRedis)
    return client


def _id_order(message_id: str) -> tuple[int, int]:
    milliseconds, sequence = message_id.split("-")
    return int(milliseconds), int(sequence)


def test_concurrent_publishes_share_pipelines_and_all_land_in_order() -> None:
    callers, per_caller = 1000, 3

    async def run() -> None:
        stream = _unique("coalesce")
        client = _counting_client()
        try:
            async with RedisBackend(stream, client=client) as backend:

                async def caller(n: int) -> list[str]:
                    return [
                        await backend.publish(f"{n}:{i}".encode(), event_id=f"ev-{n}-{i}")
                        for i in range(per_caller)
                    ]

                ids = await asyncio.gather(*(caller(n) for n in range(callers)))
                total = callers * per_caller
                assert backend.statistics().published == total
                flat = [message_id for caller_ids in ids for message_id in caller_ids]
                assert len(set(flat)) == total, "publish returned duplicate ids"
                for caller_ids in ids:
                    assert caller_ids == sorted(caller_ids, key=_id_order), caller_ids
                # 1000 callers at a time: one XADD alone, the rest in pipelines of <= 1000
                assert 0 < client.pipelines <= 4 * per_caller, f"{client.pipelines} pipelines"
                entries = await client.xrange(stream)
                assert entries is not None
                assert len(entries) == total
                stored = {
                    _text(fields[b"event_id"]): _text(i) for i, fields in entries if i and fields
                }
                for n, caller_ids in enumerate(ids):
                    expected = [stored[f"ev-{n}-{i}"] for i in range(per_caller)]
                    assert caller_ids == expected, f"caller {n}: {caller_ids} != {expected}"
        finally:
            await client.aclose()
            await _delete_streams(stream)

    asyncio.run(run())


class RedisRelay:
    """A TCP relay to the test Redis that can be shut down: its port then refuses
    connections, as a server that went away does."""

    def __init__(self) -> None:
        target = urlsplit(REDIS_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


def test_publish_error_reaches_every_waiting_caller() -> None:
    async def run() -> None:
        stream = _unique("coalesce-error")
        relay = RedisRelay()
        await relay.start()
        client = CountingRedis.from_url(f"redis://127.0.0.1:{relay.port}")
        assert isinstance(client, CountingRedis)
        try:
            async with RedisBackend(stream, client=client) as backend:
                await backend.publish(b"x", event_id="ev-ok")
                await relay.stop()  # the server's port is closed from now on
                results = await asyncio.gather(
                    *(backend.publish(b"x", event_id=f"ev-{i}") for i in range(500)),
                    return_exceptions=True,
                )
                errors = [r for r in results if isinstance(r, BackendError)]
                assert len(errors) == 500, [r for r in results if r not in errors][:3]
                assert client.pipelines >= 1, "the waiting callers were not coalesced"
                assert len({id(error) for error in errors}) == 500, "callers share an error"
                for error in errors:
                    assert "XADD" in str(error), str(error)
                    assert error.retryable is True, repr(error)
                    assert isinstance(error.__cause__, redis_exceptions.ConnectionError)
                # nothing is left stuck: with the server back, publishing works again
                await relay.start()
                ids = await asyncio.gather(
                    *(backend.publish(b"y", event_id=f"ev-again-{i}") for i in range(100))
                )
                assert len(set(ids)) == 100
                assert await client.xlen(stream) == 101
        finally:
            await client.aclose()
            await relay.stop()
            await _delete_streams(stream)

    asyncio.run(run())


def test_aclose_answers_the_publishes_under_way_and_leaves_no_task() -> None:
    async def run() -> None:
        stream = _unique("coalesce-close")
        try:
            backend = RedisBackend(stream, url=REDIS_URL)
            publishes = [
                asyncio.create_task(backend.publish(b"x", event_id=f"ev-{i}")) for i in range(300)
            ]
            await asyncio.sleep(0)  # the publishes start: one XADD in flight, the rest queued
            await backend.aclose()
            assert all(task.done() for task in publishes)
            ids = [task.result() for task in publishes]
            assert len(set(ids)) == 300
            assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
            with pytest.raises(BackendError, match="closed"):
                await backend.publish(b"late", event_id="ev-late")
            client = aioredis.Redis.from_url(REDIS_URL)
            try:
                assert await client.xlen(stream) == 300
            finally:
                await client.aclose()
        finally:
            await _delete_streams(stream)

    asyncio.run(run())


def test_ack_many_acks_more_than_one_xack_chunk() -> None:
    total = 2500  # three XACKs of at most 1000 ids, in one pipeline

    async def run() -> None:
        stream = _unique("ack-many")
        try:
            async with RedisBackend(stream, url=REDIS_URL) as backend:
                await asyncio.gather(
                    *(backend.publish(b"x", event_id=f"ev-{i}") for i in range(total))
                )
                got = await backend.consume("g", "c", count=total, block_ms=1000)
                assert len(got) == total
                assert backend.statistics().pending == total
                await backend.ack_many("g", got)
                stats = backend.statistics()
                assert (stats.acked, stats.pending) == (total, 0), stats
                client = aioredis.Redis.from_url(REDIS_URL)
                try:
                    summary = await client.xpending(stream, "g")
                finally:
                    await client.aclose()
                assert summary["pending"] == 0, summary
        finally:
            await _delete_streams(stream)

    asyncio.run(run())


def test_default_maxlen_leaves_room_for_a_large_backlog() -> None:
    # trimming drops the oldest entries, consumed or not: the default must exceed any
    # backlog that normal use builds up
    assert RedisBackend("sg-test-default").maxlen == 1_000_000
