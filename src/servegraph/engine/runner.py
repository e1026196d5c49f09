"""Run a Plan for one event: a sync executor, and an async one that awaits only async steps.

What an event answers, in order of precedence:
1. the result of an error handler, when a step raised and had one (the first in branch order);
2. the responder's result, when the graph has a responder and the event reached it;
3. without a responder, the result of the first branch (in declaration order) that reached its
   end; None when every branch stopped (a step returned None).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import StepError
from ..event import Event
from .plan import Node, Plan, Segment


class NodeFailed(Exception):
    """Internal: carries a failed step and its event from the chain loop to the error routing."""

    def __init__(self, node: Node, event: Event, cause: Exception) -> None:
        self.node = node
        self.event = event
        self.cause = cause


class Outcome:
    """What one event produced so far: the answer candidates, filled in branch order."""

    __slots__ = ("error_result", "failed", "leaf", "reached_leaf", "responded", "response")

    def __init__(self) -> None:
        self.responded = False
        self.response: Any = None
        self.reached_leaf = False
        self.leaf: Any = None
        self.failed = False
        self.error_result: Any = None

    def answer(self, has_responder: bool) -> Any:
        """The event's answer, by the precedence in this module's docstring."""
        if self.failed:
            return self.error_result
        return self.response if has_responder else self.leaf

    def absorb(self, other: Outcome) -> None:
        """Take the other (later) branch's results where this outcome has none yet."""
        if other.responded and not self.responded:
            self.responded, self.response = True, other.response
        if other.reached_leaf and not self.reached_leaf:
            self.reached_leaf, self.leaf = True, other.leaf
        if other.failed and not self.failed:
            self.failed, self.error_result = True, other.error_result

    def handled(self, handler_outcome: Outcome) -> None:
        """Record an error handler's answer, unless an earlier error was handled already."""
        if not self.failed:
            self.failed = True
            handled = handler_outcome
            if handled.failed:  # the handler's chain failed too, and its own handler answered
                self.error_result = handled.error_result
            elif handled.responded:
                self.error_result = handled.response
            else:
                self.error_result = handled.leaf


def step_error(failure: NodeFailed) -> StepError:
    """The StepError for a failure (routers wrap their routes' errors themselves)."""
    if isinstance(failure.cause, StepError):
        return failure.cause
    error = StepError(failure.node.name, failure.event.id, failure.cause)
    error.__cause__ = failure.cause
    return error


# -- synchronous ---------------------------------------------------------------------------


def run_nodes(nodes: tuple[Node, ...], event: Event) -> Event | None:
    """Run a chain of sync steps (the hot loop); None when a step stopped the event."""
    for node in nodes:
        try:
            if node.takes_body:
                body = node.call(event.body)
                if body is None:
                    return None
                event.body = body
            else:
                result: Event | None = node.call(event)
                if result is None:
                    return None
                event = result
        except Exception as exc:
            raise NodeFailed(node, event, exc) from exc
    return event


def run_segment(segment: Segment, event: Event, outcome: Outcome) -> None:
    """Run a synchronous segment and everything after it."""
    while True:
        try:
            reached = run_nodes(segment.head, event)
            if reached is None:
                return
            if segment.responds and not outcome.responded:
                outcome.responded = True
                outcome.response = snapshot(reached, segment)
            if segment.tail:
                reached = run_nodes(segment.tail, reached)
                if reached is None:
                    return
        except NodeFailed as failure:
            recover(failure, outcome)
            return
        event = reached
        if segment.emitter is not None:
            segment.emitter.emit(event, outcome)
            return
        branches = segment.branches
        if not branches:
            if not outcome.reached_leaf:
                outcome.reached_leaf = True
                outcome.leaf = event.body
            return
        if len(branches) == 1:
            segment = branches[0]
            continue
        copies = branch_copies(event, len(branches), segment)
        for branch, twin in zip(branches, copies, strict=True):
            run_segment(branch, twin, outcome)
        return


def run_outlets(outlets: Sequence[Segment], event: Event, outcome: Outcome) -> None:
    """Run ``event`` through some of an emitter's outlets (none: ``event`` is a leaf); each
    outlet after the first gets a copy."""
    if not outlets:
        if not outcome.reached_leaf:
            outcome.reached_leaf = True
            outcome.leaf = event.body
        return
    if len(outlets) == 1:
        run_segment(outlets[0], event, outcome)
        return
    for outlet, twin in zip(outlets, branch_copies(event, len(outlets), None), strict=True):
        run_segment(outlet, twin, outcome)


def snapshot(event: Event, segment: Segment) -> Any:
    """The responder's answer: a copy when steps run after the responder, so that they cannot
    change what the caller gets; the body itself otherwise."""
    if not (segment.tail or segment.branches):
        return event.body
    try:
        return copy.deepcopy(event.body)
    except Exception as exc:
        raise StepError(segment.head[-1].name, event.id, exc) from exc


def branch_copies(event: Event, count: int, before: Segment | None) -> list[Event]:
    """The event for each of ``count`` branches: the original first, copies for the others."""
    try:
        return [event, *(event.branch() for _ in range(count - 1))]
    except Exception as exc:
        step = (before.tail or before.head)[-1].name if before is not None else "(entry)"
        raise StepError(step, event.id, exc) from exc


def recover(failure: NodeFailed, outcome: Outcome) -> None:
    """Give the failed event to its step's error handler, or raise the StepError."""
    error = step_error(failure)
    handler = failure.node.on_error
    if handler is None:
        raise error from failure.cause
    event = failure.event
    event.error = error
    handler_outcome = Outcome()
    run_segment(handler, event, handler_outcome)
    outcome.handled(handler_outcome)


class SyncRunner:
    """Runs plans whose steps are all synchronous; never touches asyncio.

    ``run`` is chosen at compile time: a graph that is one chain (the common case) runs through
    a loop with no bookkeeping; graphs with branches track their answer in an Outcome.
    """

    def __init__(self, plan: Plan) -> None:
        self._entries = plan.entries
        self._has_responder = plan.has_responder
        single = plan.entries[0] if len(plan.entries) == 1 else None
        self.run: Callable[[Event], Any]
        if single is not None and not single.branches and single.emitter is None:
            self._chain = single
            self.run = self._run_chain
        else:
            self.run = self._run_graph
        if plan.tracing is not None:
            self.run = plan.tracing.run(self.run)

    def _run_chain(self, event: Event) -> Any:
        chain = self._chain
        try:
            reached = run_nodes(chain.head, event)
            if reached is None:
                return None
            answer = snapshot(reached, chain) if chain.tail else reached.body
            if chain.tail:
                run_nodes(chain.tail, reached)
        except NodeFailed as failure:
            outcome = Outcome()
            recover(failure, outcome)
            return outcome.answer(self._has_responder)
        # With a responder elsewhere (after an error handler), a success reaches none.
        return answer if chain.responds or not self._has_responder else None

    def _run_graph(self, event: Event) -> Any:
        outcome = Outcome()
        entries = self._entries
        if len(entries) == 1:  # one entry (with branches or an emitter): no copies to make
            run_segment(entries[0], event, outcome)
            return outcome.answer(self._has_responder)
        copies = branch_copies(event, len(entries), None)
        for segment, twin in zip(entries, copies, strict=True):
            run_segment(segment, twin, outcome)
        return outcome.answer(self._has_responder)


# -- asynchronous --------------------------------------------------------------------------


async def run_nodes_async(nodes: tuple[Node, ...], event: Event) -> Event | None:
    """Run a chain that holds async steps: await those, call the others."""
    for node in nodes:
        try:
            if node.takes_body:
                body = await node.call(event.body) if node.is_async else node.call(event.body)
                if body is None:
                    return None
                event.body = body
            else:
                result = await node.call(event) if node.is_async else node.call(event)
                if result is None:
                    return None
                event = result
        except Exception as exc:
            raise NodeFailed(node, event, exc) from exc
    return event


async def run_segment_async(segment: Segment, event: Event, outcome: Outcome) -> None:
    """Run a segment that holds async steps (or leads to some) and everything after it."""
    while True:
        if not segment.is_async:
            run_segment(segment, event, outcome)
            return
        try:
            reached = await run_nodes_async(segment.head, event)
            if reached is None:
                return
            if segment.responds and not outcome.responded:
                outcome.responded = True
                outcome.response = snapshot(reached, segment)
            if segment.tail:
                reached = await run_nodes_async(segment.tail, reached)
                if reached is None:
                    return
        except NodeFailed as failure:
            await recover_async(failure, outcome)
            return
        event = reached
        if segment.emitter is not None:
            if segment.emits_async:
                await segment.emitter.emit_async(event, outcome)
            else:
                segment.emitter.emit(event, outcome)
            return
        branches = segment.branches
        if not branches:
            if not outcome.reached_leaf:
                outcome.reached_leaf = True
                outcome.leaf = event.body
            return
        if len(branches) == 1:
            segment = branches[0]
            continue
        await fan_out(branches, event, outcome, segment)
        return


async def run_outlets_async(outlets: Sequence[Segment], event: Event, outcome: Outcome) -> None:
    """Async twin of ``run_outlets``: several outlets run concurrently when any is async."""
    if not outlets:
        if not outcome.reached_leaf:
            outcome.reached_leaf = True
            outcome.leaf = event.body
        return
    if len(outlets) == 1:
        await run_segment_async(outlets[0], event, outcome)
        return
    await fan_out(tuple(outlets), event, outcome, None)


async def fan_out(
    branches: tuple[Segment, ...], event: Event, outcome: Outcome, before: Segment | None
) -> None:
    """Run branches, concurrently when any is async, merging their outcomes in order."""
    copies = branch_copies(event, len(branches), before)
    if not any(branch.is_async for branch in branches):
        for branch, twin in zip(branches, copies, strict=True):
            run_segment(branch, twin, outcome)
        return
    results = [Outcome() for _ in branches]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(run_segment_async(branch, twin, result))
                for branch, twin, result in zip(branches, copies, results, strict=True)
            ]
    except BaseExceptionGroup as group_error:
        # The first failure cancelled its siblings; report it as the step error it is.
        first = group_error.exceptions[0]
        raise first from first.__cause__
    if any(task.cancelled() for task in tasks):
        # A step raised CancelledError; a TaskGroup would drop that branch silently.
        raise asyncio.CancelledError
    for result in results:
        outcome.absorb(result)


async def recover_async(failure: NodeFailed, outcome: Outcome) -> None:
    """Async twin of ``recover``."""
    error = step_error(failure)
    handler = failure.node.on_error
    if handler is None:
        raise error from failure.cause
    event = failure.event
    event.error = error
    handler_outcome = Outcome()
    await run_segment_async(handler, event, handler_outcome)
    outcome.handled(handler_outcome)


class AsyncRunner:
    """Runs any plan inside a running event loop.

    Synchronous segments run inline through the sync executor; only async steps are awaited,
    and branches that contain async steps run concurrently (an ``asyncio.TaskGroup``), their
    results merged in declaration order.
    """

    def __init__(self, plan: Plan) -> None:
        self._entries = plan.entries
        self._has_responder = plan.has_responder
        self._sync = None if plan.is_async else SyncRunner(plan)
        if plan.tracing is not None and self._sync is None:
            self.run = plan.tracing.run_async(self.run)  # type: ignore[method-assign]

    async def run(self, event: Event) -> Any:
        """Run ``event`` through the plan and return its answer.

        Raises:
            StepError: a step raised and had no error handler.
        """
        if self._sync is not None:
            return self._sync.run(event)
        outcome = Outcome()
        entries = self._entries
        if len(entries) == 1:
            await run_segment_async(entries[0], event, outcome)
        else:
            await fan_out(entries, event, outcome, None)
        return outcome.answer(self._has_responder)
