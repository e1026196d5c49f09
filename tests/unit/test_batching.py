"""Adaptive micro-batching: dispatch policy, per-caller results, limits and failure isolation."""

from __future__ import annotations

import asyncio
import doctest
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from servegraph.errors import (
    NotReadyError,
    OverloadedError,
    ProtocolError,
    StepError,
    StepTimeout,
)
from servegraph.models import batching
from servegraph.models.batching import Batcher, BatchSettings, BatchStatistics

T = TypeVar("T")
"""The result type of a test's async body."""


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body in a fresh loop, bounded so a bug cannot hang the suite."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition that another task or a predict thread will make true."""
    while not condition():  # noqa: ASYNC110 - predict threads change state without the loop
        await asyncio.sleep(0.001)


async def attempt(batcher: Batcher, rows: list[Any]) -> list[Any] | Exception:
    """Submit and return the outputs or the error, so one caller's failure is checked alone."""
    try:
        return await batcher.submit(rows)
    except (StepError, ProtocolError, NotReadyError) as exc:
        return exc


class GatedModel:
    """An async predict that records its batches and holds the first one until released."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.started_at: list[float] = []
        self.gate = asyncio.Event()

    async def __call__(self, rows: list[Any]) -> list[Any]:
        self.batches.append(list(rows))
        self.started_at.append(asyncio.get_running_loop().time())
        if len(self.batches) == 1:
            await self.gate.wait()
        return [row * 10 for row in rows]

    async def wait_first_batch(self) -> None:
        await until(lambda: len(self.batches) >= 1)


def test_an_idle_model_runs_a_request_at_once() -> None:
    async def main() -> float:
        settings = BatchSettings(max_latency_ms=1000, max_batch_size=64)
        async with Batcher(lambda rows: [row + 1 for row in rows], settings) as batcher:
            started = time.perf_counter()
            assert await batcher.submit([1, 2]) == [2, 3]
            return time.perf_counter() - started

    assert run(main) < 0.2


def test_requests_arriving_while_busy_share_the_next_batch() -> None:
    async def main() -> None:
        model = GatedModel()
        async with (
            Batcher(model, BatchSettings(max_batch_size=100)) as batcher,
            asyncio.TaskGroup() as group,
        ):
            first = group.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            waiters = [group.create_task(batcher.submit([i, i])) for i in range(1, 6)]
            await until(lambda: batcher.statistics().queued_requests == 5)
            model.gate.set()
        assert first.result() == [0]
        assert [waiter.result() for waiter in waiters] == [[i * 10, i * 10] for i in range(1, 6)]
        assert model.batches == [[0], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]

    run(main)


def test_each_of_64_callers_gets_exactly_its_outputs() -> None:
    def predict(rows: list[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
        return np.asarray(rows, dtype=np.int64) * 3 + 1

    async def main() -> None:
        settings = BatchSettings(max_batch_size=16, max_latency_ms=1)
        async with Batcher(predict, settings) as batcher:
            inputs = [[caller * 100 + j for j in range(caller % 5 + 1)] for caller in range(64)]
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(batcher.submit(rows)) for rows in inputs]
            for rows, task in zip(inputs, tasks, strict=True):
                assert [int(value) for value in task.result()] == [row * 3 + 1 for row in rows]
            stats = batcher.statistics()
            assert stats.rows == sum(len(rows) for rows in inputs)
            assert stats.batches < 64  # callers were batched together

    run(main)


def test_batches_never_exceed_max_batch_size() -> None:
    async def main() -> None:
        seen: list[int] = []

        async def predict(rows: list[int]) -> list[int]:
            seen.append(len(rows))
            await asyncio.sleep(0)
            return rows

        async with (
            Batcher(predict, BatchSettings(max_batch_size=8)) as batcher,
            asyncio.TaskGroup() as group,
        ):
            tasks = [group.create_task(batcher.submit([i, i, i])) for i in range(20)]
        assert [task.result() for task in tasks] == [[i, i, i] for i in range(20)]
        assert max(seen) <= 8
        assert sum(seen) == 60
        assert any(size == 6 for size in seen)  # two requests of 3 rows shared a batch

    run(main)


def test_an_oversized_request_runs_alone_and_is_not_split() -> None:
    async def main() -> None:
        model = GatedModel()
        async with (
            Batcher(model, BatchSettings(max_batch_size=4)) as batcher,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            small = group.create_task(batcher.submit([1]))
            big = group.create_task(batcher.submit(list(range(10))))
            await until(lambda: batcher.statistics().queued_requests == 2)
            model.gate.set()
        assert small.result() == [10]
        assert big.result() == [row * 10 for row in range(10)]
        assert model.batches[1:] == [[1], list(range(10))]
        assert batcher.statistics().max_batch_size_seen == 10

    run(main)


def test_a_partial_batch_leaves_within_max_latency() -> None:
    async def main() -> None:
        model = GatedModel()
        settings = BatchSettings(max_batch_size=100, max_latency_ms=100)
        async with Batcher(model, settings) as batcher:
            loop = asyncio.get_running_loop()
            async with asyncio.TaskGroup() as group:
                group.create_task(batcher.submit([0]))
                await model.wait_first_batch()
                oldest_arrival = loop.time()
                oldest = group.create_task(batcher.submit([1]))
                await asyncio.sleep(0)
                model.gate.set()  # the model is free, but the queued batch is far from full
                await asyncio.sleep(0.005)
                later = group.create_task(batcher.submit([2]))  # joins the open batch
        waited = model.started_at[1] - oldest_arrival
        assert 0.09 <= waited < 0.1 + 0.15
        assert model.batches[1] == [1, 2]
        assert oldest.result() == [10]
        assert later.result() == [20]

    run(main)


def test_a_full_batch_leaves_without_waiting_for_max_latency() -> None:
    async def main() -> float:
        model = GatedModel()
        settings = BatchSettings(max_batch_size=4, max_latency_ms=1000)
        async with Batcher(model, settings) as batcher, asyncio.TaskGroup() as group:
            group.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            group.create_task(batcher.submit([1, 2]))
            group.create_task(batcher.submit([3, 4]))
            await until(lambda: batcher.statistics().queued_rows == 4)
            started = time.perf_counter()
            model.gate.set()
        assert model.batches[1] == [1, 2, 3, 4]
        return time.perf_counter() - started

    assert run(main) < 0.2


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    async def main() -> None:
        model = GatedModel()
        settings = BatchSettings(max_batch_size=2, max_queue_size=4)
        async with Batcher(model, settings, name="ranker") as batcher, asyncio.TaskGroup() as group:
            group.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            waiters = [group.create_task(batcher.submit([i, i])) for i in (1, 2)]
            await until(lambda: batcher.statistics().queued_rows == 4)
            with pytest.raises(OverloadedError) as caught:
                await batcher.submit([9])
            model.gate.set()
        assert caught.value.retry_after > 0
        assert "'ranker'" in str(caught.value)
        assert "max_queue_size=4" in str(caught.value)
        assert [waiter.result() for waiter in waiters] == [[10, 10], [20, 20]]
        assert [9] not in model.batches

    run(main)


def test_a_request_larger_than_the_queue_is_a_protocol_error() -> None:
    async def main() -> None:
        async with Batcher(lambda rows: rows, BatchSettings(max_queue_size=2)) as batcher:
            with pytest.raises(ProtocolError, match="max_queue_size=2"):
                await batcher.submit([1, 2, 3])

    run(main)


def test_timeout_raises_step_timeout_and_a_queued_request_never_runs() -> None:
    async def main() -> None:
        model = GatedModel()
        settings = BatchSettings(timeout_ms=30, max_latency_ms=0)
        async with Batcher(model, settings, name="slow") as batcher:
            running = asyncio.create_task(attempt(batcher, [1]))
            await model.wait_first_batch()
            with pytest.raises(StepTimeout) as caught:
                await batcher.submit([2])
            assert isinstance(await running, StepTimeout)  # its result will be discarded
            assert batcher.statistics().queued_requests == 0
            model.gate.set()
            await until(lambda: batcher.statistics().in_flight_batches == 0)
            assert await batcher.submit([3]) == [30]
        assert caught.value.step == "slow"
        assert "'slow'" in str(caught.value)
        assert isinstance(caught.value, TimeoutError)
        assert model.batches == [[1], [3]]  # [2] never reached predict

    run(main)


def test_a_predict_failure_fails_only_the_member_whose_rows_fail() -> None:
    calls: list[list[int]] = []

    def predict(rows: list[int]) -> list[int]:
        calls.append(list(rows))
        if any(row < 0 for row in rows):
            message = "negative row"
            raise ValueError(message)
        return [row * 2 for row in rows]

    async def main() -> list[list[Any] | Exception]:
        async with (
            Batcher(predict, BatchSettings(), name="scorer") as batcher,
            asyncio.TaskGroup() as group,
        ):
            tasks = [group.create_task(attempt(batcher, rows)) for rows in ([1, 2], [-1], [3])]
        return [task.result() for task in tasks]

    good, bad, other = run(main)
    assert good == [2, 4]
    assert other == [6]
    assert isinstance(bad, StepError)
    assert bad.step == "scorer"
    assert isinstance(bad.__cause__, ValueError)
    assert calls[0] == [1, 2, -1, 3]  # one batch first, then each member alone
    assert sorted(calls[1:]) == [[-1], [1, 2], [3]]


def test_a_single_member_failure_is_not_rerun() -> None:
    calls: list[list[int]] = []

    def predict(rows: list[int]) -> list[int]:
        calls.append(rows)
        raise KeyError(rows[0])

    async def main() -> None:
        async with Batcher(predict, BatchSettings()) as batcher:
            with pytest.raises(StepError) as caught:
                await batcher.submit([7])
        assert isinstance(caught.value.cause, KeyError)

    run(main)
    assert calls == [[7]]


def test_a_wrong_output_count_fails_every_member_of_the_batch() -> None:
    calls: list[list[int]] = []

    def predict(rows: list[int]) -> list[int]:
        calls.append(rows)
        return rows[:-1]

    async def main() -> list[list[Any] | Exception]:
        async with (
            Batcher(predict, BatchSettings(), name="short") as batcher,
            asyncio.TaskGroup() as group,
        ):
            tasks = [group.create_task(attempt(batcher, rows)) for rows in ([1, 2], [3], [4])]
        return [task.result() for task in tasks]

    results = run(main)
    assert len(calls) == 1  # not re-run: the count is wrong for the batch as a whole
    for result in results:
        assert isinstance(result, StepError)
        assert isinstance(result.cause, ValueError)
        assert "model 'short' returned 3 outputs for 4 rows" in str(result)


def test_an_output_without_length_fails_clearly() -> None:
    async def main() -> None:
        async with Batcher(lambda rows: None, BatchSettings(), name="broken") as batcher:  # type: ignore[arg-type]
            with pytest.raises(StepError, match="returned NoneType"):
                await batcher.submit([1])

    run(main)


def test_the_validate_hook_fails_only_its_caller() -> None:
    seen: list[Any] = []

    def predict(rows: list[Any]) -> list[Any]:
        seen.extend(rows)
        return rows

    def validate(rows: list[Any]) -> None:
        if any(isinstance(row, str) for row in rows):
            message = "rows must be numbers"
            raise TypeError(message)

    async def main() -> list[list[Any] | Exception]:
        async with (
            Batcher(predict, BatchSettings(), name="typed", validate=validate) as batcher,
            asyncio.TaskGroup() as group,
        ):
            tasks = [group.create_task(attempt(batcher, rows)) for rows in ([1], ["x"], [2])]
        return [task.result() for task in tasks]

    first, bad, last = run(main)
    assert first == [1]
    assert last == [2]
    assert isinstance(bad, ProtocolError)
    assert isinstance(bad.__cause__, TypeError)
    assert "'typed'" in str(bad)
    assert "x" not in seen


def test_rows_must_be_a_list_and_empty_rows_need_no_predict() -> None:
    calls: list[list[Any]] = []

    def predict(rows: list[Any]) -> list[Any]:
        calls.append(rows)
        return rows

    async def main() -> None:
        async with Batcher(predict, BatchSettings()) as batcher:
            with pytest.raises(ProtocolError, match="list of rows"):
                await batcher.submit((1, 2))  # type: ignore[arg-type]
            assert await batcher.submit([]) == []

    run(main)
    assert calls == []


def test_a_sync_predict_runs_off_the_loop_thread() -> None:
    threads: list[threading.Thread] = []

    def predict(rows: list[int]) -> list[int]:
        threads.append(threading.current_thread())
        return rows

    async def main() -> None:
        async with Batcher(predict, BatchSettings(), name="cpu") as batcher:
            assert await batcher.submit([1]) == [1]

    run(main)
    assert threads
    assert threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("servegraph-batch-cpu")


def test_sync_batches_run_in_parallel_up_to_workers() -> None:
    both_running = threading.Barrier(2, timeout=2)

    def predict(rows: list[int]) -> list[int]:
        both_running.wait()  # breaks (and fails the test) unless two batches run at once
        return rows

    async def main() -> None:
        settings = BatchSettings(workers=2, max_batch_size=1, max_latency_ms=0)
        async with Batcher(predict, settings) as batcher, asyncio.TaskGroup() as group:
            tasks = [group.create_task(batcher.submit([i])) for i in (1, 2)]
        assert [task.result() for task in tasks] == [[1], [2]]

    run(main)


def test_a_threaded_predict_holds_back_waiters_until_it_finishes() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def predict(rows: list[int]) -> list[int]:
        batches.append(list(rows))
        if len(batches) == 1:
            release.wait(timeout=2)
        return rows

    async def main() -> None:
        async with (
            Batcher(predict, BatchSettings(max_latency_ms=1)) as batcher,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(batcher.submit([0]))
            await until(lambda: len(batches) == 1)
            for i in range(1, 4):
                group.create_task(batcher.submit([i]))
            await until(lambda: batcher.statistics().queued_requests == 3)
            release.set()

    run(main)
    assert batches == [[0], [1, 2, 3]]


def test_async_predicts_are_awaited_on_the_loop() -> None:
    loop_threads: list[int] = []

    async def predict(rows: list[int]) -> tuple[int, ...]:
        loop_threads.append(threading.get_ident())
        await asyncio.sleep(0)
        return tuple(row - 1 for row in rows)

    class Model:
        async def __call__(self, rows: list[int]) -> list[int]:
            loop_threads.append(threading.get_ident())
            return [row + 1 for row in rows]

    async def main() -> None:
        async with Batcher(predict, BatchSettings()) as batcher:
            assert await batcher.submit([5, 6]) == [4, 5]
        async with Batcher(Model(), BatchSettings()) as batcher:
            assert await batcher.submit([5]) == [6]

    run(main)
    assert loop_threads == [threading.get_ident()] * 2


def test_aclose_fails_queued_requests_finishes_running_ones_and_is_idempotent() -> None:
    async def main() -> None:
        model = GatedModel()
        batcher = Batcher(model, BatchSettings(), name="closing")
        running = asyncio.create_task(batcher.submit([1]))
        await model.wait_first_batch()
        queued = asyncio.create_task(attempt(batcher, [2]))
        gone = asyncio.create_task(batcher.submit([3]))
        await until(lambda: batcher.statistics().queued_requests == 2)
        closing = asyncio.create_task(batcher.aclose())
        gone.cancel()  # its request is still queued when aclose runs
        with pytest.raises(asyncio.CancelledError):
            await gone
        error = await queued
        assert isinstance(error, NotReadyError)
        assert "'closing'" in str(error)
        assert "closing" in error.reason
        assert not closing.done()  # it waits for the batch in flight
        model.gate.set()
        await closing
        assert await running == [10]
        await batcher.aclose()
        with pytest.raises(NotReadyError, match="closed"):
            await batcher.submit([4])
        assert model.batches == [[1]]

    run(main)


def test_aclose_of_an_unstarted_batcher_is_a_no_op() -> None:
    async def main() -> None:
        batcher = Batcher(lambda rows: rows, BatchSettings())
        await batcher.aclose()
        await batcher.aclose()
        with pytest.raises(NotReadyError):
            async with batcher:
                pass

    run(main)


def test_statistics_count_the_queue_and_the_batches() -> None:
    async def main() -> None:
        model = GatedModel()
        async with Batcher(model, BatchSettings(max_batch_size=10)) as batcher:
            assert batcher.statistics() == BatchStatistics(0, 0, 0, 0, 0, 0.0, 0)
            async with asyncio.TaskGroup() as group:
                group.create_task(batcher.submit([0, 0]))
                await model.wait_first_batch()
                group.create_task(batcher.submit([1, 1, 1]))
                group.create_task(batcher.submit([2]))
                await until(lambda: batcher.statistics().queued_requests == 2)
                busy = batcher.statistics()
                model.gate.set()
            done = batcher.statistics()
        assert (busy.queued_requests, busy.queued_rows, busy.in_flight_batches) == (2, 4, 1)
        assert done == BatchStatistics(
            queued_requests=0,
            queued_rows=0,
            in_flight_batches=0,
            batches=2,
            rows=6,
            mean_batch_size=3.0,
            max_batch_size_seen=4,
        )

    run(main)


def test_a_cancelled_waiter_is_removed_from_the_queue() -> None:
    async def main() -> None:
        model = GatedModel()
        async with Batcher(model, BatchSettings()) as batcher:
            first = asyncio.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            leaving = asyncio.create_task(batcher.submit([5, 5]))
            staying = asyncio.create_task(batcher.submit([6]))
            await until(lambda: batcher.statistics().queued_requests == 2)
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
            stats = batcher.statistics()
            assert (stats.queued_requests, stats.queued_rows) == (1, 1)
            model.gate.set()
            assert await first == [0]
            assert await staying == [60]
        assert model.batches == [[0], [6]]

    run(main)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch_size", 0),
        ("max_batch_size", True),
        ("max_latency_ms", -1.0),
        ("max_latency_ms", float("nan")),
        ("max_queue_size", 0),
        ("timeout_ms", 0.0),
        ("timeout_ms", float("inf")),
        ("workers", 0),
        ("workers", 1.5),
    ],
)
def test_settings_reject_invalid_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        BatchSettings(**{field: value})


def test_the_module_examples_run() -> None:
    result = doctest.testmod(batching, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_a_batcher_serves_one_event_loop() -> None:
    batcher = Batcher(lambda rows: rows, BatchSettings(), name="bound")
    assert "'bound'" in repr(batcher)

    async def first() -> None:
        assert await batcher.submit([1]) == [1]

    async def second() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await batcher.submit([2])

    run(first)
    run(second)


def test_cancelling_aclose_fails_the_batches_in_flight() -> None:
    async def main() -> None:
        model = GatedModel()
        batcher = Batcher(model, BatchSettings(), name="abrupt")
        running = asyncio.create_task(attempt(batcher, [1]))
        await model.wait_first_batch()
        closing = asyncio.create_task(batcher.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        error = await running
        assert isinstance(error, NotReadyError)
        assert "closing" in str(error)
        await batcher.aclose()  # still idempotent

    run(main)


@pytest.mark.parametrize("behind", [[], [[6]]])
def test_a_waiter_cancelled_as_the_model_frees_up_never_runs(behind: list[list[int]]) -> None:
    async def main() -> None:
        model = GatedModel()
        async with Batcher(model, BatchSettings(max_latency_ms=0)) as batcher:
            first = asyncio.create_task(batcher.submit([0]))
            await model.wait_first_batch()
            leaving = asyncio.create_task(batcher.submit([5]))
            staying = [asyncio.create_task(batcher.submit(rows)) for rows in behind]
            await until(lambda: batcher.statistics().queued_requests == 1 + len(behind))
            model.gate.set()
            await asyncio.sleep(0)  # the batch ends and wakes the batching loop ...
            leaving.cancel()  # ... which then runs before the cancelled caller cleans up
            with pytest.raises(asyncio.CancelledError):
                await leaving
            assert await first == [0]
            assert [await task for task in staying] == [
                [row * 10 for row in rows] for rows in behind
            ]
        assert model.batches == [[0], *behind]

    run(main)


@pytest.mark.parametrize("failure", ["raises", "miscounts"])
def test_a_member_cancelled_during_a_failing_batch_is_left_alone(failure: str) -> None:
    calls: list[list[int]] = []

    async def predict(rows: list[int]) -> list[int]:
        calls.append(list(rows))
        if len(calls) > 1:
            return rows
        await release.wait()
        if failure == "raises":
            message = "batch failed"
            raise ValueError(message)
        return []

    release = asyncio.Event()

    async def main() -> None:
        async with Batcher(predict, BatchSettings()) as batcher:
            leaving = asyncio.create_task(batcher.submit([1]))
            staying = asyncio.create_task(attempt(batcher, [2]))
            await until(lambda: len(calls) == 1)
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
            release.set()
            result = await staying
        if failure == "raises":
            assert result == [2]
            assert calls == [[1, 2], [2]]  # the cancelled member was not re-run
        else:
            assert isinstance(result, StepError)
            assert calls == [[1, 2]]

    run(main)


def test_a_servegraph_error_from_validate_passes_unchanged() -> None:
    def validate(rows: list[Any]) -> None:
        message = "too many features"
        raise ProtocolError(message)

    async def main() -> None:
        async with Batcher(lambda rows: rows, BatchSettings(), validate=validate) as batcher:
            with pytest.raises(ProtocolError, match=r"^too many features$"):
                await batcher.submit([1])

    run(main)
