"""Private broker processes on free ports, to be stopped, killed and restarted by a test.

The shared Redis and NATS of ``scripts/services.sh`` stay untouched: each test gets its own
``redis-server`` or ``nats-server`` (the binaries that script installs) with its data in a
temporary directory, so a graceful stop and a start on the same port keep every message
(Redis with ``--appendonly yes``, NATS JetStream with its file store under ``-sd``).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import redis

from servegraph.streams.nats import sanitise

START_WITHIN_S = 15.0
STOP_WITHIN_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(name: str) -> str:
    """The path of ``name``, or a failure saying how to install it (never a skip)."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not on the PATH: run `bash scripts/services.sh` (as root) to install it"
        )
        raise RuntimeError(message)
    return path


class Broker:
    """A broker process of one kind (``redis`` or ``nats``) on a fixed port and data directory.

    ``start`` and ``stop`` may alternate (a restart keeps the port and the data); ``close``
    kills whatever is left.
    """

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{kind}-server.log"

    @property
    def server(self) -> str:
        """The broker's URL without a stream."""
        return f"{self.kind}://127.0.0.1:{self.port}"

    def url(self, stream: str) -> str:
        """The URL of ``stream`` on this broker."""
        return f"{self.server}/{stream}"

    def command(self) -> list[str]:
        if self.kind == "redis":
            return [
                binary("redis-server"),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "yes",
                "--dir", str(self.directory),
            ]  # fmt: skip
        store = self.directory / "jetstream"
        store.mkdir(exist_ok=True)
        return [
            binary("nats-server"),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(store),
        ]

    def start(self) -> None:
        """Start the broker and wait until it answers (JetStream ready, for NATS)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = f"{self.kind}-server exited with {self.process.returncode}: {self.tail()}"
                raise RuntimeError(message)
            if self.answers():
                return
            time.sleep(0.05)
        message = f"{self.kind}-server did not answer within {START_WITHIN_S} s: {self.tail()}"
        raise RuntimeError(message)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: Redis flushes its append-only file, NATS its store)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_WITHIN_S)
            message = f"{self.kind}-server ignored SIGTERM for {STOP_WITHIN_S} s: {self.tail()}"
            raise RuntimeError(message) from None

    def close(self) -> None:
        """Kill the broker if it runs (the finaliser of every test)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_WITHIN_S)

    def answers(self) -> bool:
        """The broker accepts a connection and answers a command."""
        try:
            if self.kind == "redis":
                client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
                try:
                    return bool(client.ping())
                finally:
                    client.close()
            # in a thread of its own: start() may be called from a test's event loop
            with ThreadPoolExecutor(1) as thread:
                return thread.submit(asyncio.run, _jetstream_answers(self.server)).result()
        except (OSError, redis.RedisError, nats.errors.Error, TimeoutError):
            return False

    def unacked(self, stream: str, group: str) -> int:
        """Messages of ``stream`` that ``group`` has not acked (pending or not yet delivered)."""
        if self.kind == "redis":
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
            try:
                info = client.xinfo_groups(stream)
            finally:
                client.close()
            (entry,) = [entry for entry in info if entry["name"].decode() == group]
            return int(entry["pending"]) + int(entry["lag"] or 0)
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, _nats_unacked(self.server, stream, group)).result()

    def tail(self) -> str:
        """The end of the broker's log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


async def _jetstream_answers(server: str) -> bool:
    nc = await nats.connect(
        server,
        allow_reconnect=False,
        connect_timeout=1,
        max_reconnect_attempts=1,
        error_cb=_quiet,
    )
    try:
        await nc.jetstream().account_info()
        return True
    finally:
        await nc.close()


async def _quiet(_: Exception) -> None:
    """A broker still starting refuses connections: ``answers`` says so, no need to log it."""


async def _nats_unacked(server: str, stream: str, group: str) -> int:
    nc = await nats.connect(server, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
    try:
        info = await nc.jetstream().consumer_info(sanitise(stream), sanitise(group))
        return int(info.num_ack_pending) + int(info.num_pending)
    finally:
        await nc.close()
