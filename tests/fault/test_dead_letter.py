"""Events whose step keeps raising go to the dead-letter stream after max_deliveries: exactly
those, once each, with the error, the step and the event to replay."""

from __future__ import annotations

import asyncio
import time

import pytest

from servegraph.streams.envelope import read_dead_letter
from tests.fault import graphs
from tests.fault.brokers import Broker
from tests.fault.harness import (
    FIGURES,
    PRODUCERS,
    Collector,
    Consumers,
    collector_backend,
    event_id,
    produce,
    runtime_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

EVENTS = 3000
POISON = frozenset(range(7, EVENTS, 50))
WITHIN_S = 60.0


def test_only_the_events_that_keep_failing_are_dead_lettered(
    broker: Broker, stream: str, consumers: Consumers
) -> None:
    runtime = runtime_for(stream)
    output = Collector(collector_backend(runtime, graphs.output_of(stream)))
    dead = Collector(collector_backend(runtime, stream + "-dead-letter"))
    good = {event_id(n) for n in range(EVENTS) if n not in POISON}
    poison = {event_id(n) for n in POISON}

    async def scenario() -> tuple[bool, bool]:
        try:
            consumers.start("c1")
            consumers.start("c2")
            await produce(runtime, range(EVENTS), poison=POISON, concurrency=PRODUCERS[broker.kind])
            async with asyncio.TaskGroup() as tasks:
                answered = tasks.create_task(output.collect(good, within_s=WITHIN_S))
                dead_lettered = tasks.create_task(dead.collect(poison, within_s=WITHIN_S))
            statuses = await asyncio.to_thread(consumers.stop)
            await output.settle(quiet_s=0.5)
            await dead.settle(quiet_s=0.5)
            assert statuses == {"c1": 0, "c2": 0}, statuses
            return answered.result(), dead_lettered.result()
        finally:
            await runtime.aclose()

    started = time.monotonic()
    answered, dead_lettered = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert answered, f"answers missing: {sorted(good - output.seen.keys())[:5]}"
    assert dead_lettered, f"dead letters missing: {sorted(poison - dead.seen.keys())[:5]}"
    assert output.seen.keys() == good
    assert dead.seen.keys() == poison
    assert dead.duplicates() == 0
    for message in dead.messages:
        record = read_dead_letter(message.body)
        n = int(message.event_id.removeprefix("ev-"))
        assert record.deliveries == graphs.MAX_DELIVERIES, record
        assert record.step == "work", record
        assert record.error == f"PoisonError: poison event {n}", record
        assert record.segment == graphs.QUEUE
        assert record.source == "fault-events"
        assert record.event is not None, record
        assert record.event.body == {"n": n, "poison": True}
        assert record.raw is None
    FIGURES.append(
        f"dead letters [{broker.kind}]: {EVENTS} events, {len(POISON)} raising on every "
        f"delivery: those {len(POISON)} dead-lettered after {graphs.MAX_DELIVERIES} "
        f"deliveries, the others answered, in {elapsed:.1f} s"
    )
