"""NatsBackend against a real NATS server with JetStream: conformance plus NATS specifics.

The server comes from ``SERVEGRAPH_NATS_URL`` (default ``nats://127.0.0.1:4222``). There is no
skip: without NATS these tests fail with a clear message.

The conformance factory uses ``ack_wait_s=1.0``: across processes a stale message can only be
claimed once the server redelivers it (after the consumer's ``ack_wait``), so the
``claim_stale`` check (two backends, ``idle_ms=200``) sees it after about a second.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest

from servegraph.errors import BackendError
from servegraph.streams.base import QueueBackend
from servegraph.streams.conformance import CHECKS, BackendFactory, run_check
from servegraph.streams.nats import NatsBackend, sanitise
from tests.fault.brokers import Broker

pytestmark = pytest.mark.integration

NATS_URL = os.environ.get("SERVEGRAPH_NATS_URL", "nats://127.0.0.1:4222")

T = TypeVar("T")


async def _delete_streams(*streams: str) -> None:
    """Delete the JetStream streams behind the given servegraph streams."""
    nc = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=2)
    try:
        js = nc.jetstream()
        for stream in streams:
            with suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(sanitise(stream))
    finally:
        await nc.close()


@pytest.fixture(scope="module", autouse=True)
def _nats_is_up() -> None:
    """Fail (never skip) with a clear message when NATS with JetStream is not reachable."""

    async def ping() -> None:
        nc = await nats.connect(
            NATS_URL, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=1
        )
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    try:
        asyncio.run(ping())
    except (OSError, nats.errors.Error) as exc:
        pytest.fail(
            f"NATS with JetStream is not reachable at {NATS_URL} ({type(exc).__name__}: {exc}); "
            "start nats-server -js or point SERVEGRAPH_NATS_URL at a server",
            pytrace=False,
        )


@asynccontextmanager
async def nats_factory(stream: str) -> AsyncIterator[QueueBackend]:
    try:
        async with NatsBackend(stream, url=NATS_URL, ack_wait_s=1.0) as backend:
            yield backend
    finally:
        await _delete_streams(stream)


def _unique(prefix: str) -> str:
    return f"sg-test-{prefix}-{uuid.uuid4().hex}"


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_conformance(check: Callable[[BackendFactory], Awaitable[None]]) -> None:
    run_check(check, nats_factory)


def test_republished_event_id_is_deduplicated_by_the_server() -> None:
    async def run() -> None:
        stream = _unique("dedup")
        try:
            async with NatsBackend(stream, url=NATS_URL) as backend:
                first = await backend.publish(b"one", event_id="ev-1")
                again = await backend.publish(b"one again", event_id="ev-1")
                other = await backend.publish(b"two", event_id="ev-2")
                assert again == first, f"republished ev-1 got id {again}, first was {first}"
                assert other != first
                got = await backend.consume("g", "c", count=10, block_ms=300)
                assert [(m.event_id, m.body) for m in got] == [
                    ("ev-1", b"one"),
                    ("ev-2", b"two"),
                ]
                for message in got:
                    await backend.ack("g", message)
                assert backend.statistics().published == 2
        finally:
            await _delete_streams(stream)

    asyncio.run(run())


def test_nack_delay_holds_the_redelivery_back() -> None:
    async def run() -> tuple[float, int]:
        stream = _unique("nak-delay")
        loop = asyncio.get_running_loop()
        try:
            async with NatsBackend(stream, url=NATS_URL) as backend:
                await backend.publish(b"x", event_id="ev-1")
                (first,) = await backend.consume("g", "c", block_ms=500)
                started = loop.time()
                await backend.nack("g", first, delay_s=1.0)
                early = await backend.consume("g", "c", block_ms=500)
                assert early == [], f"redelivered before the delay: {early}"
                got = await backend.consume("g", "c", block_ms=200)
                while not got:
                    got = await backend.consume("g", "c", block_ms=200)
                waited = loop.time() - started
                (second,) = got
                await backend.ack("g", second)
                return waited, second.deliveries
        finally:
            await _delete_streams(stream)

    waited, deliveries = asyncio.run(run())
    assert 0.9 <= waited <= 3.0, f"nack(delay_s=1.0) redelivered after {waited:.3f} s"
    assert deliveries == 2


def test_connection_error_is_retryable_backend_error() -> None:
    async def run() -> None:
        # Port 1 is closed: connecting is refused at once.
        async with NatsBackend(_unique("down"), url="nats://127.0.0.1:1") as backend:
            await backend.publish(b"x", event_id="ev-1")

    with pytest.raises(BackendError) as info:
        asyncio.run(run())
    assert info.value.retryable is True
    assert "nats://127.0.0.1:1" in str(info.value)


def test_stream_names_are_sanitised() -> None:
    backend = NatsBackend("orders.eu")
    assert backend.subject == "orders.eu"
    assert "." not in backend.stream_name
    assert sanitise("orders.eu") != sanitise("orders_eu")
    with pytest.raises(ValueError, match="invalid NATS subject"):
        NatsBackend("orders.*")


def test_the_backend_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    """A private server (the shared one is not restarted) stopped and started on its port:
    calls fail with a retryable BackendError while it is down, then the backend connects
    again; the stream, the durable consumer and the unacked deliveries survive."""
    server = Broker("nats", tmp_path)

    async def call_until_up(call: Callable[[], Awaitable[T]]) -> T:
        async with asyncio.timeout(15):
            while True:
                try:
                    return await call()
                except BackendError as exc:
                    if not exc.retryable:
                        raise
                    await asyncio.sleep(0.1)

    async def run() -> tuple[list[str], list[str]]:
        async with NatsBackend("restarted", url=server.server, ack_wait_s=1.0) as backend:
            for n in range(4):
                await backend.publish(b"x", event_id=f"ev-{n}")
            first = await backend.consume("g", "c", count=2, block_ms=500)
            await backend.ack_many("g", first[:1])  # the second is held unacked
            await asyncio.to_thread(server.stop)
            with pytest.raises(BackendError) as down:
                await backend.publish(b"x", event_id="ev-4")
            assert down.value.retryable
            await asyncio.to_thread(server.start)
            await call_until_up(lambda: backend.publish(b"x", event_id="ev-4"))
            received: list[str] = []
            async with asyncio.timeout(15):
                while len(set(received)) < 4:
                    got = await call_until_up(lambda: backend.consume("g", "c", block_ms=300))
                    await backend.ack_many("g", got)
                    received += [message.event_id for message in got]
            return [message.event_id for message in first], received

    server.start()
    try:
        first, after = asyncio.run(run())
    finally:
        server.close()
    assert first == ["ev-0", "ev-1"]
    # ev-1 comes back after ack_wait; ev-0 may too (its ack is not awaited: it can be lost
    # with the connection), never anything else
    assert set(after) - {"ev-0"} == {"ev-1", "ev-2", "ev-3", "ev-4"}
