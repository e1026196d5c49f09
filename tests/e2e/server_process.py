"""Helpers of the end-to-end tests: a ``servegraph serve`` process on a free localhost port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from servegraph.settings import ServerSettings

ROOT = Path(__file__).parents[2]
READY_WITHIN_S = 20.0
EXIT_WITHIN_S = 10.0


class Server:
    """A running ``servegraph serve`` process and its base URL."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


Start = Callable[..., Server]
"""``start(TARGET, *ARGS, token=None, exit_within_s=EXIT_WITHIN_S)``: the ``start`` fixture."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment() -> dict[str, str]:
    """This process's environment without SERVEGRAPH_* settings (the flags decide)."""
    names = {*ServerSettings().to_env(), "SERVEGRAPH_TARGET"}
    return {key: value for key, value in os.environ.items() if key not in names}


def wait_ready(server: Server, token: str | None = None) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode} before it was ready")
        try:
            response = httpx.get(f"{server.url}/v2/health/ready", headers=headers, timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if response.status_code == 200:
            return
        time.sleep(0.1)
    pytest.fail(f"the server was not ready within {READY_WITHIN_S} s")


def stop(process: subprocess.Popen[bytes], within_s: float = EXIT_WITHIN_S) -> None:
    """SIGTERM, then SIGKILL to the process group (uvicorn workers included) if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=EXIT_WITHIN_S)


def launch(
    target: str, *args: str, token: str | None = None
) -> tuple[subprocess.Popen[bytes], Server]:
    """Start ``servegraph serve TARGET ARGS...`` on a free port (not waiting for it)."""
    port = free_port()
    command = [sys.executable, "-m", "servegraph", "serve", target, "--port", str(port)]
    if token is not None:
        command += ["--token", token]
    process = subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        env=clean_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group, so that a stuck worker can be killed too
    )
    return process, Server(process, port)
