"""What the fault tests drive: ``servegraph consume`` processes, a producer and a collector.

The consumers are real processes of ``tests.fault.graphs:build`` (``python -m servegraph
consume``); the producer runs the graph's ``main`` segment in the test process (its queue
step writes each event to the stream); the collector reads the queue's output stream in a
consumer group of its own and counts the answers per event id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from servegraph.errors import BackendError
from servegraph.event import Event
from servegraph.streams.base import Message, QueueBackend
from servegraph.streams.runtime import StreamRuntime
from tests.fault import graphs

ROOT = Path(__file__).parents[2]
TARGET = "tests.fault.graphs:build"
EXIT_WITHIN_S = 15.0
COLLECTOR_GROUP = "fault-collector"
READ_COUNT = 1000
READ_PAUSE_S = 0.25
PRODUCERS = {"redis": 500, "nats": 50}
"""Concurrent producer tasks per broker kind (Redis pipelines many; NATS awaits each ack)."""

FIGURES: list[str] = []
"""Lines of measured figures, printed in the session's terminal summary (conftest)."""


def event_id(n: int) -> str:
    return f"ev-{n:06d}"


class Consumers:
    """``servegraph consume`` processes of the fault graph; ``close`` kills what is left.

    Args:
        stream: the queue's stream URL (``FAULT_STREAM``).
        directory: where their stderr and processing logs go.
    """

    def __init__(self, stream: str, directory: Path) -> None:
        self.stream = stream
        self.directory = directory
        self.logs = directory / "processed"
        self.logs.mkdir(exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVEGRAPH_")}
        env["FAULT_STREAM"] = self.stream
        env["FAULT_LOG_DIR"] = str(self.logs)
        return env

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start consumer ``name`` of segment ``work`` (``args`` replace ``--segment work``)."""
        command = [sys.executable, "-m", "servegraph", "consume", TARGET]
        command += list(args) or ["--segment", graphs.QUEUE]
        with self.stderr_path(name).open("wb") as stderr:
            process = subprocess.Popen(
                [*command, "--consumer", name],
                cwd=ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def stderr_path(self, name: str) -> Path:
        return self.directory / f"{name}.stderr"

    def stderr(self, name: str) -> str:
        return self.stderr_path(name).read_text(errors="replace")

    def kill(self, name: str) -> None:
        """``kill -9`` consumer ``name``."""
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=EXIT_WITHIN_S)

    def running(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is None]

    def wait(self, name: str, within_s: float = EXIT_WITHIN_S) -> int:
        """The exit status of consumer ``name`` (killed if it has not exited within_s)."""
        process = self.processes[name]
        try:
            return process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=EXIT_WITHIN_S)
            message = f"consumer {name} did not exit within {within_s} s: {self.stderr(name)}"
            raise AssertionError(message) from None

    def stop(self) -> dict[str, int]:
        """SIGTERM every running consumer; their exit statuses once they have drained."""
        names = self.running()
        for name in names:
            self.processes[name].send_signal(signal.SIGTERM)
        return {name: self.wait(name) for name in names}

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=EXIT_WITHIN_S)

    def processed_by(self, name: str) -> int:
        """How many events consumer ``name`` processed (its processing log's lines)."""
        path = self.logs / f"{self.processes[name].pid}.log"
        return len(path.read_text().split()) if path.exists() else 0

    def processed(self) -> Counter[str]:
        """How many times each event id was processed, across every consumer (killed ones too)."""
        counts: Counter[str] = Counter()
        for path in self.logs.glob("*.log"):
            counts.update(path.read_text().split())
        return counts


def runtime_for(stream: str) -> StreamRuntime:
    """A stream runtime of the fault graph (the test process's producer and collector)."""
    return StreamRuntime(graphs.make(stream, graphs.output_of(stream)).spec)


def collector_backend(runtime: StreamRuntime, url: str) -> QueueBackend:
    """A backend for a ``Collector`` of ``url``."""
    return runtime.open(url, claim_idle_s=1.0)


async def produce(
    runtime: StreamRuntime,
    numbers: Iterable[int],
    *,
    poison: frozenset[int] = frozenset(),
    concurrency: int = 50,
    within_s: float = 60.0,
) -> list[str]:
    """Send an event per number through the graph's front (``main``); their ids.

    ``concurrency`` tasks share the numbers; each awaits its event's write to the stream.
    """
    runner = runtime.runner("main")
    todo = list(numbers)
    ids = [event_id(n) for n in todo]
    position = 0

    async def send() -> None:
        nonlocal position
        while position < len(todo):
            n = todo[position]
            position += 1
            body = {"n": n, "poison": True} if n in poison else {"n": n}
            await runner.run(Event(body, id=event_id(n)))

    async with asyncio.timeout(within_s), asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(send())
    return ids


class Collector:
    """Reads a stream in its own consumer group and counts the messages per event id.

    Broker errors (a broker being restarted) are retried until the deadline of ``collect``.
    Open its backend with ``collector_backend`` (a short ``ack_wait`` on NATS, so that what
    it read but could not ack before a restart comes back soon).
    """

    def __init__(self, backend: QueueBackend) -> None:
        self.backend = backend
        self.seen: Counter[str] = Counter()
        self.messages: list[Message] = []
        self.broker_errors = 0
        self._ids: set[str] = set()

    async def read(self, block_ms: int = 200) -> int:
        """Read what is there (waiting up to ``block_ms`` for the first); how many."""
        try:
            messages = await self.backend.consume(
                COLLECTOR_GROUP, "collector", count=READ_COUNT, block_ms=block_ms
            )
            if messages:
                await self.backend.ack_many(COLLECTOR_GROUP, messages)
        except BackendError:
            self.broker_errors += 1
            await asyncio.sleep(0.2)
            return 0
        for message in messages:
            if message.id in self._ids:
                continue  # delivered to the collector again (its ack was lost): not a duplicate
            self._ids.add(message.id)
            self.seen[message.event_id] += 1
            self.messages.append(message)
        return len(messages)

    async def collect(
        self,
        expected: set[str],
        *,
        within_s: float,
        on_progress: Callable[[int], None] | None = None,
    ) -> bool:
        """Read until every id of ``expected`` was seen (True) or ``within_s`` passed (False).

        ``on_progress`` gets the number of distinct ids seen after each read that got some.
        """
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            count = await self.read()
            if count and on_progress is not None:
                on_progress(len(self.seen))
            if expected <= self.seen.keys():
                return True
            if count < READ_COUNT:
                await asyncio.sleep(READ_PAUSE_S)  # fewer, larger reads: the CPU is shared
        return expected <= self.seen.keys()

    async def settle(self, quiet_s: float = 1.0, within_s: float = 10.0) -> None:
        """Read until nothing came for ``quiet_s`` (late duplicates included)."""
        deadline = time.monotonic() + within_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            if await self.read():
                quiet_since = time.monotonic()

    def duplicates(self) -> int:
        """Messages beyond the first per event id."""
        return sum(count - 1 for count in self.seen.values())


def duplicates(counts: Counter[str]) -> int:
    return sum(count - 1 for count in counts.values() if count > 1)
