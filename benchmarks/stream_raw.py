"""Raw stream baselines: the broker clients alone (redis-py asyncio, nats-py), no servegraph.

What a stream pipeline does, done as directly as the clients allow, to measure servegraph's
streams against:

* a producer publishes N small JSON messages (~150 bytes: an id, 8 floats, a label) with up
  to B publishes in flight: Redis, one pipeline of B ``XADD``s per round trip; NATS,
  JetStream ``publish_async`` with at most B acks pending;
* consumers read in one consumer group, B at a time, decode each message and ack per batch:
  Redis, ``XREADGROUP COUNT B BLOCK`` then one ``XACK`` of the batch's ids; NATS, ``fetch(B)``
  from a durable pull consumer then an ``ack`` of each message (acks are plain publishes, no
  reply awaited).

A consumer stops once the whole group is done: when a read comes back empty it asks the
broker whether all N messages were delivered to the group and acked (Redis: ``XINFO
GROUPS`` ``entries-read >= N`` and ``pending == 0``; NATS: the consumer's ack floor has
reached sequence N). Each process prints one JSON line with its timings; ``run_raw`` starts
them as separate processes and reports events/s from the first publish to the last ack, and
``measure_raw`` adds the CPU time per event of the producer and of the consumers (steadier
than events/s on a shared machine).

Run: ``python benchmarks/stream_raw.py`` (redis and nats, 1 and 2 consumers, N=200000,
B=100), or one process at a time::

    python benchmarks/stream_raw.py produce --broker redis --url redis://127.0.0.1:6379 \\
        --stream raw-1 --count 200000 --batch 100
    python benchmarks/stream_raw.py consume --broker redis --url redis://127.0.0.1:6379 \\
        --stream raw-1 --group g --consumer c1 --count-total 200000 --batch 100

The consumers create the stream and the group if need be, so start them first. The NATS
producer publishes without a ``Nats-Msg-Id`` header (no server-side de-duplication).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal, cast

import nats
import nats.errors
import nats.js.errors
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api

Broker = Literal["redis", "nats"]

REDIS_URL = "redis://127.0.0.1:6379"
NATS_URL = "nats://127.0.0.1:4222"
GROUP = "raw"
READY = "ready"
"""What a consumer prints once its group exists, before it reads."""
IDLE_S = 0.1
"""How long a consumer's read waits for messages before it checks whether the group is done."""
TIME_LIMIT_S = 600.0
"""A producer or consumer that has not finished by then gives up (exit status 1)."""
REDIS_MAXLEN = 1_000_000
"""Approximate trimming, as servegraph's Redis backend does (far above N: nothing is lost)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """One process's report: what it handled, when (``time.time()`` seconds) and the CPU
    time it spent doing it (``time.process_time()`` seconds, setup excluded)."""

    role: str
    count: int
    first: float
    last: float
    cpu_s: float


@dataclass(frozen=True, slots=True)
class RawResult:
    """One run: events/s from the first publish to the last ack, and CPU per event."""

    events_per_s: float
    producer_cpu_us: float
    """The producer's CPU microseconds per event."""
    consumer_cpu_us: float
    """The consumers' CPU microseconds per event, all of them together."""


def value_pool(size: int = 1024) -> list[list[float]]:
    """Feature vectors for the messages, drawn before the clock starts."""
    rng = random.Random(0)
    return [[round(rng.uniform(-100.0, 100.0), 8) for _ in range(8)] for _ in range(size)]


def payload(i: int, pool: Sequence[list[float]]) -> bytes:
    """Message ``i``'s body, JSON of about 150 bytes (encoded per message, as a producer
    that has the data in hand does)."""
    return json.dumps({"id": i, "values": pool[i % len(pool)], "label": "x"}).encode()


# -- Redis ------------------------------------------------------------------------------------


async def redis_ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def redis_produce(url: str, stream: str, count: int, batch: int) -> Timing:
    """Publish ``count`` messages, one pipeline of ``batch`` XADDs per round trip."""
    pool = value_pool()
    client = aioredis.Redis.from_url(url)
    try:
        cpu = time.process_time()
        first = time.time()
        for start in range(0, count, batch):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + batch, count)):
                    body = payload(i, pool)
                    pipe.xadd(stream, {"data": body}, maxlen=REDIS_MAXLEN, approximate=True)
                await pipe.execute()
        return Timing("produce", count, first, time.time(), time.process_time() - cpu)
    finally:
        await client.aclose()


async def redis_group_done(client: aioredis.Redis, stream: str, group: str, total: int) -> bool:
    """Whether ``group`` has been delivered ``total`` messages and has acked them all."""
    for info in await client.xinfo_groups(stream):
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) != group:
            continue
        if int(info["pending"]) != 0:
            return False
        entries_read = info.get("entries-read")
        if entries_read is not None:
            return int(entries_read) >= total
        # Redis could not count what the group read: it has read everything if its last
        # delivered id is the stream's last one and the stream holds them all
        stream_info = await client.xinfo_stream(stream)
        last_id = stream_info["last-generated-id"]
        done = info["last-delivered-id"] == last_id and int(stream_info["length"]) >= total
        return bool(done)
    return False


async def redis_consume(
    url: str, stream: str, group: str, consumer: str, total: int, batch: int
) -> Timing:
    """Read ``batch`` at a time and ack each batch with one XACK, until the group is done."""
    client = aioredis.Redis.from_url(url)
    try:
        await redis_ensure_group(client, stream, group)
        print(READY, flush=True)
        acked = 0
        first = last = 0.0
        cpu = time.process_time()
        block_ms = int(IDLE_S * 1000)
        while True:
            response = cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                await client.xreadgroup(
                    group, consumer, {stream: ">"}, count=batch, block=block_ms
                ),
            )
            ids: list[bytes] = []
            for _stream, entries in response or ():
                for message_id, fields in entries:
                    json.loads(fields[b"data"])
                    ids.append(message_id)
            if ids:
                await client.xack(stream, group, *ids)
                acked += len(ids)
                last = time.time()
                first = first or last
            elif await redis_group_done(client, stream, group, total):
                return Timing("consume", acked, first, last, time.process_time() - cpu)
    finally:
        await client.aclose()


# -- NATS -------------------------------------------------------------------------------------


async def nats_connect(url: str) -> NatsClient:
    return await nats.connect(url, allow_reconnect=False, connect_timeout=2)


async def nats_ensure_stream(js: JetStreamContext, stream: str) -> None:
    """Create the JetStream stream ``stream`` (capturing the subject ``stream``) if need be."""
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        with suppress(nats.js.errors.BadRequestError):  # created meanwhile by another process
            await js.add_stream(name=stream, subjects=[stream])


async def nats_ensure_group(js: JetStreamContext, stream: str, group: str) -> None:
    """Create the durable pull consumer ``group`` on ``stream`` if need be."""
    await nats_ensure_stream(js, stream)
    try:
        await js.consumer_info(stream, group)
    except nats.js.errors.NotFoundError:
        config = js_api.ConsumerConfig(
            durable_name=group,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=60.0,
        )
        with suppress(nats.js.errors.BadRequestError):  # created meanwhile
            await js.add_consumer(stream, config=config)


async def nats_produce(url: str, stream: str, count: int, batch: int) -> Timing:
    """Publish ``count`` messages with at most ``batch`` JetStream acks pending."""
    pool = value_pool()
    nc = await nats_connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=batch)
        await nats_ensure_stream(js, stream)
        cpu = time.process_time()
        first = time.time()
        # publish_async waits while ``batch`` acks are pending: that is the window
        acks = [await js.publish_async(stream, payload(i, pool)) for i in range(count)]
        await asyncio.gather(*acks)  # raises a failed publish's error
        return Timing("produce", count, first, time.time(), time.process_time() - cpu)
    finally:
        await nc.close()


async def nats_group_done(js: JetStreamContext, stream: str, group: str, total: int) -> bool:
    """Whether every message up to sequence ``total`` has been acked by ``group``."""
    info = await js.consumer_info(stream, group)
    return (info.ack_floor.stream_seq or 0) >= total


async def nats_consume(url: str, stream: str, group: str, total: int, batch: int) -> Timing:
    """Fetch ``batch`` at a time and ack each message, until the group is done."""
    nc = await nats_connect(url)
    try:
        js = nc.jetstream()
        await nats_ensure_group(js, stream, group)
        sub = await js.pull_subscribe_bind(durable=group, stream=stream)
        print(READY, flush=True)
        acked = 0
        first = last = 0.0
        cpu = time.process_time()
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=IDLE_S)
            except TimeoutError:  # nats-py's or asyncio's: nothing came
                msgs = []
            for msg in msgs:
                json.loads(msg.data)
                await msg.ack()
            if msgs:
                acked += len(msgs)
                last = time.time()
                first = first or last
            else:
                await nc.flush()  # our acks reach the server before we ask it
                if await nats_group_done(js, stream, group, total):
                    return Timing("consume", acked, first, last, time.process_time() - cpu)
    finally:
        await nc.close()


# -- processes --------------------------------------------------------------------------------


async def _produce(broker: Broker, url: str, stream: str, count: int, batch: int) -> Timing:
    if broker == "redis":
        return await redis_produce(url, stream, count, batch)
    return await nats_produce(url, stream, count, batch)


async def _consume(
    broker: Broker, url: str, stream: str, group: str, consumer: str, total: int, batch: int
) -> Timing:
    if broker == "redis":
        return await redis_consume(url, stream, group, consumer, total, batch)
    return await nats_consume(url, stream, group, total, batch)


async def _delete_stream(broker: Broker, url: str, stream: str) -> None:
    if broker == "redis":
        client = aioredis.Redis.from_url(url)
        try:
            await client.delete(stream)
        finally:
            await client.aclose()
        return
    nc = await nats_connect(url)
    try:
        with suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _report(timing: Timing) -> None:
    report = {"role": timing.role, "count": timing.count, "first": timing.first}
    print(json.dumps({**report, "last": timing.last, "cpu_s": timing.cpu_s}), flush=True)


def _command(*args: str) -> list[str]:
    return [sys.executable, __file__, *args]


def _finish(process: subprocess.Popen[str], deadline: float) -> Timing:
    """Wait for a child and read its report (its last stdout line; its stderr is ours)."""
    out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    if process.returncode != 0:
        msg = f"{process.args!r} exited with {process.returncode} (see its stderr above)"
        raise RuntimeError(msg)
    report = json.loads(out.strip().splitlines()[-1])
    fields = ("role", "count", "first", "last", "cpu_s")
    return Timing(*(report[name] for name in fields))


def run_raw(broker: Broker, url: str, n: int, consumers: int, batch: int) -> float:
    """Events/s from the first publish to the last ack, with ``consumers`` consumer processes
    and one producer process (each started with ``sys.executable``) on a fresh stream that is
    deleted afterwards."""
    return measure_raw(broker, url, n, consumers, batch).events_per_s


def measure_raw(broker: Broker, url: str, n: int, consumers: int, batch: int) -> RawResult:
    """What ``run_raw`` measures, with the CPU time per event of the producer and consumers
    (which, unlike events/s, hardly depends on what else the machine is running)."""
    stream = f"raw-{broker}-{uuid.uuid4().hex}"
    common = ["--broker", broker, "--url", url, "--stream", stream, "--batch", str(batch)]
    deadline = time.monotonic() + TIME_LIMIT_S
    children: list[subprocess.Popen[str]] = []
    try:
        for c in range(consumers):
            identity = ["--group", GROUP, "--consumer", f"c{c}", "--count-total", str(n)]
            args = _command("consume", *common, *identity)
            child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            children.append(child)
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if line != READY:
                msg = f"consumer c{c} did not start (it printed {line!r}; see its stderr)"
                raise RuntimeError(msg)
        args = _command("produce", *common, "--count", str(n))
        producer = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        children.append(producer)
        produced = _finish(producer, deadline)
        consumed = [_finish(child, deadline) for child in children[:consumers]]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        asyncio.run(_delete_stream(broker, url, stream))
    acked = sum(timing.count for timing in consumed)
    if acked != n:
        msg = f"{broker}: the consumers acked {acked} messages, {n} were published"
        raise RuntimeError(msg)
    return RawResult(
        events_per_s=n / (max(timing.last for timing in consumed) - produced.first),
        producer_cpu_us=produced.cpu_s / n * 1e6,
        consumer_cpu_us=sum(timing.cpu_s for timing in consumed) / n * 1e6,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="messages per run")
    parser.add_argument("--batch", type=int, default=100, help="publishes in flight, read size")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--nats-url", default=NATS_URL)
    commands = parser.add_subparsers(dest="command")
    for name in ("produce", "consume"):
        command = commands.add_parser(name)
        command.add_argument("--broker", choices=("redis", "nats"), required=True)
        command.add_argument("--url", required=True)
        command.add_argument("--stream", required=True)
        command.add_argument("--batch", type=int, default=100)
        if name == "produce":
            command.add_argument("--count", type=int, required=True)
        else:
            command.add_argument("--group", default=GROUP)
            command.add_argument("--consumer", required=True)
            command.add_argument("--count-total", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one producer or consumer process, or (no command) the whole comparison."""
    args = _parser().parse_args(argv)
    if args.command == "produce":
        work = _produce(args.broker, args.url, args.stream, args.count, args.batch)
    elif args.command == "consume":
        where = (args.broker, args.url, args.stream)
        work = _consume(*where, args.group, args.consumer, args.count_total, args.batch)
    else:
        print(
            f"raw baselines: n={args.count} batch={args.batch} (events/s from the first publish "
            "to the last ack; producer and consumers in separate processes; the broker's own "
            "CPU not counted)"
        )
        brokers: tuple[tuple[Broker, str], ...] = (
            ("redis", args.redis_url),
            ("nats", args.nats_url),
        )
        for broker, url in brokers:
            for consumers in (1, 2):
                result = measure_raw(broker, url, args.count, consumers, args.batch)
                print(
                    f"{broker:5} consumers={consumers}  {result.events_per_s:>8,.0f} events/s"
                    f"  CPU per event: producer {result.producer_cpu_us:5.1f} us,"
                    f" consumers {result.consumer_cpu_us:5.1f} us",
                    flush=True,
                )
        return

    async def timed() -> Timing:
        async with asyncio.timeout(TIME_LIMIT_S):
            return await work

    _report(asyncio.run(timed()))


if __name__ == "__main__":
    main()
