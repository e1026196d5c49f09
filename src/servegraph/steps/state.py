"""Steps that keep state in tables: map-with-state, join-with-table, aggregate-by-key.

``table`` is a table URL (``"memory://"``, ``"sqlite:///var/lib/app/state.db?table=users"``,
``"redis://host:6379/0"``, ``"postgresql://user@host/db?table=users"``, see docs/tables.md), the
name of a table registered in the graph's context, or a table object. A step connects to its
table before the first event (``astart``: an unreachable table fails startup, naming its URL)
and closes the tables it opened.

``key`` names the body field(s) that identify an entity (several fields are joined with
``":"``), or is ``"$key"`` for the event's key. An event without its key field raises a
``KeyError`` naming the step and the field, or, with ``on_missing_key="skip"``, passes on
unchanged and is counted in ``skipped``.

State is written through, in group commits: the events of one loop iteration share one
``set_many`` round trip, and each event finishes only once its write has landed, so that a
stream consumer acks it only then (at-least-once: a restarted process continues from what
was written). ``flush_interval_s`` trades that for speed, as storey does: states are written
every that many seconds and when the graph closes, and events do not wait (a crash loses up to
that interval of updates). With a memory table nothing is written at all: the step's own
memory is the state, and nothing survives the process anyway.
"""

from __future__ import annotations

import asyncio
import sys
import time as clock
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from ..context import Context
from ..engine.emitters import Emitter
from ..engine.paths import set_path
from ..engine.plan import Segment
from ..engine.runner import Outcome, run_outlets, run_outlets_async
from ..errors import GraphError, Problem
from ..event import Event
from ..state.aggregations import (
    Aggregation,
    AggregationState,
    Aggregator,
    state_to_dict,
)
from ..state.tables import Table, open_table
from ..state.windows import parse_duration_ms
from .base import BuiltinStep
from .functions import StepFunction, as_function

V = TypeVar("V")

MISSING_KEY_POLICIES = ("error", "skip")
MISSING_ROW_POLICIES = ("pass", "drop", "error")


class GroupWriter(Generic[V]):
    """Writes values to a table in group commits, one ``set_many`` at a time, in order.

    Without ``interval_s``, ``write`` returns once the value (or a newer one for the same key)
    has landed: the writes of one loop iteration share a round trip. With ``interval_s``,
    ``write`` only marks the key: what is marked is written every ``interval_s`` seconds and
    by ``aclose`` (write-behind, storey's way: a crash loses up to ``interval_s`` of writes).
    """

    def __init__(
        self,
        table: Table,
        encode: Callable[[V], Mapping[str, Any]],
        interval_s: float | None = None,
    ) -> None:
        self.table = table
        self.encode = encode
        self.interval_s = interval_s
        self.dirty: dict[str, V] = {}
        self.next: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        """Write-behind commits that failed (their keys are written again with the next)."""

    async def write(self, key: str, value: V) -> None:
        self.dirty[key] = value
        if self.interval_s is not None:
            if self.task is None:
                self.task = asyncio.get_running_loop().create_task(self._every_interval())
            return
        waiter = self.next
        if waiter is None:
            waiter = self.next = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieved)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(waiter)

    async def _commit(self) -> None:
        dirty, waiter = self.dirty, self.next
        self.dirty, self.next = {}, None
        encode = self.encode
        try:
            await self.table.set_many([(key, encode(value)) for key, value in dirty.items()])
        except Exception as exc:  # noqa: BLE001 - every writer waiting re-raises it
            if waiter is not None:
                waiter.set_exception(exc)
            elif self.interval_s is not None:
                self.failures += 1
                for key, value in dirty.items():  # keep them for the next commit
                    self.dirty.setdefault(key, value)
        else:
            if waiter is not None:
                waiter.set_result(None)

    async def _flush(self) -> None:
        try:
            while self.dirty:
                await asyncio.sleep(0)  # the events of this loop iteration join the commit
                await self._commit()
        finally:
            self.task = None

    async def _every_interval(self) -> None:
        assert self.interval_s is not None
        while True:
            await asyncio.sleep(self.interval_s)
            if self.dirty:
                await self._commit()

    async def aclose(self) -> None:
        """Wait for the writes under way; in interval mode, write what is marked."""
        task = self.task
        if task is not None and self.interval_s is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.task = None
            if self.dirty:
                await self._commit()
        elif task is not None:
            await asyncio.gather(task, return_exceptions=True)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


class _TableStep(BuiltinStep):
    """Table handling shared by the state steps: open, key, start, close."""

    table: Table

    def __init__(
        self,
        table: str | Table,
        key: str | Sequence[str] | None,
        on_missing_key: str,
        name: str | None,
        context: Context | None,
    ) -> None:
        self.name = name or self.default_name
        self.opened = context is not None
        """False for the object a graph is built with (``graph.to(step)``): it only records
        the step; the engine builds the one that runs (with a context), which opens tables."""
        self.owns_table = False
        self.in_process = False
        """A memory table: the step's own cache holds the state, nothing is written."""
        if self.opened:
            from ..state.memory_table import MemoryTable

            self.table, self.owns_table = _table(table, context, name)
            self.in_process = isinstance(self.table, MemoryTable)
        elif isinstance(table, str) and "://" in table:
            _check_url(table, name)
        self.key_fields: tuple[str, ...] = (
            () if key is None else (key,) if isinstance(key, str) else tuple(key)
        )
        if not all(isinstance(field, str) and field for field in self.key_fields):
            message = f"key must be a field name, a list of them or '$key', not {key!r}"
            raise GraphError([Problem(name, message)])
        if on_missing_key not in MISSING_KEY_POLICIES:
            message = f"on_missing_key must be 'error' or 'skip', not {on_missing_key!r}"
            raise GraphError([Problem(name, message)])
        self.skip_missing_key = on_missing_key == "skip"
        self.skipped = 0
        """Events that passed on unchanged because they had no key field."""

    def key_of(self, event: Event) -> str | None:
        """The event's entity key; None when it has none and missing keys are skipped."""
        fields = self.key_fields
        if not fields:
            return ""
        body = event.body
        try:
            if len(fields) == 1:
                field = fields[0]
                return str(event.key if field == "$key" else body[field])
            return ":".join(str(event.key if f == "$key" else body[f]) for f in fields)
        except (KeyError, TypeError, IndexError) as exc:
            if self.skip_missing_key:
                self.skipped += 1
                return None
            missing = next((f for f in fields if f != "$key" and not _has(body, f)), fields[0])
            found = ", ".join(map(repr, body)) if isinstance(body, Mapping) else type(body)
            message = (
                f"step {self.name!r}: the event has no key field {missing!r} (its fields: "
                f"{found}); set on_missing_key='skip' to pass such events on"
            )
            raise KeyError(message) from exc

    async def astart(self) -> None:
        await self.table.ping()

    async def aclose(self) -> None:
        if self.owns_table:
            await self.table.aclose()


def _check_url(url: str, step: str | None) -> None:
    """What can be checked of a table URL without opening it."""
    from ..state.tables import SCHEMES, TableURL

    try:
        parsed = TableURL(url)
    except GraphError as exc:
        raise GraphError([Problem(step, p.message) for p in exc.problems]) from exc
    if parsed.scheme not in SCHEMES:
        message = f"table URL {parsed.masked!r}: unknown scheme; use one of {', '.join(SCHEMES)}"
        raise GraphError([Problem(step, message)])


def _has(body: Any, field: str) -> bool:
    return isinstance(body, Mapping) and field in body


def _table(table: str | Table, context: Context | None, step: str | None) -> tuple[Table, bool]:
    """The table a step uses, and whether the step opened it (and so closes it)."""
    if not isinstance(table, str):
        return table, False
    if "://" in table:
        return open_table(table), True
    if context is None:
        message = f"table {table!r} is not a URL and there is no context to look it up in"
        raise GraphError([Problem(step, message)])
    try:
        return context.get_table(table), False
    except KeyError as exc:
        message = f"{exc.args[0]}; or give a table URL such as 'memory://' or 'sqlite:///x.db'"
        raise GraphError([Problem(step, message)]) from exc


class MapWithState(_TableStep):
    """Replace the body with ``fn(body, state)[0]`` and keep ``fn(body, state)[1]`` as the
    state for the next event of the same key (storey's ``MapWithState`` with
    ``group_by_key``); without ``key``, one state for all events.

    The state starts as ``initial_state`` (copied per key) and is kept in ``table`` (its value
    under the field ``state``: anything JSON can hold), with the ``cache_size`` most recent
    keys in memory.

    Example:
        >>> counter = MapWithState("({**event, 'seen': state + 1}, state + 1)", initial_state=0)
    """

    default_name = "map_with_state"

    def __init__(
        self,
        fn: StepFunction,
        initial_state: Any = None,
        table: str | Table = "memory://",
        key: str | Sequence[str] | None = None,
        cache_size: int = 100_000,
        on_missing_key: str = "error",
        flush_interval_s: float | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "fn": fn,
            "initial_state": initial_state,
            "table": table,
            "key": key,
            "cache_size": cache_size,
            "on_missing_key": on_missing_key,
            "flush_interval_s": flush_interval_s,
        }
        super().__init__(table, key, on_missing_key, name, context)
        self.fn = as_function(fn, step=name, argument="fn", names=("event", "state"))
        self.initial = initial_state
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.cache_size = sys.maxsize if self.in_process else cache_size
        self.writer: GroupWriter[Any] | None = (
            GroupWriter(self.table, _wrap_state, flush_interval_s)
            if self.opened and not self.in_process
            else None
        )

    async def _state(self, key: str) -> Any:
        cache = self.cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        row = await self.table.get(key)
        if key in cache:  # another event of this key loaded it meanwhile
            return cache[key]
        state = msgspec_copy(self.initial) if row is None else row.get("state")
        cache[key] = state
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return state

    async def do_event(self, event: Event) -> Event | None:
        key = self.key_of(event)
        if key is None:
            return event
        state = await self._state(key)
        result = self.fn(event.body, state)
        try:
            body, new_state = result
        except (TypeError, ValueError) as exc:
            message = (
                f"step {self.name!r}: fn must return (body, state), a pair; got "
                f"{type(result).__name__}"
            )
            raise TypeError(message) from exc
        self.cache[key] = new_state
        if self.writer is not None:
            await self.writer.write(key, new_state)
        if body is None:
            return None
        event.body = body
        return event

    async def aclose(self) -> None:
        if self.writer is not None:
            await self.writer.aclose()
        await super().aclose()


def _wrap_state(state: Any) -> Mapping[str, Any]:
    return {"state": state}


def msgspec_copy(value: Any) -> Any:
    """A deep copy of a JSON-compatible value (the initial state, per key)."""
    if isinstance(value, dict | list):
        import copy

        return copy.deepcopy(value)
    return value


class JoinWithTable(_TableStep):
    """Enrich the body (a dict) with the fields of the table row under the event's key.

    ``attributes`` picks the row's fields (default: all); ``result_path`` puts them under a
    field instead of merging them into the body. An event whose key has no row: ``on_missing``
    ``"pass"`` (on unchanged), ``"drop"`` (stops) or ``"error"``. Rows (and misses) are cached
    for ``cache_ttl_s`` seconds, at most ``cache_size`` of them (the least recently used go
    first).
    """

    default_name = "join_with_table"

    def __init__(
        self,
        table: str | Table,
        key: str | Sequence[str],
        attributes: Sequence[str] | None = None,
        on_missing: str = "pass",
        result_path: str | None = None,
        cache_size: int = 10_000,
        cache_ttl_s: float = 60.0,
        on_missing_key: str = "error",
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "table": table,
            "key": key,
            "attributes": attributes,
            "on_missing": on_missing,
            "result_path": result_path,
            "cache_size": cache_size,
            "cache_ttl_s": cache_ttl_s,
            "on_missing_key": on_missing_key,
        }
        super().__init__(table, key, on_missing_key, name, context)
        if on_missing not in MISSING_ROW_POLICIES:
            message = f"on_missing must be 'pass', 'drop' or 'error', not {on_missing!r}"
            raise GraphError([Problem(name, message)])
        self.on_missing = on_missing
        self.attributes = tuple(attributes) if attributes is not None else None
        self.result_keys = tuple(result_path.split(".")) if result_path else None
        self.cache: OrderedDict[str, tuple[float, Mapping[str, Any] | None]] = OrderedDict()
        self.cache_size = cache_size
        self.cache_ttl_s = cache_ttl_s
        self.misses = 0
        """Events whose key had no row."""

    async def _row(self, key: str) -> Mapping[str, Any] | None:
        now = clock.monotonic()
        cached = self.cache.get(key)
        if cached is not None and cached[0] > now:
            self.cache.move_to_end(key)
            return cached[1]
        row = await self.table.get(key)
        if self.attributes is not None and row is not None:
            row = {name: row[name] for name in self.attributes if name in row}
        if self.cache_size > 0:
            self.cache[key] = (now + self.cache_ttl_s, row)
            self.cache.move_to_end(key)
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return row

    async def do_event(self, event: Event) -> Event | None:
        key = self.key_of(event)
        if key is None:
            return event
        row = await self._row(key)
        if row is None:
            self.misses += 1
            if self.on_missing == "pass":
                return event
            if self.on_missing == "drop":
                return None
            message = f"step {self.name!r}: no row for key {key!r} in table {self.table.url}"
            raise LookupError(message)
        if self.result_keys is not None:
            set_path(event.body, self.result_keys, dict(row), self.name)
            return event
        try:
            event.body.update(row)
        except AttributeError as exc:
            message = (
                f"step {self.name!r} merges table fields into a dict body, got "
                f"{type(event.body).__name__}; set result_path to put them under a field"
            )
            raise TypeError(message) from exc
        return event


class AggregateByKey(_TableStep, Emitter):
    """Per-key windowed aggregations (storey's ``AggregateByKey``), added to every event.

    ``aggregations`` are ``Aggregation`` objects or dicts of their fields (``name``,
    ``column``, ``operations``, ``windows``, ``period``, ``kind``): ``{"name": "amount",
    "column": "amount", "operations": ["sum", "avg"], "windows": ["1h", "24h"]}`` adds
    ``amount_sum_1h``, ``amount_avg_1h``, ``amount_sum_24h`` and ``amount_avg_24h``. The time of
    an event is its ``time`` field (epoch seconds, a datetime or an ISO 8601 string), or the
    event's time. Features go into the body (a dict), or under ``result_path``.

    Each key's state lives in ``table`` (restarts continue where they left off) with the
    ``cache_size`` most recent keys in memory. Events too old for every window are counted in
    ``ignored`` and pass on with the features at their time.

    ``emit="event"`` (the default) sends every event on with its features. A duration such as
    ``emit="10m"`` sends instead, for every key that had events in a period of that length
    (epoch-aligned, in event time), one event once the period is over: its body holds the key
    field(s) and the features at the period's end, its id is ``"<key>@<period end, epoch
    seconds>"`` (the same on a replay, for de-duplicating sinks). A period is over when an event
    of a later period arrives, and when the graph closes; the events that fed it answer None.
    """

    default_name = "aggregate_by_key"

    def __init__(
        self,
        aggregations: Sequence[Aggregation | Mapping[str, Any]],
        key: str | Sequence[str],
        table: str | Table = "memory://",
        time: str | None = None,
        result_path: str | None = None,
        cache_size: int = 100_000,
        on_missing_key: str = "error",
        flush_interval_s: float | None = None,
        emit: str = "event",
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "aggregations": [_aggregation_dict(a) for a in aggregations],
            "key": key,
            "table": table,
            "time": time,
            "result_path": result_path,
            "cache_size": cache_size,
            "on_missing_key": on_missing_key,
            "flush_interval_s": flush_interval_s,
            "emit": emit,
        }
        super().__init__(table, key, on_missing_key, name, context)
        try:
            built = [a if isinstance(a, Aggregation) else Aggregation(**a) for a in aggregations]
            self.aggregator = Aggregator(built)
        except (GraphError, TypeError) as exc:
            raise GraphError([Problem(name, str(exc))]) from exc
        self.time_field = time
        self.result_keys = tuple(result_path.split(".")) if result_path else None
        self.cache: OrderedDict[str, AggregationState] = OrderedDict()
        self.cache_size = sys.maxsize if self.in_process else cache_size
        self.writer: GroupWriter[AggregationState] | None = (
            GroupWriter(self.table, state_to_dict, flush_interval_s)
            if self.opened and not self.in_process
            else None
        )
        self.ignored = 0
        """Events older than the longest window of their key."""
        self.every_s: float | None = None
        if emit != "event":
            try:
                self.every_s = parse_duration_ms(emit, what=f"{self.name}: emit") / 1000
            except GraphError as exc:
                message = f"emit is 'event' or a duration such as '10m': {exc.problems[0].message}"
                raise GraphError([Problem(name, message)]) from exc
        self.outlets: tuple[Segment, ...] = ()
        self.period = -1
        """The period (index of ``every_s`` since the epoch) of the newest event seen."""
        self.touched: dict[str, dict[str, Any]] = {}
        """Keys with events in the current period, and the fields that make them up."""

    def _time(self, event: Event) -> float:
        field = self.time_field
        if field is None:
            return event.time.timestamp()
        value = event.body[field]
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return value.timestamp()
        message = (
            f"step {self.name!r}: time field {field!r} holds a {type(value).__name__}; "
            "use epoch seconds, a datetime or an ISO 8601 string"
        )
        raise TypeError(message)

    async def _state(self, key: str) -> AggregationState:
        cache = self.cache
        state = cache.get(key)
        if state is not None:
            cache.move_to_end(key)
            return state
        row = await self.table.get(key)
        state = cache.get(key)
        if state is not None:  # another event of this key loaded it meanwhile
            return state
        state = self.aggregator.new_state() if row is None else self.aggregator.restore(row)
        cache[key] = state
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return state

    async def do_event(self, event: Event) -> Event | None:
        key = self.key_of(event)
        if key is None:
            return event
        at = self._time(event)
        if self.every_s is not None:
            await self._advance(event, key, at)
        state = await self._state(key)
        if not self.aggregator.add(state, event.body, at):
            self.ignored += 1
        if self.every_s is None:
            if self.result_keys is not None:
                features = self.aggregator.features(state, at)
                set_path(event.body, self.result_keys, features, self.name)
            else:
                self.aggregator.features(state, at, into=event.body)
        if self.writer is not None:
            await self.writer.write(key, state)
        return event

    async def _advance(self, event: Event, key: str, at: float) -> None:
        """Period mode: emit the period that ``event`` ends (before it counts), mark its key."""
        assert self.every_s is not None
        period = int(at // self.every_s)
        if period > self.period:
            if self.touched:
                await self._emit_period(Outcome())
            self.period = period
        if key not in self.touched:
            body = event.body
            self.touched[key] = {f: body[f] for f in self.key_fields if f != "$key"}

    async def aclose(self) -> None:
        if self.writer is not None:
            await self.writer.aclose()
        await super().aclose()

    # -- emitting ---------------------------------------------------------------------------

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        self.outlets = tuple(outlets.values())
        return True  # emitting per period reads states, which may await the table

    def emit(self, event: Event, outcome: Outcome) -> None:  # pragma: no cover - bind says async
        run_outlets(self.outlets, event, outcome)

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        if self.every_s is None:
            await run_outlets_async(self.outlets, event, outcome)
        # In period mode the event stops here: its period is emitted once it is over.

    async def _emit_period(self, outcome: Outcome) -> None:
        """Send on the features of every key touched in the current period, at its end; if
        that fails, the keys stay touched (the next event or the close tries again)."""
        assert self.every_s is not None
        touched, self.touched = self.touched, {}
        try:
            await self._send_period(touched, outcome)
        except BaseException:
            self.touched = {**touched, **self.touched}
            raise

    async def _send_period(self, touched: dict[str, dict[str, Any]], outcome: Outcome) -> None:
        assert self.every_s is not None
        end = (self.period + 1) * self.every_s
        at = end - 1e-6  # the period's last instant: its own bucket, not the next one's
        stamp = f"{end:.6f}".rstrip("0").rstrip(".")
        for key, fields in touched.items():
            state = await self._state(key)
            features = self.aggregator.features(state, at)
            body: dict[str, Any] = {**fields}
            if self.result_keys is not None:
                set_path(body, self.result_keys, features, self.name)
            else:
                body.update(features)
            emitted = Event(body, id=f"{key}@{stamp}", key=key, trigger="aggregation")
            emitted.time = datetime.fromtimestamp(end, UTC)
            await run_outlets_async(self.outlets, emitted, outcome)

    def flush(self) -> Awaitable[Any] | None:
        if self.every_s is None or not self.touched:
            return None
        return self._emit_period(Outcome())


def _aggregation_dict(aggregation: Aggregation | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(aggregation, Mapping):
        return dict(aggregation)
    return {
        "name": aggregation.name,
        "column": aggregation.column,
        "operations": list(aggregation.operations),
        "windows": list(aggregation.windows),
        "period": aggregation.period,
        "kind": aggregation.kind,
    }
