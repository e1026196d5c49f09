"""W1 over a stream: the graph cut after ``scale`` by a queue, against the raw broker clients.

For Redis Streams and NATS JetStream, with 1 and 2 consumer processes, in the same run:

* **servegraph**: one producer process runs the ``main`` segment (parse -> scale -> the queue)
  for N events with ``--batch`` events in flight; ``servegraph consume`` processes run the
  ``q`` segment (gate -> linear -> post) in one consumer group, reading ``--batch`` at a time;
* **raw**: ``benchmarks/stream_raw.py``, the broker client alone doing publish + group read +
  ack with the same batch sizes and no graph.

Events/s is measured from the first publish to the moment the group has acked all N; the
ratio is servegraph's events/s over the raw baseline's. CPU microseconds per event of the
producer and of the consumers are printed too (steadier than events/s on a shared machine).

Run: ``make bench-streams`` (or ``.venv/bin/python -m benchmarks.stream_bench [--count N]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors
import redis.asyncio as aioredis

from benchmarks.stream_raw import (
    NATS_URL,
    REDIS_URL,
    Broker,
    RawResult,
    Timing,
    measure_raw,
    nats_connect,
    nats_group_done,
    redis_group_done,
)
from benchmarks.stream_targets import BATCH_VARIABLE, STREAM_VARIABLE, build
from servegraph.event import Event
from servegraph.streams.nats import sanitise
from servegraph.streams.runtime import DEAD_LETTER_SUFFIX, StreamRuntime

ROOT = Path(__file__).parents[1]
GROUP = "q"
TIME_LIMIT_S = 600.0
POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class Row:
    broker: Broker
    consumers: int
    ours: RawResult
    raw: RawResult

    @property
    def ratio(self) -> float:
        return self.ours.events_per_s / self.raw.events_per_s


# -- the producer process ---------------------------------------------------------------------


async def produce(stream_url: str, count: int, window: int) -> Timing:
    """Run ``main`` for ``count`` events, ``window`` at a time (each write awaited)."""
    os.environ[STREAM_VARIABLE] = stream_url
    runtime = StreamRuntime(build().spec)
    await runtime.check()
    run = runtime.runner().run
    rng = random.Random(0)
    pool = [[round(rng.uniform(-100.0, 100.0), 6) for _ in range(4)] for _ in range(1024)]

    async def worker(first_index: int) -> None:
        for i in range(first_index, count, window):
            await run(Event({"id": i, "x": pool[i % len(pool)]}))

    try:
        cpu = time.process_time()
        first = time.time()
        await asyncio.gather(*(worker(k) for k in range(window)))
        return Timing("produce", count, first, time.time(), time.process_time() - cpu)
    finally:
        await runtime.aclose()


# -- a servegraph run -------------------------------------------------------------------------


def measure_servegraph(broker: Broker, url: str, n: int, consumers: int, batch: int) -> RawResult:
    """Start ``consumers`` consumer processes, then the producer; events/s until the group
    has acked all ``n``, and the CPU per event of the producer and of the consumers."""
    stream = f"bench-{broker}-{uuid.uuid4().hex[:12]}"
    stream_url = f"{url}/{stream}"
    env = {
        **os.environ,
        STREAM_VARIABLE: stream_url,
        BATCH_VARIABLE: str(batch),
        "PYTHONPATH": str(ROOT),
    }
    deadline = time.monotonic() + TIME_LIMIT_S
    children: list[subprocess.Popen[str]] = []
    try:
        for c in range(consumers):
            port = 18700 + c
            command = [
                *("-m", "servegraph", "consume", "benchmarks.stream_targets:build"),
                *("--segment", "q", "--consumer", f"c{c}", "--health-port", str(port)),
            ]
            children.append(
                subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, text=True)
            )
            _wait_ready(port, children[-1], deadline)
        setup_cpu = sum(_cpu_seconds(child.pid) for child in children)  # imports, connections
        command = ["-m", "benchmarks.stream_bench", "produce", "--url", stream_url]
        producer = subprocess.Popen(
            [sys.executable, *command, "--count", str(n), "--window", str(batch)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = producer.communicate(timeout=TIME_LIMIT_S)
        if producer.returncode != 0:
            msg = f"the producer exited with {producer.returncode}"
            raise RuntimeError(msg)
        produced = Timing(**json.loads(out.strip().splitlines()[-1]))
        finished = asyncio.run(_wait_done(broker, url, stream, n, deadline))
        consumer_cpu = sum(_stop(child) for child in children) - setup_cpu
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        asyncio.run(_delete(broker, url, stream))
    return RawResult(
        events_per_s=n / (finished - produced.first),
        producer_cpu_us=produced.cpu_s / n * 1e6,
        consumer_cpu_us=consumer_cpu / n * 1e6,
    )


def _wait_ready(port: int, child: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if child.poll() is not None:
            msg = f"consumer {child.args!r} exited with {child.returncode}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    msg = "a consumer was not ready in time"
    raise RuntimeError(msg)


async def _wait_done(broker: Broker, url: str, stream: str, n: int, deadline: float) -> float:
    """The time at which the group has acked all ``n`` events (polled every few ms)."""
    if broker == "redis":
        client = aioredis.Redis.from_url(url)
        try:
            while time.monotonic() < deadline:
                if await redis_group_done(client, stream, GROUP, n):
                    return time.time()
                await asyncio.sleep(POLL_S)
        finally:
            await client.aclose()
    else:
        nc = await nats_connect(url)
        try:
            js = nc.jetstream()
            while time.monotonic() < deadline:
                if await nats_group_done(js, sanitise(stream), sanitise(GROUP), n):
                    return time.time()
                await asyncio.sleep(POLL_S)
        finally:
            await nc.close()
    msg = f"{broker}: the group did not ack {n} events in time"
    raise RuntimeError(msg)


def _cpu_seconds(pid: int) -> float:
    """The CPU seconds (user + system) process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(child: subprocess.Popen[str]) -> float:
    """SIGTERM a consumer and return the CPU seconds it used in all (the drain included)."""
    child.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        msg = f"consumer {child.args!r} exited with {child.returncode}"
        raise RuntimeError(msg)
    return usage.ru_utime + usage.ru_stime


async def _delete(broker: Broker, url: str, stream: str) -> None:
    dead = stream + DEAD_LETTER_SUFFIX
    if broker == "redis":
        client = aioredis.Redis.from_url(url)
        try:
            await client.delete(stream, dead, f"{stream}:retry:{GROUP}")
        finally:
            await client.aclose()
        return
    nc = await nats_connect(url)
    try:
        for name in (stream, dead):
            with suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(sanitise(name))
    finally:
        await nc.close()


# -- the report -------------------------------------------------------------------------------


def run(count: int, batch: int, urls: dict[Broker, str]) -> list[Row]:
    rows = []
    for broker, url in urls.items():
        for consumers in (1, 2):
            raw = measure_raw(broker, url, count, consumers, batch)
            ours = measure_servegraph(broker, url, count, consumers, batch)
            rows.append(Row(broker, consumers, ours, raw))
            print(_line(rows[-1]), flush=True)
    return rows


def _line(row: Row) -> str:
    ours, raw = row.ours, row.raw
    return (
        f"{row.broker:<6} {row.consumers} consumer(s): servegraph {ours.events_per_s:>9,.0f} ev/s"
        f"  raw {raw.events_per_s:>9,.0f} ev/s  ratio {row.ratio:.2f}"
        f"  | CPU us/event producer {ours.producer_cpu_us:.1f} (raw {raw.producer_cpu_us:.1f})"
        f" consumers {ours.consumer_cpu_us:.1f} (raw {raw.consumer_cpu_us:.1f})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="events per run")
    parser.add_argument("--batch", type=int, default=100, help="read size, writes in flight")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--nats-url", default=NATS_URL)
    parser.add_argument("--broker", choices=("redis", "nats"), action="append")
    commands = parser.add_subparsers(dest="command")
    producer = commands.add_parser("produce", help="(internal) the producer process")
    producer.add_argument("--url", required=True)
    producer.add_argument("--count", type=int, required=True)
    producer.add_argument("--window", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "produce":
        timing = asyncio.run(produce(args.url, args.count, args.window))
        print(json.dumps(_fields(timing)))
        return
    brokers: list[Broker] = args.broker or ["redis", "nats"]
    urls: dict[Broker, str] = {
        broker: args.redis_url if broker == "redis" else args.nats_url for broker in brokers
    }
    print(f"W1 cut after scale by a queue; {args.count:,} events, batch {args.batch}")
    run(args.count, args.batch, urls)


def _fields(timing: Timing) -> dict[str, object]:
    return {name: getattr(timing, name) for name in ("role", "count", "first", "last", "cpu_s")}


if __name__ == "__main__":
    main()
