"""Steps that decide where events go, and how many: flat-map, choice, merge, batch, reduce.

They are emitters (``engine.emitters``): each runs the steps after it itself. Where events
wait: under the async engine, in servers and on streams, an event held by a batch finishes
only when its batch has gone through the steps after the batch, so that a stream consumer
acks it only then (at-least-once) and an HTTP caller gets the batch's answer. Under the sync
engine (the mock server with no async step) nothing can wait: a batch fills by count, the
event that fills it runs it, the others answer None, and what is left runs when the graph
closes.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from ..context import Context
from ..engine.emitters import Emitter, Gatherer
from ..engine.plan import Segment
from ..engine.runner import Outcome, run_outlets, run_outlets_async
from ..errors import GraphError, Problem, StepError
from ..event import Event
from .base import BuiltinStep
from .functions import StepFunction, as_function

DEFAULT_WAIT_S = 1.0
"""How long a batch that has no ``flush_after_s`` holds events where they wait (see the module
doc): a batch that only fills by count would hold its last events until the graph closes."""


def derived(event: Event, body: Any, id: str) -> Event:  # noqa: A002 - the event's field
    """A new event with ``event``'s metadata, another body and another id."""
    twin = copy.copy(event)
    twin.body = body
    twin.id = id
    return twin


class FlatMap(BuiltinStep, Emitter):
    """Send on each item of ``fn(body)`` (an iterable) as its own event, in order.

    Item ``i`` of event ``E`` gets the id ``"E:i"``: stable across retries, distinct per item,
    so that de-duplicating sinks keep every item. The event's answer is the first item's.
    """

    default_name = "flat_map"

    def __init__(
        self, fn: StepFunction, *, name: str | None = None, context: Context | None = None
    ) -> None:
        self.arguments = {"fn": fn}
        self.fn = as_function(fn, step=name, argument="fn")
        self.outlets: tuple[Segment, ...] = ()

    def do(self, body: Any) -> Any:
        return list(self.fn(body))

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        self.outlets = tuple(outlets.values())
        return any(outlet.is_async for outlet in self.outlets)

    def emit(self, event: Event, outcome: Outcome) -> None:
        base = event.id
        for index, item in enumerate(event.body):
            run_outlets(self.outlets, derived(event, item, f"{base}:{index}"), outcome)

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        base = event.id
        for index, item in enumerate(event.body):
            await run_outlets_async(self.outlets, derived(event, item, f"{base}:{index}"), outcome)


class Choice(BuiltinStep, Emitter):
    """Send the event to the outlets (the steps after this one) whose condition holds.

    ``conditions`` maps outlet step names to conditions (functions or expressions over the
    body); the first that holds wins, or every one that holds with ``all_matches=True``; when
    none holds the event goes to ``default`` (an outlet name), or stops. Subclasses may
    override ``select_outlets`` instead (storey's way).
    """

    default_name = "choice"

    def __init__(
        self,
        conditions: Mapping[str, StepFunction] | None = None,
        default: str | None = None,
        all_matches: bool = False,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "conditions": dict(conditions or {}),
            "default": default,
            "all_matches": all_matches,
        }
        self.name = name or self.default_name
        self.conditions = tuple(
            (outlet, as_function(condition, step=name, argument=f"conditions[{outlet!r}]"))
            for outlet, condition in (conditions or {}).items()
        )
        self.default = default
        self.all_matches = all_matches
        self.outlets: Mapping[str, Segment] = {}

    def do(self, body: Any) -> Any:
        return body

    def select_outlets(self, body: Any) -> Sequence[str]:
        """The names of the outlets that get ``body``'s event."""
        chosen = [outlet for outlet, condition in self.conditions if condition(body)]
        if chosen:
            return chosen if self.all_matches else chosen[:1]
        return [self.default] if self.default is not None else []

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        named = [outlet for outlet, _ in self.conditions]
        if self.default is not None:
            named.append(self.default)
        unknown = [outlet for outlet in named if outlet not in outlets]
        if unknown:
            known = ", ".join(repr(outlet) for outlet in outlets) or "none"
            message = (
                f"choice names outlet(s) {', '.join(repr(o) for o in unknown)} that do not "
                f"follow it; the steps after it are: {known}"
            )
            raise GraphError([Problem(self.name, message)])
        self.outlets = dict(outlets)
        return any(outlet.is_async for outlet in self.outlets.values())

    def _chosen(self, event: Event) -> list[Segment]:
        try:
            names = self.select_outlets(event.body)
            return [self.outlets[name] for name in names]
        except KeyError as exc:
            known = ", ".join(repr(outlet) for outlet in self.outlets)
            message = f"selected outlet {exc.args[0]!r} does not follow this step ({known})"
            raise StepError(self.name, event.id, LookupError(message)) from exc
        except Exception as exc:
            raise StepError(self.name, event.id, exc) from exc

    def emit(self, event: Event, outcome: Outcome) -> None:
        chosen = self._chosen(event)
        if chosen:  # none: the event stops here
            run_outlets(chosen, event, outcome)

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        chosen = self._chosen(event)
        if chosen:
            await run_outlets_async(chosen, event, outcome)


class Merge(BuiltinStep, Gatherer):
    """Wait for an event from every step before this one, then send one event on whose body
    maps each predecessor's name to its body (in the order of ``after``).

    Events are matched by id (the branches of a fan-out share it). At most ``max_pending``
    events wait for their other branches (a branch that stopped or failed never arrives): the
    oldest are dropped beyond that, and counted in ``dropped``.
    """

    default_name = "merge"

    def __init__(
        self, max_pending: int = 10_000, *, name: str | None = None, context: Context | None = None
    ) -> None:
        self.arguments = {"max_pending": max_pending}
        if max_pending < 1:
            message = f"merge: max_pending must be at least 1, not {max_pending!r}"
            raise GraphError([Problem(name, message)])
        self.max_pending = max_pending
        self.pending: dict[str, dict[str, Any]] = {}
        self.dropped = 0

    def do(self, body: Any) -> Any:
        return body

    def arrival(self, parent: str, parents: tuple[str, ...]) -> Emitter:
        return _Arrival(self, parent, parents)

    def arrive(self, parent: str, parents: tuple[str, ...], event: Event) -> dict[str, Any] | None:
        """Record ``event`` from ``parent``; the merged body once every parent has sent it."""
        bodies = self.pending.get(event.id)
        if bodies is None:
            if len(self.pending) >= self.max_pending:
                del self.pending[next(iter(self.pending))]
                self.dropped += 1
            bodies = self.pending[event.id] = {}
        bodies[parent] = event.body
        if len(bodies) < len(parents):
            return None
        del self.pending[event.id]
        return {name: bodies[name] for name in parents}


class _Arrival(Emitter):
    """The way into a merge from one of its predecessors."""

    def __init__(self, merge: Merge, parent: str, parents: tuple[str, ...]) -> None:
        self.merge = merge
        self.parent = parent
        self.parents = parents
        self.outlets: tuple[Segment, ...] = ()

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        self.outlets = tuple(outlets.values())
        return False  # the merge's own segment is awaited like any other

    def emit(self, event: Event, outcome: Outcome) -> None:
        merged = self.merge.arrive(self.parent, self.parents, event)
        if merged is not None:
            event.body = merged
            run_outlets(self.outlets, event, outcome)

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        merged = self.merge.arrive(self.parent, self.parents, event)
        if merged is not None:
            event.body = merged
            await run_outlets_async(self.outlets, event, outcome)


class Reduce(BuiltinStep, Emitter):
    """Fold every event's body into one value with ``fn(accumulator, body)``, from ``initial``.

    storey's semantics: the value is sent on once, when the graph closes; with
    ``emit_every_event=True`` each event carries on with the value so far instead.
    """

    default_name = "reduce"

    def __init__(
        self,
        fn: StepFunction,
        initial: Any = None,
        emit_every_event: bool = False,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {"fn": fn, "initial": initial, "emit_every_event": emit_every_event}
        self.fn = as_function(fn, step=name, argument="fn", names=("accumulator", "event"))
        self.name = name or self.default_name
        self.value = copy.deepcopy(initial)
        self.emit_every_event = emit_every_event
        self.seen = False
        self.outlets: tuple[Segment, ...] = ()
        self.outlets_async = False

    def do(self, body: Any) -> Any:
        return body

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        self.outlets = tuple(outlets.values())
        self.outlets_async = any(outlet.is_async for outlet in self.outlets)
        return self.outlets_async

    def _fold(self, event: Event) -> None:
        try:
            self.value = self.fn(self.value, event.body)
        except Exception as exc:
            raise StepError(self.name, event.id, exc) from exc
        self.seen = True

    def emit(self, event: Event, outcome: Outcome) -> None:
        self._fold(event)
        if self.emit_every_event:
            event.body = self.value
            run_outlets(self.outlets, event, outcome)

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        self._fold(event)
        if self.emit_every_event:
            event.body = self.value
            await run_outlets_async(self.outlets, event, outcome)

    def flush(self) -> Awaitable[Any] | None:
        if self.emit_every_event or not self.seen:
            return None
        self.seen = False
        final = Event(self.value)
        if self.outlets_async:
            return run_outlets_async(self.outlets, final, Outcome())
        run_outlets(self.outlets, final, Outcome())
        return None


class _Held:
    """The events of one batch being filled (per key), and what they wait for."""

    __slots__ = ("done", "events", "timer")

    def __init__(self, done: asyncio.Future[Outcome] | None) -> None:
        self.events: list[Event] = []
        self.done = done
        self.timer: asyncio.TimerHandle | None = None


class Batch(BuiltinStep, Emitter):
    """Send events on in lists of up to ``max_events`` bodies, or after ``flush_after_s``
    seconds from a batch's first event, whichever comes first; per ``key`` (a body field, or
    ``"$key"`` for the event's key) when given. What is held is sent on when the graph closes.

    The batch event has the first event's id and metadata. Where events wait (see the module
    doc) each event answers what its batch answered; without ``flush_after_s`` a batch waits
    at most ``DEFAULT_WAIT_S`` there.
    """

    default_name = "batch"

    def __init__(
        self,
        max_events: int | None = None,
        flush_after_s: float | None = None,
        key: str | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {"max_events": max_events, "flush_after_s": flush_after_s, "key": key}
        self.name = name or self.default_name
        if max_events is None and flush_after_s is None:
            message = "batch needs max_events, flush_after_s or both"
            raise GraphError([Problem(name, message)])
        if max_events is not None and (not isinstance(max_events, int) or max_events < 1):
            message = f"batch: max_events must be a positive integer, not {max_events!r}"
            raise GraphError([Problem(name, message)])
        if flush_after_s is not None and not flush_after_s > 0:
            message = f"batch: flush_after_s must be positive, not {flush_after_s!r}"
            raise GraphError([Problem(name, message)])
        self.max_events = max_events or 0
        self.flush_after_s = flush_after_s
        self.key = key
        self.held: dict[Any, _Held] = {}
        self.outlets: tuple[Segment, ...] = ()
        self.waiting = False
        self.running: set[asyncio.Task[None]] = set()

    def do(self, body: Any) -> Any:
        return body

    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        self.outlets = tuple(outlets.values())
        self.waiting = (
            waits
            or self.flush_after_s is not None
            or any(outlet.is_async for outlet in self.outlets)
        )
        if self.waiting and self.flush_after_s is None:
            self.flush_after_s = DEFAULT_WAIT_S
        return self.waiting

    def _key_of(self, event: Event) -> Any:
        if self.key is None:
            return None
        if self.key == "$key":
            return event.key
        try:
            return event.body[self.key]
        except (KeyError, TypeError, IndexError) as exc:
            found = list(event.body) if isinstance(event.body, Mapping) else type(event.body)
            message = f"batch key field {self.key!r} is missing from the body (it has {found})"
            raise StepError(self.name, event.id, KeyError(message)) from exc

    def _batch_event(self, events: list[Event], key: Any) -> Event:
        batch = copy.copy(events[0])
        batch.body = [event.body for event in events]
        if self.key is not None:
            batch.key = key
        return batch

    # -- sync: fill by count, the filling event runs the batch ------------------------------

    def emit(self, event: Event, outcome: Outcome) -> None:
        key = None if self.key is None else self._key_of(event)
        held = self.held.get(key)
        if held is None:
            held = self.held[key] = _Held(None)
        events = held.events
        events.append(event)
        if len(events) >= self.max_events:
            del self.held[key]
            run_outlets(self.outlets, self._batch_event(events, key), outcome)

    # -- async: every event waits for its batch ---------------------------------------------

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        key = self._key_of(event)
        held = self.held.get(key)
        if held is None:
            loop = asyncio.get_running_loop()
            held = self.held[key] = _Held(loop.create_future())
            held.done.add_done_callback(_retrieved)  # type: ignore[union-attr]
            assert self.flush_after_s is not None
            held.timer = loop.call_later(self.flush_after_s, self._start, key, held)
        held.events.append(event)
        if self.max_events and len(held.events) >= self.max_events:
            self._start(key, held)
        done = held.done
        assert done is not None
        outcome.absorb(await asyncio.shield(done))

    def _start(self, key: Any, held: _Held) -> None:
        """Run a full or due batch in its own task (a waiting caller may be cancelled)."""
        if self.held.get(key) is not held:
            return
        del self.held[key]
        if held.timer is not None:
            held.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(key, held))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, key: Any, held: _Held) -> None:
        done = held.done
        assert done is not None
        result = Outcome()
        try:
            await run_outlets_async(self.outlets, self._batch_event(held.events, key), result)
        except Exception as exc:  # noqa: BLE001 - every caller waiting on the batch re-raises it
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(result)

    def flush(self) -> Awaitable[Any] | None:
        if not self.waiting:
            held, self.held = self.held, {}
            for key, batch in held.items():
                run_outlets(self.outlets, self._batch_event(batch.events, key), Outcome())
            return None
        return self._flush_async()

    async def _flush_async(self) -> None:
        for key, held in list(self.held.items()):
            self._start(key, held)
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)


def _retrieved(done: asyncio.Future[Outcome]) -> None:
    # Every waiting caller re-raises a failed batch's error; when none is left (all were
    # cancelled) the error must still count as seen, or asyncio logs it at collection.
    if not done.cancelled():
        done.exception()
