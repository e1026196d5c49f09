"""kill -9 a consumer mid-stream: at least once, with the duplicates counted and bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fault import graphs
from tests.fault.brokers import Broker
from tests.fault.harness import (
    FIGURES,
    PRODUCERS,
    Collector,
    Consumers,
    collector_backend,
    duplicates,
    event_id,
    produce,
    runtime_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

EVENTS = 100_000
KILL_AT = 0.3
"""The share of the answers in the output when the first consumer is killed."""
WITHIN_S = 150.0
"""How long producing and answering every event may take (about 40 s on 2 idle cores)."""
DUPLICATES_BOUND = graphs.MAX_IN_FLIGHT + graphs.BATCH
"""Events a killed consumer can have processed without acking them: its in-flight window
and the batch it is reading."""


def test_a_consumer_killed_mid_stream_loses_no_event(
    broker: Broker, stream: str, consumers: Consumers
) -> None:
    started = time.monotonic()
    consumers.start("c1")
    consumers.start("c2")
    runtime = runtime_for(stream)
    collector = Collector(collector_backend(runtime, graphs.output_of(stream)))
    expected = {event_id(n) for n in range(EVENTS)}
    times: dict[str, float] = {}

    def kill_once(seen: int) -> None:
        if "killed" not in times and seen >= EVENTS * KILL_AT:
            consumers.kill("c1")
            times["killed"] = time.monotonic() - started
            consumers.start("c3")

    async def send() -> list[str]:
        ids = await produce(
            runtime, range(EVENTS), concurrency=PRODUCERS[broker.kind], within_s=WITHIN_S
        )
        times["produced"] = time.monotonic() - started
        return ids

    async def scenario() -> tuple[list[str], bool]:
        try:
            async with asyncio.TaskGroup() as tasks:  # a failing producer stops the collector
                producing = tasks.create_task(send())
                collecting = tasks.create_task(
                    collector.collect(expected, within_s=WITHIN_S, on_progress=kill_once)
                )
            times["answered"] = time.monotonic() - started
            statuses = await asyncio.to_thread(consumers.stop)
            await collector.settle()
            assert statuses == {"c2": 0, "c3": 0}, statuses
            return producing.result(), collecting.result()
        finally:
            await runtime.aclose()

    ids, complete = asyncio.run(scenario())
    missing = expected - collector.seen.keys()
    assert complete, f"{len(missing)} events missing from the output, e.g. {sorted(missing)[:5]}"
    assert "killed" in times, "c1 was never killed"
    assert consumers.processed_by("c1") > 0, "c1 was killed before it processed anything"
    assert set(ids) == expected == collector.seen.keys()
    assert broker.unacked("fault-events", graphs.QUEUE) == 0, "events left unacked"
    processed = consumers.processed()
    FIGURES.append(
        f"kill -9 [{broker.kind}]: {EVENTS} events, 2 consumers, c1 killed at "
        f"{times['killed']:.1f} s and replaced; produced in {times['produced']:.1f} s, all "
        f"answered at {times['answered']:.1f} s ({EVENTS / times['answered']:,.0f} events/s "
        f"end to end); duplicates in the output {collector.duplicates()}, processed twice "
        f"{duplicates(processed)} (bound {DUPLICATES_BOUND})"
    )
    assert collector.duplicates() <= DUPLICATES_BOUND
    assert duplicates(processed) <= DUPLICATES_BOUND
