"""Prediction records: every tracked prediction written to Parquet files or a stream, off the
request path.

A ``PredictionRecorder`` is a graph's ``context.hooks.record_prediction``: the models of the
graph hand it a ``PredictionRecord`` per prediction. The hook only filters by model, samples,
and appends the record to a bounded in-memory queue (a ``deque``: appends are atomic, so
model worker threads may call it too); when the queue is full the record is dropped and
counted, never waited for. A writer thread of the recorder's own drains the queue in batches
(whenever ``batch_size`` records are waiting, and every ``flush_interval_s``) and hands them to
the sink, so encoding and I/O never run on a request's thread or event loop:

- **Parquet** (``parquet:///var/lib/records``, or a plain directory path; the default): one
  file per model and UTC day per flush interval,
  ``<root>/<model>/<YYYY-MM-DD>/part-<time>-<id>.parquet``. Each batch is a row group
  appended to a hidden temporary file (``.part-….parquet.tmp``), renamed to its final name at
  the end of the interval (or on ``flush``/``close``), so a reader sees complete files only,
  and a busy server writes a file per interval, not one per batch. Columns:
  ``RECORD_COLUMNS`` (``model``, ``version``, ``event_id``, ``timestamp``, ``latency_ms``,
  ``error``, ``inputs``, ``outputs``), typed as ``record_schema()`` says.
- **A stream** (``memory://records``, ``redis://host:6379/records``, ``nats://host:4222/records``):
  one message per record, a servegraph event envelope whose body is the record (so a graph
  can consume the stream), whose message id is ``<event id>/<model>[:<version>]``
  (``record_message_id``: unique per record, as brokers de-duplicate on it).

``install_recorder(context, settings)`` builds a recorder from a graph's tracking settings and
installs its hook; servers call ``await recorder.astart()`` before serving and
``await recorder.aclose()`` (which writes everything queued) when they stop.

Example:
    >>> import tempfile
    >>> from servegraph import Graph
    >>> from servegraph.models.server import ModelServer
    >>> class Doubler(ModelServer):
    ...     def predict(self, request):
    ...         return [2 * row[0] for row in request["inputs"]]
    >>> graph = Graph.router()
    >>> _ = graph.add_route("doubler", Doubler)
    >>> root = tempfile.mkdtemp()
    >>> with graph.mock_server() as server:
    ...     recorder = install_recorder(server.context, {"sink": root})
    ...     recorder.start()
    ...     _ = server.test("/", {"inputs": [[1], [2]]}, event_id="e-1")
    ...     recorder.close()
    >>> table = read_records(root, "doubler")
    >>> table.column("event_id").to_pylist(), table.column("outputs").to_pylist()
    (['e-1'], ['[2,4]'])
    >>> import shutil; shutil.rmtree(root)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import msgspec

from ..context import Context
from ..errors import (
    BackendError,
    GraphError,
    MissingDependencyError,
    Problem,
    ServegraphError,
)
from ..models.records import PredictionRecord

if TYPE_CHECKING:
    from ..streams.base import QueueBackend
    from ..streams.memory import MemoryBroker

logger = logging.getLogger("servegraph.monitoring")

_T = TypeVar("_T")

ALL_MODELS = "*"
"""``models`` value that tracks every model of the graph."""

DEFAULT_SINK = "parquet://records"
"""The embedded default: Parquet files under ``./records`` (relative to the server's cwd)."""

PARQUET_FLUSH_INTERVAL_S = 60.0
"""How often Parquet files are completed by default: few files, readable within a minute."""

STREAM_FLUSH_INTERVAL_S = 1.0
"""How often records are published to a stream by default."""

PARQUET_SCHEME = "parquet"
STREAM_SCHEMES = ("memory", "redis", "rediss", "nats")

RECORD_COLUMNS = (
    "model",
    "version",
    "event_id",
    "timestamp",
    "latency_ms",
    "error",
    "inputs",
    "outputs",
)
"""The columns of a records Parquet file, in order (see ``record_schema`` for their types)."""

PUBLISH_CHUNK = 256
"""Records published to a stream concurrently (the Redis backend batches them in one trip)."""

HOME_LOOP_TIMEOUT_S = 30.0
"""How long the writer waits for the loop that started the recorder to publish a batch."""


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """Which models are tracked, where their records go, how many, how they are batched.

    Args:
        models: ``"*"`` (every model of the graph) or the names of the tracked models (a
            route named ``"model:version"`` is model ``model``).
        sink: ``parquet:///abs/dir``, ``parquet://rel/dir`` or a directory path (Parquet
            files), or a stream URL (``memory://``, ``redis://``, ``rediss://``, ``nats://``).
        sample: the share of predictions recorded, 0 to 1 (each one drawn independently).
        seed: seeds the sampling's random numbers (repeatable runs); None: unseeded.
        max_queue: records held in memory at most; past it new records are dropped and
            counted (``PredictionRecorder.dropped``).
        batch_size: the writer wakes when this many records are queued, and writes at most
            this many at once (a Parquet row group, or a stream batch).
        flush_interval_s: how often the writer writes what is queued and completes the
            Parquet files: every record is readable within about this long. None: 60 s for
            Parquet files (a file per model a minute at most), 1 s for a stream.

    Raises:
        GraphError: a setting is invalid (the message names it and says what it takes).
    """

    models: str | tuple[str, ...] = ALL_MODELS
    sink: str = DEFAULT_SINK
    sample: float = 1.0
    seed: int | None = None
    max_queue: int = 50_000
    batch_size: int = 5_000
    flush_interval_s: float | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        models: Any = self.models
        if isinstance(models, list):  # the spec form
            models = tuple(models)
            object.__setattr__(self, "models", models)
        if models != ALL_MODELS and not (
            isinstance(models, tuple)
            and models
            and all(isinstance(name, str) and name for name in models)
        ):
            problems.append(f'models must be "*" or a non-empty list of names, got {models!r}')
        if not isinstance(self.sink, str) or not self.sink:
            problems.append(f"sink must be a URL or a directory, got {self.sink!r}")
        else:
            problem = _sink_problem(self.sink)
            if problem:
                problems.append(problem)
        if not _is_number(self.sample) or not 0.0 <= self.sample <= 1.0:
            problems.append(f"sample must be a number from 0 to 1, got {self.sample!r}")
        if self.seed is not None and (type(self.seed) is not int):
            problems.append(f"seed must be an integer or null, got {self.seed!r}")
        for name in ("max_queue", "batch_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        interval = self.flush_interval_s
        if interval is not None and (not _is_number(interval) or not interval > 0):
            problems.append(
                f"flush_interval_s must be a positive number of seconds, got "
                f"{self.flush_interval_s!r}"
            )
        if problems:
            raise GraphError([_problem(text) for text in problems])

    @classmethod
    def parse(cls, data: TrackingSettings | Mapping[str, Any] | object) -> TrackingSettings:
        """Settings from their spec form (``{"models": "*", "sink": ..., "sample": 0.1}``).

        Raises:
            GraphError: an unknown key or an invalid value.
        """
        if isinstance(data, TrackingSettings):
            return data
        if not isinstance(data, Mapping):
            message = f"tracking must be a mapping of settings, got {type(data).__name__}"
            raise GraphError([_problem(message)])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            message = (
                f"unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
            raise GraphError([_problem(message)])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The spec form: only what differs from the defaults (``models`` as a list)."""
        data: dict[str, Any] = {}
        for name, spec in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if value != spec.default:
                data[name] = list(value) if isinstance(value, tuple) else value
        return data

    @property
    def interval_s(self) -> float:
        """The flush interval in force (``flush_interval_s``, or the sink's default)."""
        if self.flush_interval_s is not None:
            return float(self.flush_interval_s)
        return STREAM_FLUSH_INTERVAL_S if is_stream_sink(self.sink) else PARQUET_FLUSH_INTERVAL_S

    def tracks(self, model: str) -> bool:
        """Whether the predictions of ``model`` are recorded."""
        return self.models == ALL_MODELS or model in self.models


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _problem(message: str) -> Problem:
    return Problem(None, f"tracking: {message}")


def _sink_problem(sink: str) -> str | None:
    scheme = urlsplit(sink).scheme
    if scheme == PARQUET_SCHEME:
        return None if parquet_root(sink) else f"sink {sink!r} names no directory"
    if scheme in STREAM_SCHEMES:
        from ..streams.settings import StreamURL

        try:
            StreamURL.parse(sink)
        except ValueError as exc:
            return f"sink: {exc}"
        return None
    if "://" in sink:
        schemes = ", ".join(f"{name}://" for name in (PARQUET_SCHEME, *STREAM_SCHEMES))
        return f"sink {sink!r} has an unknown scheme; use a directory or one of {schemes}"
    return None  # a plain directory path: Parquet files


def parquet_root(sink: str) -> str:
    """The directory of a Parquet sink: ``parquet:///abs/dir`` is ``/abs/dir``,
    ``parquet://rel/dir`` is ``rel/dir``, and a plain path is itself."""
    parts = urlsplit(sink)
    if parts.scheme != PARQUET_SCHEME:
        return sink
    return parts.netloc + parts.path


def is_stream_sink(sink: str) -> bool:
    """Whether ``sink`` is a stream URL (else it is a Parquet directory)."""
    return urlsplit(sink).scheme in STREAM_SCHEMES


# -- what is written -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return str(value)  # a record is never lost to an odd value: it is written as its text


_json = msgspec.json.Encoder(enc_hook=_jsonable)


def json_text(value: Any) -> str | None:
    """A value as JSON text (numpy arrays as lists, other non-JSON values as their ``str``);
    None stays None (a Parquet null)."""
    if value is None:
        return None
    return _json.encode(value).decode()


@functools.cache
def record_schema() -> Any:
    """The ``pyarrow.Schema`` of a records Parquet file.

    Raises:
        MissingDependencyError: pyarrow (the ``parquet`` extra) is not installed.
    """
    pa = _pyarrow()
    return pa.schema(
        [
            pa.field("model", pa.string(), nullable=False),
            pa.field("version", pa.string()),
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("latency_ms", pa.float64(), nullable=False),
            pa.field("error", pa.string()),
            pa.field("inputs", pa.string()),
            pa.field("outputs", pa.string()),
        ]
    )


def records_table(records: Sequence[PredictionRecord]) -> Any:
    """The records as a ``pyarrow.Table`` of ``record_schema()``."""
    pa = _pyarrow()
    columns = [
        [record.model for record in records],
        [None if record.version is None else str(record.version) for record in records],
        [record.event_id for record in records],
        [record.timestamp for record in records],
        [float(record.latency_ms) for record in records],
        [record.error for record in records],
        [json_text(record.inputs) for record in records],
        [json_text(record.outputs) for record in records],
    ]
    schema = record_schema()
    arrays = [
        pa.array(values, type=item.type) for values, item in zip(columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def model_directory(root: str | Path, model: str) -> Path:
    """The directory holding the record files of ``model`` under a Parquet sink's ``root``
    (characters other than letters, digits, ``-``, ``_`` and ``.`` are %-escaped)."""
    name = quote(model, safe="-_.")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    return Path(root) / name


def read_records(root: str | Path, model: str) -> Any:
    """Every record of ``model`` under a Parquet sink's ``root``, as one ``pyarrow.Table``
    ordered by file name (the time of each flush); an empty table when there is none."""
    pq = _parquet()
    files = sorted(model_directory(root, model).glob("*/part-*.parquet"), key=lambda p: p.name)
    if not files:
        return record_schema().empty_table()
    pa = _pyarrow()
    return pa.concat_tables([pq.read_table(file, schema=record_schema()) for file in files])


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        module = "pyarrow"
        raise MissingDependencyError(module, "parquet") from exc
    return pyarrow


def _parquet() -> Any:
    _pyarrow()
    import pyarrow.parquet

    return pyarrow.parquet


# -- sinks -----------------------------------------------------------------------------------


class RecordSink(Protocol):
    """Where a recorder's writer thread puts batches of records (every call on that thread)."""

    def open(self) -> None:
        """Get ready (create the directory, reach the broker); raise BackendError if not."""
        ...

    def write(self, records: Sequence[PredictionRecord]) -> int:
        """Take a batch; return how many records were taken (raise when none could be)."""
        ...

    def commit(self) -> int:
        """Make everything taken so far visible to readers (complete the Parquet files);
        return how many records taken earlier were lost doing so (usually 0)."""
        ...

    def close(self) -> None:
        """Release what ``open`` took (after a last ``commit``)."""
        ...


DICTIONARY_COLUMNS = ("model", "version", "error")
"""Columns with few distinct values: dictionary-encoded (the others hold one value a row)."""


@dataclass(slots=True)
class _OpenFile:
    writer: Any
    temporary: Path
    final: Path
    rows: int = 0


class ParquetSink:
    """Writes records to one Parquet file per model and UTC day per commit (see the module
    doc): each batch is a row group appended to a hidden temporary file, renamed to its final
    name by ``commit``, so a reader sees complete files only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._pq: Any = None
        self._files: dict[tuple[str, str], _OpenFile] = {}
        self._lost = 0

    def open(self) -> None:
        self._pq = _parquet()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot create the prediction records directory {self.root}: {exc}"
            raise BackendError(message, retryable=False) from exc
        if not os.access(self.root, os.W_OK):
            message = f"cannot write prediction records to {self.root}: permission denied"
            raise BackendError(message, retryable=False)

    def write(self, records: Sequence[PredictionRecord]) -> int:
        groups: dict[tuple[str, str], list[PredictionRecord]] = {}
        for record in records:
            stamp = record.timestamp
            if stamp.tzinfo is not UTC:
                stamp = stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            groups.setdefault((record.model, stamp.date().isoformat()), []).append(record)
        taken = 0
        first: Exception | None = None
        for key, rows in groups.items():
            try:
                table = records_table(rows)
                file = self._files.get(key) or self._open_file(key)
                file.writer.write_table(table)
            except Exception as exc:  # noqa: BLE001 - the other groups go on; see below
                first = first or exc
                self._abort(key)
                continue
            file.rows += len(rows)
            taken += len(rows)
        if first is not None:
            if not taken:
                raise first
            logger.error("writing prediction records under %s failed: %s", self.root, first)
        return taken

    def commit(self) -> int:
        files, self._files = self._files, {}
        for file in files.values():
            try:
                file.writer.close()
                os.replace(file.temporary, file.final)
            except Exception:
                logger.exception("completing the prediction records file %s failed", file.final)
                file.temporary.unlink(missing_ok=True)
                self._lost += file.rows
        lost, self._lost = self._lost, 0
        return lost

    def close(self) -> None:
        self._lost += self.commit()

    def _open_file(self, key: tuple[str, str]) -> _OpenFile:
        model, day = key
        directory = model_directory(self.root, model) / day
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:12]}.parquet"
        temporary = directory / f".{name}.tmp"  # hidden: readers skip dot files
        writer = self._pq.ParquetWriter(
            str(temporary), record_schema(), use_dictionary=list(DICTIONARY_COLUMNS)
        )
        file = self._files[key] = _OpenFile(writer, temporary, directory / name)
        return file

    def _abort(self, key: tuple[str, str]) -> None:
        """Drop a file a write failed in (its earlier row groups are lost with it)."""
        file = self._files.pop(key, None)
        if file is None:
            return
        self._lost += file.rows
        with contextlib.suppress(Exception):  # already failing: the first error is reported
            file.writer.close()
        file.temporary.unlink(missing_ok=True)


class StreamSink:
    """Publishes each record to a stream, as an event envelope whose body is the record.

    The backend runs on the writer thread's own event loop. A ``memory://`` stream is
    published on the loop that started the recorder while it runs (an in-process consumer
    there is woken as usual), else on the writer's loop too.
    """

    def __init__(
        self,
        url: str,
        *,
        broker: MemoryBroker | None = None,
        home: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.url = url
        self._broker = broker
        self._home = home if urlsplit(url).scheme == "memory" else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backend: QueueBackend | None = None

    def open(self) -> None:
        from ..streams.runtime import open_backend

        self._loop = asyncio.new_event_loop()
        self._backend = open_backend(self.url, broker=self._broker)
        try:
            self._call(self._backend.ping())
        except BackendError as exc:
            self.close()
            message = f"cannot reach the prediction records stream {self.url!r}: {exc}"
            raise BackendError(message, retryable=exc.retryable) from exc

    def write(self, records: Sequence[PredictionRecord]) -> int:
        return self._call(self._publish(records))

    def commit(self) -> int:
        """Nothing to do: a published record is in the stream already."""
        return 0

    async def _publish(self, records: Sequence[PredictionRecord]) -> int:
        from ..streams.envelope import Envelope

        backend = self._backend
        assert backend is not None  # opened
        written, failures = 0, 0
        first: BaseException | None = None
        for start in range(0, len(records), PUBLISH_CHUNK):
            chunk = records[start : start + PUBLISH_CHUNK]
            calls = (
                backend.publish(
                    _json.encode(Envelope(record_body(record), time=record.timestamp)),
                    event_id=record_message_id(record),
                    key=record.model,
                )
                for record in chunk
            )
            for result in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(result, BaseException):
                    failures += 1
                    first = first or result
                else:
                    written += 1
        if first is not None:
            if not written:
                raise first
            logger.warning(
                "%d of %d prediction records were not published to %s: %s",
                failures,
                len(records),
                self.url,
                first,
            )
        return written

    def close(self) -> None:
        from ..engine.lifecycle import shutdown_loop

        backend, self._backend = self._backend, None
        try:
            if backend is not None:
                self._call(backend.aclose())
        finally:
            loop, self._loop = self._loop, None
            if loop is not None:
                shutdown_loop(loop)

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        home = self._home
        if home is not None and home.is_running():
            future = asyncio.run_coroutine_threadsafe(coroutine, home)
            try:
                return future.result(HOME_LOOP_TIMEOUT_S)
            except FutureTimeout:
                future.cancel()
                message = (
                    f"the event loop that started the recorder did not publish to {self.url!r} "
                    f"within {HOME_LOOP_TIMEOUT_S:g} s (is it blocked?)"
                )
                raise BackendError(message, retryable=True) from None
        assert self._loop is not None  # opened
        return self._loop.run_until_complete(coroutine)


def record_message_id(record: PredictionRecord) -> str:
    """The id of a record's stream message: ``<event id>/<model>[:<version>]``.

    One event may be predicted by several models (an ensemble) or versions, and brokers
    de-duplicate messages on this id (NATS does, within its window): the event id alone
    would keep the first model's record only. The same record published twice is still
    de-duplicated.
    """
    if record.version is None:
        return f"{record.event_id}/{record.model}"
    return f"{record.event_id}/{record.model}:{record.version}"


def record_body(record: PredictionRecord) -> dict[str, Any]:
    """A record as the body of a stream message (inputs and outputs as JSON values)."""
    return {
        "model": record.model,
        "version": record.version,
        "event_id": record.event_id,
        "timestamp": record.timestamp,
        "latency_ms": record.latency_ms,
        "error": record.error,
        "inputs": record.inputs,
        "outputs": record.outputs,
    }


def open_sink(
    sink: str,
    *,
    broker: MemoryBroker | None = None,
    home: asyncio.AbstractEventLoop | None = None,
) -> RecordSink:
    """The sink a ``sink`` setting names (not opened yet).

    Raises:
        MissingDependencyError: a Parquet sink without pyarrow (the ``parquet`` extra).
    """
    if is_stream_sink(sink):
        return StreamSink(sink, broker=broker, home=home)
    _pyarrow()  # say at once that the extra is missing, not on the first write
    return ParquetSink(parquet_root(sink))


# -- the recorder ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """A recorder's counters."""

    queued: int = 0
    """Records waiting for the writer."""
    written: int = 0
    """Records the sink accepted."""
    dropped: int = 0
    """Records not kept: the queue was full, or the recorder was closed or never started."""
    failed: int = 0
    """Records the sink refused (each failed batch is logged)."""


@dataclass(slots=True)
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class PredictionRecorder:
    """The ``record_prediction`` hook of a graph, and the thread that writes its records.

    Args:
        settings: what to record and where (``TrackingSettings`` or its spec form).
        sink: write to this sink instead of the one ``settings.sink`` names.
        broker: the in-process broker of a ``memory://`` sink (default: the process's).

    ``record`` is the hook. Call ``start`` (or ``await astart()``) before the records are
    to be written; ``close`` (or ``await aclose()``) writes what is queued and stops.
    """

    def __init__(
        self,
        settings: TrackingSettings | Mapping[str, Any] | None = None,
        *,
        sink: RecordSink | None = None,
        broker: MemoryBroker | None = None,
    ) -> None:
        self.settings = TrackingSettings.parse(settings if settings is not None else {})
        self._sink = sink
        self._broker = broker
        models = self.settings.models
        self._models: frozenset[str] | None = None if models == ALL_MODELS else frozenset(models)
        self._sample = float(self.settings.sample)
        self._random = random.Random(self.settings.seed).random
        self._max_queue = self.settings.max_queue
        self._batch_size = self.settings.batch_size
        self._queue: deque[PredictionRecord] = deque()
        self._wake = threading.Event()
        self._flushes: deque[_Flush] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._written = 0
        self._failed = 0
        self._closed = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._home_thread: int | None = None
        self._context: Context | None = None

    # -- the hook (the request path) --------------------------------------------------------

    def record(self, record: PredictionRecord) -> None:
        """Queue one prediction record (the hook): O(1), never blocks, never raises."""
        models = self._models
        if models is not None and record.model not in models:
            return
        if self._sample < 1.0 and self._random() >= self._sample:
            return
        queue = self._queue
        if len(queue) >= self._max_queue or self._closed:
            self._drop(1)
            return
        queue.append(record)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _drop(self, count: int) -> None:
        with self._lock:  # only on overload: the counter stays exact across threads
            self._dropped += count

    # -- counters ---------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records not kept (full queue, or closed); see ``RecorderStatistics.dropped``."""
        return self._dropped

    def statistics(self) -> RecorderStatistics:
        """The recorder's counters now."""
        return RecorderStatistics(len(self._queue), self._written, self._dropped, self._failed)

    # -- lifecycle --------------------------------------------------------------------------

    def install(self, context: Context) -> None:
        """Make this recorder the graph's ``record_prediction`` hook (``close`` removes it).

        Raises:
            ServegraphError: the context already has another hook.
        """
        hooks = context.hooks
        if hooks.record_prediction is not None and hooks.record_prediction != self.record:
            message = (
                "this graph's context already has a record_prediction hook; a graph has one "
                "prediction recorder (close the other one first)"
            )
            raise ServegraphError(message)
        hooks.record_prediction = self.record
        self._context = context

    def start(self) -> None:
        """Open the sink and start the writer thread (from synchronous code).

        Raises:
            BackendError: the sink cannot be opened (an unreachable broker, a directory that
                cannot be written).
            MissingDependencyError: the sink's extra is not installed.
        """
        self._launch().result()

    async def astart(self) -> None:
        """Like ``start``, from a server's event loop (which is not blocked meanwhile)."""
        self._home = asyncio.get_running_loop()
        self._home_thread = threading.get_ident()
        await asyncio.wrap_future(self._launch())

    def _launch(self) -> Future[None]:
        started: Future[None] = Future()
        if self._closed:
            started.set_exception(RuntimeError("this prediction recorder is closed"))
            return started
        if self._thread is not None:
            started.set_result(None)
            return started
        try:
            if self._sink is None:
                self._sink = open_sink(self.settings.sink, broker=self._broker, home=self._home)
        except Exception as exc:  # noqa: BLE001 - start() re-raises it
            started.set_exception(exc)
            return started
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="servegraph-records", daemon=True
        )
        self._thread.start()
        return started

    def flush(self) -> None:
        """Return once every record queued before the call is written (or failed).

        Raises:
            RuntimeError: the recorder is not running (never started, or closed).
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            message = "the prediction recorder is not running: start() it first"
            raise RuntimeError(message)
        self._refuse_on_home_loop("flush", "aflush")
        request = _Flush()
        self._flushes.append(request)
        self._wake.set()
        while not request.done.wait(0.1):
            if not thread.is_alive():
                return  # closed meanwhile: close() wrote everything

    async def aflush(self) -> None:
        """Like ``flush``, without blocking the event loop."""
        await asyncio.to_thread(self.flush)

    def close(self) -> None:
        """Stop recording, write everything queued, close the sink and remove the hook.
        Records that arrive afterwards are dropped (counted). Calling it again does nothing.

        Raises:
            RuntimeError: called on the running loop that started a ``memory://`` recorder
                (its last batch is published there): ``await aclose()`` instead.
        """
        if self._closed:
            return
        self._refuse_on_home_loop("close", "aclose")
        self._closed = True
        self._uninstall()
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join()
        leftovers = len(self._queue)  # arrived while closing, or never started
        self._queue.clear()
        if leftovers:
            self._drop(leftovers)

    async def aclose(self) -> None:
        """Like ``close``, without blocking the event loop."""
        if self._closed:
            return
        self._uninstall()  # at once: no record is queued after the final flush starts
        await asyncio.to_thread(self.close)

    def _refuse_on_home_loop(self, call: str, instead: str) -> None:
        """A ``memory://`` stream is published on the loop that started the recorder: blocking
        that loop until the writer is done would wait for itself."""
        if (
            isinstance(self._sink, StreamSink)
            and self._home is not None
            and self._home.is_running()
            and threading.get_ident() == self._home_thread
        ):
            message = (
                f"{call}() would block the event loop the recorder publishes on: await {instead}()"
            )
            raise RuntimeError(message)

    def _uninstall(self) -> None:
        context, self._context = self._context, None
        if context is not None and context.hooks.record_prediction == self.record:
            context.hooks.record_prediction = None

    # -- the writer thread ------------------------------------------------------------------

    def _run(self, started: Future[None]) -> None:
        sink = self._sink
        assert sink is not None  # made by _launch
        try:
            sink.open()
        except Exception as exc:  # noqa: BLE001 - start() re-raises it
            self._thread = None
            started.set_exception(exc)
            return
        started.set_result(None)
        interval = self.settings.interval_s
        deadline = time.monotonic() + interval
        try:
            while True:
                self._wake.wait(max(0.0, deadline - time.monotonic()))
                self._wake.clear()
                stopping = self._stopping  # read first: what was queued before close is written
                flushes = [self._flushes.popleft() for _ in range(len(self._flushes))]
                self._drain(sink)
                now = time.monotonic()
                if stopping or flushes or now >= deadline:
                    self._commit(sink)
                    deadline = now + interval
                for request in flushes:
                    request.done.set()
                if stopping:
                    return
        finally:
            try:
                sink.close()
            except Exception:
                logger.exception("closing the prediction records sink failed")

    def _drain(self, sink: RecordSink) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
            try:
                taken = sink.write(batch)
            except Exception:
                logger.exception(
                    "writing %d prediction records to %s failed", len(batch), self.settings.sink
                )
                taken = 0
            self._written += taken
            self._failed += len(batch) - taken

    def _commit(self, sink: RecordSink) -> None:
        try:
            lost = sink.commit()
        except Exception:
            logger.exception("completing the prediction records of %s failed", self.settings.sink)
            return
        self._written -= lost
        self._failed += lost


def install_recorder(
    context: Context,
    settings: TrackingSettings | Mapping[str, Any] | None,
    *,
    broker: MemoryBroker | None = None,
) -> PredictionRecorder | None:
    """Install a recorder for a graph's tracking settings (None: tracking off, returns None).

    The recorder is the context's ``record_prediction`` hook at once; records are queued
    until ``start``/``astart`` and written until ``close``/``aclose``.

    Raises:
        GraphError: invalid settings.
        MissingDependencyError: a Parquet sink without pyarrow (the ``parquet`` extra).
    """
    if settings is None:
        return None
    recorder = PredictionRecorder(settings, broker=broker)
    if not is_stream_sink(recorder.settings.sink):
        _pyarrow()
    recorder.install(context)
    return recorder
