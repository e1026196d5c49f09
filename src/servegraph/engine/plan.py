"""Compile a GraphSpec into an immutable Plan: fused chains of steps, branches, route tables.

The plan is built once, when a server or mock server is created; running an event walks no
graph and inspects nothing: it follows the segments' tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..context import Context
from ..errors import GraphError, Problem
from ..graph.resolve import Namespace
from ..graph.spec import EngineKind, GraphSpec, StepKind, StepSpec
from ..graph.validate import check
from .adapters import Callee, build_callee, build_selector, in_executor
from .emitters import Emitter, Gatherer
from .routing import RouteTable, make_router_call
from .trace import traced


@dataclass(frozen=True, slots=True)
class Node:
    """One compiled step. ``takes_body`` calls get and return the body; others the Event."""

    name: str
    call: Callable[[Any], Any]
    takes_body: bool
    is_async: bool
    is_responder: bool
    on_error: Segment | None


@dataclass(frozen=True, slots=True)
class Segment:
    """A chain of steps run one after the other, then the segments that follow it.

    Several ``branches`` mean a fan-out: each branch gets its own copy of the event. A step with
    several predecessors starts a segment shared by all of them, and runs once per arrival.
    A segment that ends with an ``emitter`` step hands the event to it instead: the emitter
    runs the branches itself (``emits_async``: through ``emit_async``).
    """

    head: tuple[Node, ...]
    tail: tuple[Node, ...]
    responds: bool
    branches: tuple[Segment, ...]
    is_async: bool
    emitter: Emitter | None = None
    emits_async: bool = False

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Every step of the chain, in order."""
        return self.head + self.tail


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled graph, ready to run events."""

    entries: tuple[Segment, ...]
    is_async: bool
    has_responder: bool
    instances: tuple[object, ...]
    tracing: Any = None
    """The context's ``Tracing`` when tracing is on: runners put each event in a span."""


def compile_plan(
    spec: GraphSpec,
    *,
    namespace: Namespace = None,
    context: Context | None = None,
    engine: EngineKind = EngineKind.AUTO,
    offload: Executor | None = None,
    queues: Callable[[StepSpec], Callable[[Any], Any]] | None = None,
) -> Plan:
    """Validate ``spec``, build its steps and compile them into a Plan.

    With ``offload`` (what servers pass), blocking sync steps run in that executor, so that
    they never stall the event loop; a step is blocking unless its spec says
    ``blocking=False`` or its class has ``blocking = False``. ``queues`` builds the call of
    each queue step (an async call that writes the event to its stream): the stream runtime
    gives it; without it, a graph with queue steps does not compile. Emitter steps (batch and
    the like, see ``engine.emitters``) make events wait for their downstream work under the
    async engine, in servers (``offload``) and on streams (``queues``).

    Raises:
        GraphError: every problem found, each naming its step (validation, imports, constructors,
            async steps under the sync engine).
    """
    check(spec, namespace)
    return _Compiler(spec, namespace, context or Context(), engine, offload, queues).compile()


class _Compiler:
    def __init__(
        self,
        spec: GraphSpec,
        namespace: Namespace,
        context: Context,
        engine: EngineKind,
        offload: Executor | None,
        queues: Callable[[StepSpec], Callable[[Any], Any]] | None,
    ) -> None:
        self.offload = offload
        self.queues = queues
        self.waits = engine is EngineKind.ASYNC or offload is not None or queues is not None
        self.spec = spec
        self.namespace = namespace
        self.context = context
        self.engine = engine
        self.instances: list[object] = []
        self.problems: list[Problem] = []
        self.children: dict[str, list[str]] = {step.name: [] for step in spec.steps}
        for step in spec.steps:
            for parent in step.after:
                self.children[parent].append(step.name)
        self.handlers = {step.on_error for step in spec.steps if step.on_error} | (
            {spec.on_error} if spec.on_error else set()
        )
        self.graph_handler_chain = self._descendants(spec.on_error)
        self.segments: dict[str, Segment] = {}
        self.building: set[str] = set()

    def compile(self) -> Plan:
        nodes = {step.name: self._node(step) for step in self.spec.steps}
        if self.problems:
            raise GraphError(self.problems)
        entries = tuple(
            self._segment(step.name, nodes)
            for step in self.spec.steps
            if not step.after and step.name not in self.handlers
        )
        if not entries:
            message = "no entry step: every step runs after another one or handles errors"
            raise GraphError(message)
        is_async = any(segment.is_async for segment in entries)
        if self.engine is EngineKind.SYNC and is_async:
            waiting = [
                segment.nodes[-1].name
                for segment in self.segments.values()
                if segment.emits_async and segment.nodes
            ]
            names = ", ".join(
                repr(name) for name, node in nodes.items() if node.is_async or name in waiting
            )
            message = f"async steps ({names}) need the async engine; use engine='async'"
            raise GraphError(message)
        has_responder = any(step.responder for step in self.spec.steps)
        return Plan(entries, is_async, has_responder, tuple(self.instances), self.context.tracing)

    def _node(self, step: StepSpec) -> _Draft:
        try:
            if step.kind is StepKind.QUEUE:
                return self._queue(step)
            if step.kind is StepKind.ROUTER:
                routes = {route.name: self._route(route) for route in step.routes}
                selector = build_selector(step, self.namespace, self.context)
                table = RouteTable(step.name, routes, selector)
                is_async = any(route.is_async for route in routes.values())
                call = self._traced(step.name, make_router_call(table, is_async), False, is_async)
                return _Draft(step, call, False, is_async)
            callee = build_callee(
                step, self.namespace, self.context, stop_on_none=self.spec.stop_on_none
            )
        except GraphError as exc:
            self.problems.extend(exc.problems)
            return _Draft(step, _unbuilt, True, False)
        if callee.instance is not None:
            self.instances.append(callee.instance)
        callee = self._offloaded(step, callee)
        call = self._traced(step.name, callee.call, callee.takes_body, callee.is_async)
        return _Draft(step, call, callee.takes_body, callee.is_async, callee.instance)

    def _queue(self, step: StepSpec) -> _Draft:
        if self.queues is None:
            message = (
                "a queue step needs the stream runtime: run the graph with a mock server, "
                "`servegraph serve` or `servegraph consume`"
            )
            raise GraphError([Problem(step.name, message)])
        return _Draft(step, self._traced(step.name, self.queues(step), False, True), False, True)

    def _route(self, route: StepSpec) -> Node:
        callee = build_callee(
            route, self.namespace, self.context, stop_on_none=self.spec.stop_on_none
        )
        if callee.instance is not None:
            self.instances.append(callee.instance)
        callee = self._offloaded(route, callee)
        call = self._traced(route.name, callee.call, callee.takes_body, callee.is_async)
        return Node(route.name, call, callee.takes_body, callee.is_async, False, None)

    def _offloaded(self, step: StepSpec, callee: Callee) -> Callee:
        """A blocking sync step, when compiling for a server: the same call, in the executor."""
        if self.offload is None or callee.is_async:
            return callee
        blocking = step.blocking
        if blocking is None:
            blocking = getattr(callee.instance, "blocking", True) is not False
        if not blocking:
            return callee
        return dataclasses.replace(
            callee, call=in_executor(callee.call, self.offload), is_async=True
        )

    def _traced(
        self, name: str, call: Callable[[Any], Any], takes_body: bool, is_async: bool
    ) -> Callable[[Any], Any]:
        # Verbose graphs log every step, metered ones count; the others keep the bare call
        # (decided once, here).
        if self.context.verbose:
            call = traced(name, call, takes_body, is_async)
        if self.context.tracing is not None:
            call = self.context.tracing.step(name, call, is_async)
        metrics = self.context.metrics
        if getattr(metrics, "enabled", False):
            from ..monitoring.metrics import metered

            call = metered(metrics.step_metrics(name), call, is_async)
        return call

    def _segment(self, name: str, drafts: dict[str, _Draft]) -> Segment:
        built = self.segments.get(name)
        if built is not None:
            return built
        if name in self.building:
            message = f"error handlers form a cycle through step {name!r}"
            raise GraphError([Problem(name, message)])
        self.building.add(name)
        chain = [name]
        while len(self.children[chain[-1]]) == 1 and not isinstance(
            drafts[chain[-1]].instance, Emitter
        ):
            child = self.children[chain[-1]][0]
            if len(self.spec.step(child).after) != 1:
                break
            chain.append(child)
        nodes = tuple(self._finish(drafts[step], drafts) for step in chain)
        last = chain[-1]
        outlets = {child: self._outlet(last, child, drafts) for child in self.children[last]}
        branches = tuple(outlets.values())
        emitter = drafts[last].instance
        emits_async = False
        if isinstance(emitter, Emitter):
            emits_async = emitter.bind(outlets, waits=self.waits)
        else:
            emitter = None
        is_async = (
            emits_async
            or any(
                node.is_async or (node.on_error is not None and node.on_error.is_async)
                for node in nodes
            )
            or any(branch.is_async for branch in branches)
        )
        cut = next((i + 1 for i, node in enumerate(nodes) if node.is_responder), len(nodes))
        responds = cut > 0 and nodes[cut - 1].is_responder
        segment = Segment(
            nodes[:cut], nodes[cut:], responds, branches, is_async, emitter, emits_async
        )
        self.segments[name] = segment
        self.building.discard(name)
        return segment

    def _outlet(self, parent: str, child: str, drafts: dict[str, _Draft]) -> Segment:
        """The segment that ``parent`` passes events to for ``child``: the child's own, or,
        for a gatherer (merge) with several predecessors, an arrival that waits for all."""
        segment = self._segment(child, drafts)
        gatherer = drafts[child].instance
        parents = self.spec.step(child).after
        if not isinstance(gatherer, Gatherer) or len(parents) < 2:
            return segment
        arrival = gatherer.arrival(parent, parents)
        emits_async = arrival.bind({child: segment}, waits=self.waits)
        is_async = emits_async or segment.is_async
        return Segment((), (), False, (segment,), is_async, arrival, emits_async)

    def _descendants(self, name: str | None) -> set[str]:
        """``name`` and every step after it (the steps of an error handler's chain)."""
        found: set[str] = set()
        pending = [name] if name is not None else []
        while pending:
            current = pending.pop()
            if current not in found:
                found.add(current)
                pending.extend(self.children.get(current, ()))
        return found

    def _finish(self, draft: _Draft, drafts: dict[str, _Draft]) -> Node:
        step = draft.step
        handler_name = step.on_error
        # The graph-level handler covers every step but its own chain (that would loop).
        if handler_name is None and step.name not in self.graph_handler_chain:
            handler_name = self.spec.on_error
        handler = self._segment(handler_name, drafts) if handler_name else None
        return Node(
            step.name, draft.call, draft.takes_body, draft.is_async, step.responder, handler
        )


@dataclass(frozen=True, slots=True)
class _Draft:
    step: StepSpec
    call: Callable[[Any], Any]
    takes_body: bool
    is_async: bool
    instance: object | None = None


def _unbuilt(body: Any) -> Any:  # pragma: no cover - never runs: compile raises first
    raise AssertionError
