"""Cut a graph at its queue steps into segments: the parts that run in separate processes.

The ``main`` segment holds the entry steps and everything reached from them without crossing
a queue; each queue step with steps after it starts the segment named after it, fed by the
queue's stream. A queue step belongs to the segment that writes to it. Error handlers run in
every segment whose steps they handle (each process builds its own), and so does the
graph-level handler. A step reached from two segments is an error: it would run twice.

Example:
    >>> from servegraph.graph.spec import GraphSpec, StepSpec, StepKind
    >>> spec = GraphSpec(steps=(
    ...     StepSpec("parse", handler="json:loads"),
    ...     StepSpec("q", kind=StepKind.QUEUE, stream="memory://q", after=("parse",)),
    ...     StepSpec("store", handler="builtins:print", after=("q",)),
    ... ))
    >>> segments(spec)
    {'main': ('parse', 'q'), 'q': ('store',)}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ..errors import GraphError, Problem
from .spec import GraphSpec, StepKind, StepSpec

MAIN = "main"
"""The name of the segment that holds the graph's entry steps."""


def has_queues(spec: GraphSpec) -> bool:
    """Whether the graph has a queue step (and so more than one segment, or a stream sink)."""
    return any(step.kind is StepKind.QUEUE for step in spec.steps)


def segments(spec: GraphSpec) -> dict[str, tuple[str, ...]]:
    """Each segment's name and its steps, in declaration order (``main`` first).

    Raises:
        GraphError: steps reached from more than one segment, each named.
    """
    found, problems = _assign(spec)
    if problems:
        raise GraphError(problems)
    return found


def segment_problems(spec: GraphSpec) -> Iterator[Problem]:
    """The problems of the cut (for validation), without raising."""
    yield from _assign(spec)[1]


def segment_spec(spec: GraphSpec, name: str) -> GraphSpec:
    """The graph that segment ``name`` runs: its steps, with the links to other segments cut
    (the steps after a queue become entries of the queue's segment).

    Raises:
        GraphError: ``name`` is not a segment (the message lists them), or the cut is invalid.
    """
    found = segments(spec)
    members = found.get(name)
    if members is None:
        listed = ", ".join(repr(segment) for segment in found)
        message = f"unknown segment {name!r}; this graph's segments are: {listed}"
        raise GraphError(message)
    keep = set(members)
    steps = tuple(
        dataclasses.replace(step, after=tuple(p for p in step.after if p in keep))
        for step in spec.steps
        if step.name in keep
    )
    on_error = spec.on_error if spec.on_error in keep else None
    return dataclasses.replace(spec, steps=steps, on_error=on_error)


def _assign(spec: GraphSpec) -> tuple[dict[str, tuple[str, ...]], list[Problem]]:
    by_name = {step.name: step for step in spec.steps}
    if len(by_name) < len(spec.steps):
        return {MAIN: tuple(by_name)}, []  # duplicate names are reported by validation
    children: dict[str, list[str]] = {name: [] for name in by_name}
    for step in spec.steps:
        for parent in step.after:
            if parent in children and parent != step.name:
                children[parent].append(step.name)
    handlers = {step.on_error for step in spec.steps if step.on_error} | {spec.on_error}
    roots: dict[str, list[str]] = {
        MAIN: [s.name for s in spec.steps if not s.after and s.name not in handlers]
    }
    for step in spec.steps:
        if step.kind is StepKind.QUEUE and children[step.name]:
            roots[step.name] = children[step.name]
    members = {
        segment: _reach(by_name, children, starts, with_handlers=False)
        for segment, starts in roots.items()
    }
    problems: list[Problem] = []
    for step in spec.steps:
        holders = [segment for segment, seen in members.items() if step.name in seen]
        if len(holders) > 1:
            listed = ", ".join(repr(segment) for segment in holders)
            message = (
                f"the step is reached from segments {listed}: a step after a queue must not "
                "also run before it; put the queue on every path to the step, or on none"
            )
            problems.append(Problem(step.name, message))
    for seen in members.values():
        handler_roots = [by_name[name].on_error for name in seen if by_name[name].on_error]
        if seen and spec.on_error is not None:
            handler_roots.append(spec.on_error)
        seen |= _reach(by_name, children, handler_roots, with_handlers=True)
    ordered = {
        segment: tuple(step.name for step in spec.steps if step.name in seen)
        for segment, seen in members.items()
        if seen
    }
    return ordered, problems


def _reach(
    by_name: dict[str, StepSpec],
    children: dict[str, list[str]],
    starts: list[str | None] | list[str],
    *,
    with_handlers: bool,
) -> set[str]:
    """Every step reached from ``starts`` without crossing a queue (and through error
    handlers when ``with_handlers``)."""
    seen: set[str] = set()
    pending = [name for name in starts if name is not None and name in by_name]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        step = by_name[name]
        if with_handlers and step.on_error in by_name:
            pending.append(step.on_error)
        if step.kind is not StepKind.QUEUE:
            pending.extend(children[name])
    return seen
