"""Adaptive micro-batching for model predict.

A `Batcher` stands in front of a model's ``predict(rows) -> outputs``. It merges the rows of
concurrent callers into one predict call and hands each caller back the outputs for its own rows.

The policy resembles Triton's dynamic batcher with ``max_queue_delay``, with one difference: a
batcher never delays a request when the model is idle.

* If a request arrives while no batch is running and nothing else is queued, it is sent at once.
  There is nothing to batch it with, so waiting would only add latency.
* Requests that arrive while the model is busy wait in a FIFO queue. Once a worker slot is free,
  the queue is sent as a batch when either of two things happens first: the queued rows reach
  ``max_batch_size``, or the oldest queued request has waited ``max_latency_ms``. It never waits
  longer than that. Under heavy load, the oldest request has usually waited through a whole batch
  already, so the next batch leaves at once and batch size follows the load. Under light load,
  ``max_latency_ms`` caps the extra wait.
* A batch takes whole requests from the head of the queue for as long as they fit in
  ``max_batch_size``. Requests are never split. A request larger than ``max_batch_size`` runs alone.
* At most ``workers`` batches run at the same time. A sync predict runs in a thread pool of that
  size and never on the event loop thread. An async predict is awaited on the loop.

Each failure reaches only the caller it belongs to:

* The ``validate`` hook runs for each request when it is submitted.
* If a batch predict raises, each member of the batch is re-run alone. Only members whose own rows
  fail get an error.
* If a per-request timeout expires while the request is still queued, the request is removed and
  never runs. If the request is already running, its result is discarded.
* If the queue is full, a new request is refused at once with `OverloadedError`. Its
  ``retry_after`` is estimated from recent batch latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from ..errors import (
    NotReadyError,
    OverloadedError,
    ProtocolError,
    ServegraphError,
    StepError,
    StepTimeout,
)


class BatchOutput(Protocol):
    """What predict returns: one output per row, sized and sliceable (list, tuple, numpy array)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> Any: ...


Predict = Callable[[list[Any]], BatchOutput] | Callable[[list[Any]], Awaitable[BatchOutput]]
"""A model's predict, sync or async: the rows of a batch in, one output per row out, in order."""

_LATENCY_WEIGHT = 0.2  # weight of the newest batch in the moving average of batch latency
_MIN_RETRY_AFTER = 0.01  # seconds: a full queue never advertises "retry right now"


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        message = f"{name} must be an integer >= 1, got {value!r}"
        raise ValueError(message)


def _check_milliseconds(name: str, value: object, *, allow_zero: bool) -> None:
    is_valid = False
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        is_valid = value >= 0 if allow_zero else value > 0
    if not is_valid:
        bound = ">= 0" if allow_zero else "> 0"
        message = f"{name} must be a finite number of milliseconds {bound}, got {value!r}"
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How a `Batcher` forms batches.

    Attributes:
        max_batch_size: Most rows in one batch. A single larger request still runs, alone.
        max_latency_ms: Longest a queued request waits for its batch to fill once the model can
            take it, counted from the arrival of the oldest queued request. A request that finds
            the model idle never waits.
        max_queue_size: Most rows waiting in the queue; beyond it requests are refused.
        timeout_ms: Per-request limit covering queueing and predict; None for no limit.
        workers: Most batches in flight at once (and threads for a sync predict).
    """

    max_batch_size: int = 32
    max_latency_ms: float = 5.0
    max_queue_size: int = 1024
    timeout_ms: float | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        _check_count("max_batch_size", self.max_batch_size)
        _check_milliseconds("max_latency_ms", self.max_latency_ms, allow_zero=True)
        _check_count("max_queue_size", self.max_queue_size)
        if self.timeout_ms is not None:
            _check_milliseconds("timeout_ms", self.timeout_ms, allow_zero=False)
        _check_count("workers", self.workers)


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """A snapshot of a `Batcher`.

    Attributes:
        queued_requests: Requests waiting for a batch.
        queued_rows: Rows of those requests.
        in_flight_batches: Batches being predicted now.
        batches: Batches dispatched so far (re-runs of members after a failure not counted).
        rows: Rows dispatched in those batches.
        mean_batch_size: ``rows / batches`` (0.0 before the first batch).
        max_batch_size_seen: Largest batch dispatched, in rows.
    """

    queued_requests: int
    queued_rows: int
    in_flight_batches: int
    batches: int
    rows: int
    mean_batch_size: float
    max_batch_size_seen: int


@dataclass(slots=True, eq=False)
class _Request:
    """One caller's rows and the future its answer goes to (identity equality, for removal)."""

    rows: list[Any]
    future: asyncio.Future[list[Any]]
    deadline: float  # loop time by which it must be dispatched (its arrival when it came idle)
    is_queued: bool = True


def _is_list(value: object) -> bool:
    return isinstance(value, list)


def _is_async(predict: object) -> bool:
    """True for async functions, methods, partials and objects with an ``async def __call__``."""
    call = type(predict).__call__
    return inspect.iscoroutinefunction(predict) or inspect.iscoroutinefunction(call)


class Batcher:
    """Merges concurrent predict requests into batches (see the module docstring).

    The batching loop is a task owned by the batcher: it starts on the first `submit` (or on
    ``async with``) in the running loop, and `aclose` stops it. A batcher serves one event loop.

    Example:
        >>> import asyncio
        >>> async def main() -> list[int]:
        ...     double = lambda rows: [row * 2 for row in rows]
        ...     async with Batcher(double, BatchSettings(), name="double") as batcher:
        ...         return await batcher.submit([1, 2, 3])
        >>> asyncio.run(main())
        [2, 4, 6]
    """

    def __init__(
        self,
        predict: Predict,
        settings: BatchSettings,
        *,
        name: str = "model",
        validate: Callable[[list[Any]], None] | None = None,
        inline: bool = False,
    ) -> None:
        """Wrap a predict callable.

        Args:
            predict: Called with the concatenated rows of a batch (a list); returns one output per
                row, in order: a list, tuple, numpy array or any sequence that can be sliced. A
                sync predict runs in a thread pool of ``settings.workers`` threads.
            settings: Batch size, latency, queue and timeout limits.
            name: The model name used in errors and thread names.
            validate: Called with each request's rows at submit time; raising rejects only that
                request (see `submit`).
            inline: run a sync predict on the event loop itself (for a quick model whose call
                costs less than a hop to a thread); batches then run one at a time.
        """
        self.name = name
        self.settings = settings
        self._predict: Callable[[list[Any]], BatchOutput | Awaitable[BatchOutput]] = predict
        self._validate = validate
        self._executor: ThreadPoolExecutor | None = None
        if not inline and not _is_async(predict):  # threads start with the first batch
            self._executor = ThreadPoolExecutor(
                max_workers=settings.workers, thread_name_prefix=f"servegraph-batch-{name}"
            )
        self._timeout = None if settings.timeout_ms is None else settings.timeout_ms / 1000
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._is_closing = False
        self._latency: float | None = None  # moving average of batch duration, seconds
        self._batches = 0
        self._rows = 0
        self._largest = 0

    def __repr__(self) -> str:
        return f"Batcher(name={self.name!r}, settings={self.settings!r})"

    async def __aenter__(self) -> Self:
        self._bind()
        if self._is_closing:
            raise NotReadyError(self.name, "the model is closed")
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def submit(self, rows: list[Any]) -> list[Any]:
        """Predict one caller's rows, batched with whatever else is queued.

        Safe to call from many tasks of one event loop at once.

        Args:
            rows: This caller's rows (a list). An empty list returns ``[]`` without a predict.

        Returns:
            The outputs for exactly these rows, in order, as a list. With a numpy output, the
            items are the array's items (numpy scalars or sub-arrays), not Python values.

        Raises:
            ProtocolError: ``rows`` is not a list, has more rows than ``max_queue_size``, or the
                ``validate`` hook rejected it (a `ServegraphError` from the hook passes as is).
            OverloadedError: The queue cannot take these rows now; see ``retry_after``.
            NotReadyError: The batcher is closed, or closed while the request was queued.
            StepTimeout: No answer within ``timeout_ms``; a still-queued request never runs.
            StepError: Predict failed for these rows, or returned the wrong number of outputs.
            RuntimeError: Called from another event loop than the one the batcher started in.
        """
        request = self._enqueue(rows)
        if request is None:
            return []
        scope = asyncio.timeout(self._timeout)
        try:
            async with scope:
                return await request.future
        except TimeoutError:
            if not scope.expired():  # pragma: no cover - futures only ever hold wrapped errors
                raise
            cause = TimeoutError(
                f"model {self.name!r} did not answer within {self.settings.timeout_ms} ms"
            )
            raise StepTimeout(self.name, None, cause) from cause
        finally:
            self._abandon(request)

    def statistics(self) -> BatchStatistics:
        """Return a snapshot of the queue and of the batches dispatched so far."""
        return BatchStatistics(
            queued_requests=len(self._queue),
            queued_rows=self._queued_rows,
            in_flight_batches=self._in_flight,
            batches=self._batches,
            rows=self._rows,
            mean_batch_size=self._rows / self._batches if self._batches else 0.0,
            max_batch_size_seen=self._largest,
        )

    async def aclose(self) -> None:
        """Stop the batcher; idempotent.

        Queued requests fail with `NotReadyError` ("the model is closing"); batches in flight
        finish and their callers get their answers. Later submits fail with `NotReadyError`.
        """
        self._is_closing = True
        self._fail_queued()
        self._wakeup.set()
        runner = self._runner
        if runner is not None and not runner.done():
            await runner
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # idle by now: every batch has finished

    # -- submit side ------------------------------------------------------------------------

    def _enqueue(self, rows: list[Any]) -> _Request | None:
        if not _is_list(rows):
            message = f"model {self.name!r} takes a list of rows, got {type(rows).__name__}"
            raise ProtocolError(message)
        loop = self._bind()
        if self._is_closing:
            raise NotReadyError(self.name, "the model is closed")
        count, limit = len(rows), self.settings.max_queue_size
        if count > limit:
            message = (
                f"a request of {count} rows can never fit the queue of model {self.name!r} "
                f"(max_queue_size={limit})"
            )
            raise ProtocolError(message)
        if self._queued_rows + count > limit:
            message = (
                f"model {self.name!r} is overloaded: {self._queued_rows} rows are queued and "
                f"{count} more would exceed max_queue_size={limit}"
            )
            raise OverloadedError(message, retry_after=self._retry_after())
        if self._validate is not None:
            self._check(self._validate, rows)
        if not rows:
            return None
        self._start()
        now = loop.time()
        is_idle = self._in_flight == 0 and not self._queue
        deadline = now if is_idle else now + self.settings.max_latency_ms / 1000
        request = _Request(rows, loop.create_future(), deadline)
        self._queue.append(request)
        self._queued_rows += count
        self._wakeup.set()
        return request

    def _check(self, validate: Callable[[list[Any]], None], rows: list[Any]) -> None:
        try:
            validate(rows)
        except ServegraphError:
            raise
        except Exception as exc:
            message = f"model {self.name!r} rejected the rows: {type(exc).__name__}: {exc}"
            raise ProtocolError(message) from exc

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            message = f"the batcher of model {self.name!r} is bound to another event loop"
            raise RuntimeError(message)
        return loop

    def _start(self) -> None:
        if self._runner is None:
            name = f"servegraph-batcher-{self.name}"
            self._runner = asyncio.get_running_loop().create_task(self._run(), name=name)

    def _abandon(self, request: _Request) -> None:
        """The caller left (answered, failed, timed out or cancelled): forget its request."""
        future = request.future
        future.cancel()  # no-op once done; a batch already holding a pending one skips it
        if not future.cancelled():
            future.exception()  # mark it retrieved: the caller may have left before reading it
        if request.is_queued:
            self._queue.remove(request)
            request.is_queued = False
            self._queued_rows -= len(request.rows)
            self._wakeup.set()

    def _retry_after(self) -> float:
        settings = self.settings
        per_batch = self._latency if self._latency is not None else settings.max_latency_ms / 1000
        ahead = self._in_flight + math.ceil(self._queued_rows / settings.max_batch_size)
        return max(per_batch * ahead / settings.workers, _MIN_RETRY_AFTER)

    def _closing_error(self) -> NotReadyError:
        return NotReadyError(self.name, "the model is closing")

    def _fail_queued(self) -> None:
        while self._queue:
            request = self._queue.popleft()
            request.is_queued = False
            if not request.future.done():
                request.future.set_exception(self._closing_error())
        self._queued_rows = 0

    # -- batching loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while (batch := await self._next_batch()) is not None:
                    group.create_task(self._run_batch(batch))
        finally:
            self._is_closing = True
            self._fail_queued()

    async def _next_batch(self) -> list[_Request] | None:
        """Wait until a batch should leave, by the rules in the module docstring, and take it."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        while not self._is_closing:
            when: float | None = None
            if self._queue and self._in_flight < settings.workers:
                # The head has the earliest deadline: a request gets deadline == arrival only
                # when it arrives to an empty queue, and the others keep arrival order.
                head = self._queue[0]
                if self._queued_rows >= settings.max_batch_size or loop.time() >= head.deadline:
                    batch = self._take_batch()
                    if batch:
                        return batch
                    continue  # only abandoned requests were left
                when = head.deadline
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(when):
                    await self._wakeup.wait()
        return None

    def _take_batch(self) -> list[_Request]:
        limit = self.settings.max_batch_size
        batch: list[_Request] = []
        size = 0
        while self._queue:
            request = self._queue[0]
            is_live = not request.future.done()
            if is_live and batch and size + len(request.rows) > limit:
                break
            self._queue.popleft()
            request.is_queued = False
            self._queued_rows -= len(request.rows)
            if is_live:
                batch.append(request)
                size += len(request.rows)
        if batch:
            self._in_flight += 1
            self._batches += 1
            self._rows += size
            self._largest = max(self._largest, size)
        return batch

    async def _run_batch(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            rows = [row for request in batch for row in request.rows]
            try:
                outputs = await self._call(rows)
            except Exception as exc:  # noqa: BLE001 - the callers get it, see _isolate
                await self._isolate(batch, exc)
            else:
                self._deliver(batch, outputs)
        finally:
            self._in_flight -= 1
            elapsed = loop.time() - started
            previous = self._latency
            self._latency = (
                elapsed if previous is None else previous + _LATENCY_WEIGHT * (elapsed - previous)
            )
            for request in batch:  # only when cancelled mid-predict, by a shutdown
                if not request.future.done():
                    request.future.set_exception(self._closing_error())
            self._wakeup.set()

    async def _call(self, rows: list[Any]) -> BatchOutput:
        if self._executor is None:
            result = self._predict(rows)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, self._predict, rows)
        if isinstance(result, Awaitable):  # also covers a sync wrapper returning a coroutine
            return await result
        return result

    def _split(self, outputs: BatchOutput, sizes: list[int]) -> list[list[Any]]:
        """Cut a batch's outputs into one list per request, checking there is one per row."""
        expected = sum(sizes)
        try:
            actual = len(outputs)
        except TypeError as exc:
            message = (
                f"model {self.name!r} returned {type(outputs).__name__}, "
                f"not a sequence with one output per row"
            )
            raise TypeError(message) from exc
        if actual != expected:
            message = (
                f"model {self.name!r} returned {actual} outputs for {expected} rows "
                f"(expected {expected}); predict must return exactly one output per row"
            )
            raise ValueError(message)
        offsets = [0, *itertools.accumulate(sizes)]
        return [list(outputs[start:stop]) for start, stop in itertools.pairwise(offsets)]

    def _deliver(self, batch: list[_Request], outputs: BatchOutput) -> None:
        try:
            parts = self._split(outputs, [len(request.rows) for request in batch])
        except Exception as exc:  # noqa: BLE001 - a bad output fails every member of the batch
            for request in batch:
                self._fail(request, exc)
            return
        for request, part in zip(batch, parts, strict=True):
            self._resolve(request, part)

    async def _isolate(self, batch: list[_Request], error: Exception) -> None:
        """Predict failed for the batch: re-run each member alone, so the error stays its own."""
        if len(batch) == 1:
            self._fail(batch[0], error)
            return
        for request in batch:
            if request.future.done():  # it timed out or was cancelled: do not run it again
                continue
            try:
                outputs = await self._call(request.rows)
                (part,) = self._split(outputs, [len(request.rows)])
            except Exception as exc:  # noqa: BLE001 - this member's own failure goes to it
                self._fail(request, exc)
            else:
                self._resolve(request, part)

    def _resolve(self, request: _Request, outputs: list[Any]) -> None:
        if not request.future.done():  # done: it timed out or was cancelled meanwhile
            request.future.set_result(outputs)

    def _fail(self, request: _Request, cause: Exception) -> None:
        if not request.future.done():  # done: it timed out or was cancelled meanwhile
            error = StepError(self.name, None, cause)
            error.__cause__ = cause
            request.future.set_exception(error)
