"""Bad input: messages that are not envelopes, an unreachable broker, an unknown segment."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from servegraph.streams.envelope import read_dead_letter
from tests.fault import graphs
from tests.fault.brokers import Broker, free_port
from tests.fault.harness import (
    PRODUCERS,
    Collector,
    Consumers,
    collector_backend,
    event_id,
    produce,
    runtime_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

WITHIN_S = 30.0
NOT_ENVELOPES = {
    "bad-not-json": b"{not json",
    "bad-empty": b"",
    "bad-binary": b"\xff\x00\xfe",
    "bad-no-body": b'{"path": "/"}',
    "bad-wrong-type": b'{"body": 1, "headers": "x"}',
    "bad-not-an-object": b"[1, 2, 3]",
}
"""Payloads that do not decode as an envelope: dead-lettered with their raw text."""
NEWER = b'{"body": {"n": 1}, "v": 99}'
"""An envelope of a newer version: dead-lettered as it is (a newer consumer can replay it)."""
BAD = {**NOT_ENVELOPES, "bad-newer-version": NEWER}


def test_messages_that_are_not_envelopes_are_dead_lettered_not_a_crash(
    broker: Broker, stream: str, consumers: Consumers
) -> None:
    runtime = runtime_for(stream)
    output = Collector(collector_backend(runtime, graphs.output_of(stream)))
    dead = Collector(collector_backend(runtime, stream + "-dead-letter"))
    good = {event_id(n) for n in range(100)}

    async def scenario() -> tuple[bool, bool, int | None]:
        try:
            consumers.start("c1")
            source = runtime.backend(stream)
            for name, payload in BAD.items():
                await source.publish(payload, event_id=name)
            await produce(runtime, range(100), concurrency=PRODUCERS[broker.kind])
            async with asyncio.TaskGroup() as tasks:
                answered = tasks.create_task(output.collect(good, within_s=WITHIN_S))
                dead_lettered = tasks.create_task(dead.collect(set(BAD), within_s=WITHIN_S))
            still_running = consumers.processes["c1"].poll()
            statuses = await asyncio.to_thread(consumers.stop)
            assert statuses == {"c1": 0}, (statuses, consumers.stderr("c1")[-2000:])
            return answered.result(), dead_lettered.result(), still_running
        finally:
            await runtime.aclose()

    answered, dead_lettered, exit_status = asyncio.run(scenario())
    assert exit_status is None, f"the consumer exited with {exit_status}"
    assert answered, f"answers missing: {sorted(good - output.seen.keys())[:5]}"
    assert dead_lettered, f"dead letters missing: {set(BAD) - dead.seen.keys()}"
    assert output.seen.keys() == good
    assert dead.seen.keys() == set(BAD)
    assert dead.duplicates() == 0
    records = {message.event_id: read_dead_letter(message.body) for message in dead.messages}
    for name, record in records.items():
        assert record.deliveries == 1, record  # dead-lettered at once, not retried
        assert record.step is None, record
        assert record.segment == graphs.QUEUE
        if name in NOT_ENVELOPES:
            assert record.event is None, record
            assert record.raw == NOT_ENVELOPES[name].decode(errors="replace"), record
            assert record.error.startswith("the message is not a servegraph event envelope")
    newer = records["bad-newer-version"]
    assert newer.event is not None, newer
    assert newer.event.v == 99, newer
    assert "written by a newer servegraph" in newer.error


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_an_unreachable_broker_at_startup_exits_non_zero_naming_its_url(
    kind: str, tmp_path: Path
) -> None:
    url = f"{kind}://127.0.0.1:{free_port()}/fault-events"  # nothing listens there
    consumers = Consumers(url, tmp_path)
    try:
        started = time.monotonic()
        consumers.start("c1")
        status = consumers.wait("c1", within_s=WITHIN_S)
        elapsed = time.monotonic() - started
    finally:
        consumers.close()
    stderr = consumers.stderr("c1")
    assert status == 2, stderr
    assert f"cannot reach the stream {url!r}" in stderr
    assert "Traceback" not in stderr
    assert elapsed < 15.0, f"it took {elapsed:.1f} s to give up"


def test_an_unknown_segment_exits_1_listing_the_segments(tmp_path: Path) -> None:
    consumers = Consumers("redis://127.0.0.1:1/fault-events", tmp_path)
    try:
        consumers.start("c1", "--segment", "nope")
        status = consumers.wait("c1", within_s=WITHIN_S)
    finally:
        consumers.close()
    stderr = consumers.stderr("c1")
    assert status == 1, stderr
    assert "unknown segment 'nope'; this graph's segments are: 'main', 'jobs'" in stderr
    assert "Traceback" not in stderr


def test_the_main_segment_is_not_consumable_and_the_error_names_the_others(
    tmp_path: Path,
) -> None:
    consumers = Consumers("redis://127.0.0.1:1/fault-events", tmp_path)
    try:
        consumers.start("c1", "--segment", "main")
        status = consumers.wait("c1", within_s=WITHIN_S)
    finally:
        consumers.close()
    stderr = consumers.stderr("c1")
    assert status != 0, stderr
    assert "consume one of: 'jobs'" in stderr
