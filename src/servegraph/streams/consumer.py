"""The consumer loop: run one segment of a graph over its input stream, at least once.

For each message: decode the envelope, run the segment (which awaits its own writes to the
next queues), write the answer to the output stream when there is one, and only then ack.
A failing event is given back to the broker with a growing delay; on its ``max_deliveries``-th
failure it is written to the dead-letter stream (with the error and the step) and acked. A
message that is not an envelope goes to the dead-letter stream at once.

Concurrency: up to ``max_in_flight`` events at once, read ``batch`` at a time. A segment
whose steps are all synchronous runs each batch inline (no task per event: that is the fast
path); otherwise every event is a task, and events with one key are chained so that they run
one after the other. Acks are gathered and sent in batches by one task.

Broker errors while reading are retried with backoff (readiness goes false after a few in a
row); an event whose ack is lost is redelivered later, never dropped. ``claim_idle_s`` after a
consumer dies, the others take over the events it held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError, StepError
from ..event import Event
from .base import Message, QueueBackend
from .envelope import EnvelopeError, dead_letter, decode_event, encode_answer
from .settings import QueueOptions

logger = logging.getLogger("servegraph.streams")

NOT_READY_AFTER = 3
"""Consecutive failed reads after which the consumer reports itself not ready."""

MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class ConsumerStatistics:
    """What a consumer did since it started."""

    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    acked: int = 0
    claimed: int = 0
    broker_errors: int = 0


class SegmentConsumer:
    """Consumes ``source`` in a consumer group and runs a segment for each event.

    Args:
        segment: the segment's name (for logs and dead letters).
        source: the segment's input stream.
        run: the segment's async runner (``AsyncRunner.run``).
        run_sync: the sync runner when every step of the segment is synchronous (the batch is
            then run inline), else None.
        options: the queue's options (group, batch, retries...).
        consumer: this consumer's name in the group (unique per process).
        dead_letters: the dead-letter stream.
        output: the stream that gets each event's answer, or None.
    """

    def __init__(
        self,
        *,
        segment: str,
        source: QueueBackend,
        run: Callable[[Event], Awaitable[Any]],
        run_sync: Callable[[Event], Any] | None,
        options: QueueOptions,
        consumer: str,
        dead_letters: QueueBackend,
        output: QueueBackend | None = None,
    ) -> None:
        self.segment = segment
        self.source = source
        self.options = options
        self.group = options.group or segment
        self.consumer = consumer
        self.statistics = ConsumerStatistics()
        self.ready = True
        self.answers: list[Any] | None = None
        """When a list, each event's answer is appended to it (the mock server's record)."""
        self._run = run
        self._run_sync = run_sync
        self._dead_letters = dead_letters
        self._output = output
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_key: dict[Any, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._acks: list[Message] = []
        self._acking: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Task[list[Message]] | None = None
        self._failures = 0
        self._next_claim = 0.0
        self._escaped: BaseException | None = None

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish the events in flight and ack them."""
        try:
            while not stop.is_set():
                await self.poll(stop)
        finally:
            await self.drain()

    async def poll(self, stop: asyncio.Event | None = None, *, block_ms: int | None = None) -> int:
        """Read once (waiting up to ``block_ms``) and start the events read; return how many.

        Waits for room first when ``max_in_flight`` events are being processed.

        Raises:
            BaseException: what escaped an event's task (a step's KeyboardInterrupt,
                CancelledError...): it is never swallowed, and its event is not acked.
        """
        self._raise_escaped()
        room = self.options.max_in_flight - len(self._tasks)
        if room <= 0:
            self._room.clear()
            await _wait(self._room, stop, seconds=self.options.block_ms / 1000)
            return 0
        wait_ms = self.options.block_ms if block_ms is None else block_ms
        prefetched, self._prefetch = self._prefetch, None
        messages = await prefetched if prefetched is not None else await self._read(room, wait_ms)
        if not messages:
            return 0
        if self._run_sync is not None:
            # Read the next batch while this one runs: the round trip overlaps the work.
            self._prefetch = asyncio.create_task(self._read(self.options.batch, wait_ms))
            await asyncio.sleep(0)  # let the read go out before the batch takes the loop
            await self._run_inline(messages)
        else:
            for message in messages:
                self._spawn(message)
        return len(messages)

    async def drain(self) -> None:
        """Wait for the events in flight, then send the acks still waiting; then raise what
        escaped an event's task, as ``poll`` does."""
        prefetched, self._prefetch = self._prefetch, None
        if prefetched is not None:
            messages = await prefetched  # already delivered to this consumer: finish them
            if messages:
                await self._run_inline(messages)
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._acking is not None:
            await self._acking
        await self._flush_acks()
        self._raise_escaped()

    def _raise_escaped(self) -> None:
        escaped, self._escaped = self._escaped, None
        if escaped is not None:
            raise escaped

    @property
    def in_flight(self) -> int:
        """Events being processed now."""
        return len(self._tasks)

    async def _read(self, room: int, block_ms: int) -> list[Message]:
        count = min(self.options.batch, room)
        try:
            messages: list[Message] = []
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.options.claim_idle_s / 2
                idle_ms = round(self.options.claim_idle_s * 1000)
                messages = await self.source.claim_stale(
                    self.group, self.consumer, idle_ms=idle_ms, count=count
                )
                self.statistics.claimed += len(messages)
            if len(messages) < count:
                wait = 0 if messages else block_ms
                messages += await self.source.consume(
                    self.group, self.consumer, count=count - len(messages), block_ms=wait
                )
        except BackendError as exc:
            await self._broker_failed(exc, "read")
            return []
        if self._failures:
            logger.info("segment %r: stream %r reachable again", self.segment, self.source.stream)
        self._failures = 0
        self.ready = True
        return messages

    async def _broker_failed(self, exc: Exception, action: str) -> None:
        self._failures += 1
        self.statistics.broker_errors += 1
        if self._failures >= NOT_READY_AFTER:
            self.ready = False
        delay = min(0.05 * 2.0**self._failures, MAX_BACKOFF_S)
        logger.warning(
            "segment %r: cannot %s stream %r (%s); retrying in %.2f s",
            self.segment,
            action,
            self.source.stream,
            exc,
            delay,
        )
        await asyncio.sleep(delay)

    # -- processing -----------------------------------------------------------------------

    async def _run_inline(self, messages: list[Message]) -> None:
        run_sync = self._run_sync
        assert run_sync is not None
        done: list[tuple[Message, Any]] = []
        for message in messages:
            try:
                event = decode_event(message)
            except EnvelopeError as exc:
                await self._give_up(message, str(exc), None)
                continue
            try:
                done.append((message, run_sync(event)))
            except Exception as exc:  # noqa: BLE001 - every failure is retried or dead-lettered
                await self._failed(message, _as_step_error(exc, message))
        if self.answers is not None:
            self.answers.extend(answer for _, answer in done)
        if self._output is not None and done:
            await asyncio.gather(*(self._finish(message, answer) for message, answer in done))
            return
        self.statistics.processed += len(done)
        self._acks.extend(message for message, _ in done)
        self._schedule_acks()

    def _spawn(self, message: Message) -> None:
        key = message.key
        before = self._last_of_key.get(key) if key is not None else None
        task = asyncio.create_task(self._handle(message, before))
        self._tasks.add(task)
        if key is not None:
            self._last_of_key[key] = task
        task.add_done_callback(lambda done: self._forget(done, key))

    def _forget(self, task: asyncio.Task[None], key: Any) -> None:
        self._tasks.discard(task)
        if key is not None and self._last_of_key.get(key) is task:
            del self._last_of_key[key]
        self._room.set()
        if self._escaped is None:  # what escaped _handle is never swallowed: poll raises it
            self._escaped = asyncio.CancelledError() if task.cancelled() else task.exception()

    async def _handle(self, message: Message, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # the previous event of this key finishes first
        try:
            event = decode_event(message)
        except EnvelopeError as exc:
            await self._give_up(message, str(exc), None)
            return
        try:
            answer = await self._run(event)
        except Exception as exc:  # noqa: BLE001 - every failure is retried or dead-lettered
            await self._failed(message, _as_step_error(exc, message))
            return
        if self.answers is not None:
            self.answers.append(answer)
        await self._finish(message, answer)

    async def _finish(self, message: Message, answer: Any) -> None:
        """Write the answer to the output stream (if any), then ack."""
        if self._output is not None:
            try:
                await self._output.publish(
                    encode_answer(answer), event_id=message.event_id, key=message.key
                )
            except (BackendError, TypeError) as exc:
                error = StepError(f"(output of {self.segment})", message.event_id, exc)
                await self._failed(message, error)
                return
        self.statistics.processed += 1
        self._acks.append(message)
        self._schedule_acks()

    async def _failed(self, message: Message, error: StepError) -> None:
        """Retry later, or dead-letter the event after its last delivery."""
        if message.deliveries >= self.options.max_deliveries:
            cause = error.cause
            await self._give_up(message, f"{type(cause).__name__}: {cause}", error.step)
            return
        delay = self.options.retry_delay(message.deliveries)
        try:
            await self.source.nack(self.group, message, delay_s=delay)
        except BackendError as exc:
            # Left pending: another delivery comes when the message is claimed as stale.
            logger.warning(
                "segment %r: cannot give back event %s: %s",
                self.segment,
                message.event_id,
                exc,
                extra={"event_id": message.event_id, "segment": self.segment},
            )
            return
        self.statistics.retried += 1

    async def _give_up(self, message: Message, error: str, step: str | None) -> None:
        payload = dead_letter(
            message, error=error, step=step, segment=self.segment, source=self.source.stream
        )
        try:
            await self._dead_letters.publish(payload, event_id=message.event_id, key=message.key)
        except BackendError as exc:
            logger.warning(
                "segment %r: cannot dead-letter event %s (%s); it stays pending",
                self.segment,
                message.event_id,
                exc,
                extra={"event_id": message.event_id, "segment": self.segment, "step": step},
            )
            return
        logger.warning(
            "segment %r: event %s dead-lettered to %r after %d deliveries: %s (step %s)",
            self.segment,
            message.event_id,
            self._dead_letters.stream,
            message.deliveries,
            error,
            step,
            extra={"event_id": message.event_id, "segment": self.segment, "step": step},
        )
        self.statistics.dead_lettered += 1
        self._acks.append(message)
        self._schedule_acks()

    # -- acks -----------------------------------------------------------------------------

    def _schedule_acks(self) -> None:
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self.source.ack_many(self.group, batch)
            except BackendError as exc:
                # Not acked: the events are delivered again later (duplicates, never losses).
                self.statistics.broker_errors += 1
                logger.warning(
                    "segment %r: %d acks lost (%s); those events will be redelivered",
                    self.segment,
                    len(batch),
                    exc,
                )
                return
            self.statistics.acked += len(batch)


def _as_step_error(exc: Exception, message: Message) -> StepError:
    if isinstance(exc, StepError):
        return exc
    error = StepError("(segment)", message.event_id, exc)
    error.__cause__ = exc
    return error


async def _wait(event: asyncio.Event, stop: asyncio.Event | None, *, seconds: float) -> None:
    """Wait for ``event`` (or ``stop``), at most ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait())]
    if stop is not None:
        waiters.append(asyncio.ensure_future(stop.wait()))
    _, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
