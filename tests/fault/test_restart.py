"""Restart the broker mid-stream: the consumers reconnect and finish, nothing lost."""

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

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

EVENTS = 20_000
RESTART_AT = 0.3
"""The share of the answers in the output when the broker is stopped."""
DOWN_S = 1.0
WITHIN_S = 60.0


def test_the_consumers_finish_after_a_broker_restart(
    broker: Broker, stream: str, consumers: Consumers
) -> None:
    runtime = runtime_for(stream)
    expected = {event_id(n) for n in range(EVENTS)}
    collector = Collector(collector_backend(runtime, graphs.output_of(stream)))
    dead_letters = Collector(collector_backend(runtime, stream + "-dead-letter"))
    times: dict[str, float] = {}

    def restart_once(seen: int) -> None:
        if "restarted" not in times and seen >= EVENTS * RESTART_AT:
            broker.stop()
            time.sleep(DOWN_S)
            broker.start()
            times["restarted"] = time.monotonic() - started

    async def scenario() -> bool:
        try:
            await produce(runtime, range(EVENTS), concurrency=PRODUCERS[broker.kind])
            consumers.start("c1")
            consumers.start("c2")
            complete = await collector.collect(
                expected, within_s=WITHIN_S, on_progress=restart_once
            )
            times["answered"] = time.monotonic() - started
            statuses = await asyncio.to_thread(consumers.stop)
            await collector.settle()
            await dead_letters.read(block_ms=500)
            assert statuses == {"c1": 0, "c2": 0}, statuses
            return complete
        finally:
            await runtime.aclose()

    started = time.monotonic()
    complete = asyncio.run(scenario())
    missing = expected - collector.seen.keys()
    assert complete, (
        f"{len(missing)} events missing from the output, e.g. {sorted(missing)[:5]}; "
        f"c1: {consumers.stderr('c1')[-1500:]}"
    )
    assert "restarted" in times, "the broker was never restarted"
    assert collector.seen.keys() == expected
    assert not dead_letters.seen, "events were dead-lettered because the broker restarted"
    recovered = [name for name in ("c1", "c2") if "reachable again" in consumers.stderr(name)]
    assert recovered, "no consumer logged losing the broker and reaching it again"
    assert broker.unacked("fault-events", graphs.QUEUE) == 0, "events left unacked"
    processed = consumers.processed()
    FIGURES.append(
        f"broker restart [{broker.kind}]: {EVENTS} events, 2 consumers, broker down "
        f"{DOWN_S:.0f} s at {times['restarted']:.1f} s; all answered at "
        f"{times['answered']:.1f} s; duplicates in the output {collector.duplicates()}, "
        f"processed twice {duplicates(processed)}"
    )
