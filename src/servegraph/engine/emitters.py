"""Steps that run the steps after them themselves: emitters and gatherers.

Most steps map one event to one event, and the runner carries the result on. A few built-in
steps cannot work that way: a batch holds events and sends one list on later, a flat-map sends
several events on, a choice sends the event to some of its outlets only, a reduce may send its
value on when the graph closes. Such a step is an ``Emitter``: the compiler ends its segment
after it and binds it to the segments that follow (its *outlets*, by step name); the runner
hands it the event and the event's outcome instead of running those segments itself.

A ``Gatherer`` is a step with several predecessors that waits for all of them (merge): the
compiler gives each predecessor its own arrival emitter, which holds the event until the last
branch arrives and then runs the gatherer's segment once.

Emitters are built-in steps (``servegraph.steps``); their per-event path is theirs to keep
fast. The runner functions that run outlets are in ``servegraph.engine.runner``
(``run_outlets`` and ``run_outlets_async``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..event import Event
    from .plan import Segment
    from .runner import Outcome


class Emitter(ABC):
    """A step whose segment ends with it: it runs its outlets itself (see the module doc)."""

    @abstractmethod
    def bind(self, outlets: Mapping[str, Segment], *, waits: bool) -> bool:
        """Keep the segments after this step (by step name, in declaration order).

        ``waits`` is True when events must wait for the work they start downstream (servers,
        stream consumers and the async engine: a consumer acks an event only when everything
        it caused has finished). Return True when ``emit_async`` must be used (the runner then
        treats the segment as async), False when ``emit`` serves.
        """

    @abstractmethod
    def emit(self, event: Event, outcome: Outcome) -> None:
        """Run the outlets for ``event`` (synchronously), recording results in ``outcome``."""

    async def emit_async(self, event: Event, outcome: Outcome) -> None:
        """Async twin of ``emit``; by default the sync one."""
        self.emit(event, outcome)

    def flush(self) -> Awaitable[Any] | None:
        """Send on what is held (the graph is closing); an awaitable when that is async.

        Called in declaration order before any step's close hook, so that the steps after an
        emitter are still open when its last events reach them.
        """
        return None


class Gatherer(ABC):
    """A step with several predecessors that runs once all of them have sent it the event."""

    @abstractmethod
    def arrival(self, parent: str, parents: tuple[str, ...]) -> Emitter:
        """The emitter that takes the events arriving from ``parent`` (one of ``parents``)."""
