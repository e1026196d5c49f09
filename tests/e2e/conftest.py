"""Fixtures of the end-to-end tests (the helpers are in ``server_process``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.server_process import EXIT_WITHIN_S, Server, Start, launch, stop, wait_ready


@pytest.fixture
def start() -> Iterator[Start]:
    """Start ``servegraph serve TARGET ARGS...`` on a free port; always stopped afterwards.

    ``exit_within_s``: how long the finaliser waits after SIGTERM before SIGKILL (shorter for
    a server whose thread pool holds a hung step: the interpreter joins that thread at exit).
    """
    processes: list[tuple[subprocess.Popen[bytes], float]] = []

    def starter(
        target: str, *args: str, token: str | None = None, exit_within_s: float = EXIT_WITHIN_S
    ) -> Server:
        process, server = launch(target, *args, token=token)
        processes.append((process, exit_within_s))
        wait_ready(server, token)
        return server

    yield starter
    for process, within_s in processes:
        stop(process, within_s)
