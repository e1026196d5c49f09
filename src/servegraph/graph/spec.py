"""Frozen spec records: what a graph is, independent of how it runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SPEC_VERSION = 1


class StepKind(StrEnum):
    """What a step does: run user code (task), pick one of its routes (router), or hand the
    event to a stream (queue: the steps after it run in another segment)."""

    TASK = "task"
    ROUTER = "router"
    QUEUE = "queue"


class Topology(StrEnum):
    """The shape of a graph: a DAG of steps, or one router over routes."""

    FLOW = "flow"
    ROUTER = "router"


class EngineKind(StrEnum):
    """Which executor runs the graph; ``auto`` picks sync when no step is async."""

    AUTO = "auto"
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a graph.

    A task step runs a function (``handler`` names it) or a class (``class_name`` names it and
    ``handler`` names the method, by default ``do_event`` or ``do``). References are import paths
    (``"pkg.mod:Name"`` or ``"pkg.mod.Name"``); ``target`` holds the live object when the step
    was built from one, and is not part of the spec's identity. ``blocking=False`` declares a
    sync step fast enough to run on the event loop in a server (default: a sync step is run in
    the server's thread pool, unless its class says ``blocking = False``).

    A queue step writes events to ``stream`` (a URL such as ``"redis://host:6379/events"``,
    ``"nats://host:4222/events"`` or ``"memory://events"``); ``options`` configure the
    consumers of the segment that starts after it (see ``servegraph.streams.settings``).
    """

    name: str
    kind: StepKind = StepKind.TASK
    class_name: str | None = None
    handler: str | None = None
    class_args: Mapping[str, Any] = field(default_factory=dict)
    full_event: bool = False
    input_path: str | None = None
    result_path: str | None = None
    after: tuple[str, ...] = ()
    responder: bool = False
    on_error: str | None = None
    routes: tuple[StepSpec, ...] = ()
    default_route: str | None = None
    blocking: bool | None = None
    stream: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    target: object = field(default=None, compare=False, repr=False)

    @property
    def reference(self) -> str | None:
        """The import path of the class or function this step runs."""
        return self.class_name if self.class_name is not None else self.handler


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """A whole graph: its topology, its steps in declaration order and graph-wide options.

    A router topology is one router step (``steps[0]``) whose routes are the models.
    ``stop_on_none``: a step that returns None stops the event (the default); when False, None
    is passed on as the body (MLRun's behaviour, set by the compatibility loader).
    """

    topology: Topology = Topology.FLOW
    steps: tuple[StepSpec, ...] = ()
    on_error: str | None = None
    engine: EngineKind = EngineKind.AUTO
    params: Mapping[str, Any] = field(default_factory=dict)
    stop_on_none: bool = True
    tracking: Mapping[str, Any] | None = None
    """Prediction tracking of the graph's models (None: off; see ``monitoring.records``)."""

    def step(self, name: str) -> StepSpec:
        """Return the step called ``name`` (routes included)."""
        for step in self.steps:
            if step.name == name:
                return step
            for route in step.routes:
                if route.name == name:
                    return route
        message = f"no step named {name!r}"
        raise KeyError(message)
