"""Fixtures of the fault tests: a private broker per test, the consumer processes, figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault.brokers import Broker
from tests.fault.harness import FIGURES, Consumers

BACKENDS = ("redis", "nats")


@pytest.fixture(params=BACKENDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A private, running broker of each kind; killed after the test."""
    broker = Broker(request.param, tmp_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def stream(broker: Broker) -> str:
    """The URL of the test's queue stream on its broker."""
    return broker.url("fault-events")


@pytest.fixture
def consumers(stream: str, tmp_path: Path) -> Iterator[Consumers]:
    """Starts ``servegraph consume`` processes; every one left is killed after the test."""
    processes = Consumers(stream, tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the fault tests measured (events/s, duplicates, durations)."""
    if FIGURES:
        terminalreporter.section("fault tests: measured figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
