"""Shared fixtures: every behaviour test runs in each way of driving the engine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from servegraph import Graph, MockServer

MODES = ("sync", "async", "async-await")
"""sync engine via test(); async engine via test(); async engine awaited inside a running loop."""

Send = Callable[..., Any]


class Driver:
    """Builds a mock server for a graph in one mode and sends it events."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.engine = "sync" if mode == "sync" else "async"
        self.servers: list[MockServer] = []

    def __call__(self, graph: Graph) -> Send:
        server = graph.mock_server(engine=self.engine)
        self.servers.append(server)

        def send(
            body: Any = None,
            path: str = "/",
            method: str | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Any:
            if self.mode == "async-await":
                return asyncio.run(server.atest(path, body, method=method, headers=headers))
            return server.test(path, body, method=method, headers=headers)

        return send

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture(params=MODES)
def drive(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A Driver for each engine mode; tests get identical expectations in all of them."""
    driver = Driver(request.param)
    yield driver
    driver.close()


@pytest.fixture(params=("async", "async-await"))
def drive_async(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A Driver for the modes that run async steps."""
    driver = Driver(request.param)
    yield driver
    driver.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true no test may skip: a missing service or extra is a failure there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("CI") != "true":
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; none may skip in CI")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
