"""The fluent Graph API: add steps, chain them, pick the responder, attach error handlers."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from ..errors import GraphError
from .resolve import Namespace, ResolveError, is_class, reference_of, resolve
from .spec import EngineKind, GraphSpec, StepKind, StepSpec, Topology

if TYPE_CHECKING:
    from ..testing import MockServer


class StepObject(Protocol):
    """A built-in step object (``servegraph.steps``): it stands for a class and its arguments."""

    def as_step(self) -> tuple[type, Mapping[str, Any]]: ...


StepTarget = Callable[..., Any] | type | str | StepObject
"""A step is made from a function, a class, or the import path of either."""


class StepRef:
    """A handle on a step of a graph, for chaining: ``graph.to(a).to(b).respond()``."""

    __slots__ = ("_graph", "_index")

    def __init__(self, graph: Graph, index: int) -> None:
        self._graph = graph
        self._index = index

    @property
    def name(self) -> str:
        """The step's name, unique in its graph."""
        return self.spec.name

    @property
    def spec(self) -> StepSpec:
        """The step's current spec."""
        return self._graph._steps[self._index]

    def to(self, target: StepTarget, name: str | None = None, **options: Any) -> StepRef:
        """Add a step that runs after this one and return it.

        Args:
            target: a function, a class or an import path.
            name: the step name (default: the function or class name).
            **options: ``handler``, ``class_args``, ``full_event``, ``input_path``,
                ``result_path``, ``responder``.
        """
        return self._graph.add_step(target, name, after=self.name, **options)

    def to_queue(self, name: str, stream: str, **options: Any) -> StepRef:
        """Add a queue step after this one: events are written to ``stream`` and the steps
        added after the queue run in its own segment, in the processes that consume it.

        Args:
            name: the queue step's name, which is also its segment's name.
            stream: the stream URL (``redis://host:6379/events``, ``nats://host:4222/events``,
                ``memory://events``).
            **options: the consumers' options (``QueueOptions``: ``group``, ``key``, ``batch``,
                ``max_in_flight``, ``max_deliveries``, ``retry_delay_s``, ``dead_letter``...).
        """
        return self._graph.add_queue(name, stream, after=self.name, **options)

    def respond(self) -> Self:
        """Make this step the responder: its result is the answer to the caller."""
        self._graph._replace(self._index, responder=True)
        return self

    def error_handler(self, target: StepTarget, name: str | None = None, **options: Any) -> StepRef:
        """Add a step that gets the event (with ``event.error``) when this step raises.

        The handler's result (or the result of the steps after it) is what the caller sees.
        """
        handler = self._graph.add_step(target, name, **options)
        self._graph._replace(self._index, on_error=handler.name)
        return handler

    def add_route(self, name: str, target: StepTarget, **options: Any) -> Self:
        """Add a route to this router step."""
        spec = self.spec
        if spec.kind is not StepKind.ROUTER:
            message = f"step {spec.name!r} is not a router; add routes to a router step"
            raise GraphError(message)
        route = self._graph._make_step(target, name, options)
        self._graph._replace(self._index, routes=(*spec.routes, route))
        return self

    def __repr__(self) -> str:
        return f"StepRef({self.name!r})"


class Graph:
    """A serving graph: a flow (a DAG of steps) or a router over routes.

    Example:
        >>> graph = Graph()
        >>> _ = graph.to(lambda x: x + 1, name="inc").to(lambda x: x * 2, name="double").respond()
        >>> graph.test(3)
        8
    """

    def __init__(
        self,
        topology: Topology | str = Topology.FLOW,
        *,
        engine: EngineKind | str = EngineKind.AUTO,
        params: Mapping[str, Any] | None = None,
        namespace: Namespace = None,
    ) -> None:
        self.topology = Topology(topology)
        self.engine = EngineKind(engine)
        self.params: dict[str, Any] = dict(params or {})
        self.on_error: str | None = None
        self.stop_on_none = True
        self.tracking: dict[str, Any] | None = None
        self.namespace = namespace
        self._steps: list[StepSpec] = []
        self._mock: tuple[GraphSpec, Namespace, MockServer] | None = None
        if self.topology is Topology.ROUTER:
            self._steps.append(StepSpec(name="router", kind=StepKind.ROUTER))

    @classmethod
    def router(
        cls,
        *,
        default_route: str | None = None,
        router: type | str | None = None,
        router_args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """Return a graph whose topology is one router (``add_route`` adds the models).

        Args:
            default_route: the route of events that name none.
            router: a router class (``select(event, routes)``; with ``combine`` an ensemble
                such as VotingEnsemble), or its import path; default: route by name.
            router_args: the router class's constructor arguments.
            **options: ``engine``, ``params``, ``namespace``.
        """
        graph = cls(Topology.ROUTER, **options)
        graph._replace(0, default_route=default_route, **_router_fields(router, router_args))
        return graph

    @classmethod
    def from_spec(cls, spec: GraphSpec, *, namespace: Namespace = None) -> Self:
        """Return a graph holding ``spec`` (to extend it with the builder)."""
        graph = cls(spec.topology, engine=spec.engine, params=spec.params, namespace=namespace)
        graph.on_error = spec.on_error
        graph.stop_on_none = spec.stop_on_none
        graph.tracking = dict(spec.tracking) if spec.tracking is not None else None
        graph._steps = list(spec.steps)
        return graph

    # -- building -------------------------------------------------------------------------

    def to(self, target: StepTarget, name: str | None = None, **options: Any) -> StepRef:
        """Add a step with no predecessor (an entry of the flow) and return it."""
        return self.add_step(target, name, **options)

    def add_step(
        self,
        target: StepTarget,
        name: str | None = None,
        *,
        after: str | Iterable[str] | None = None,
        **options: Any,
    ) -> StepRef:
        """Add a step after the named step(s) (none: an entry of the flow) and return it."""
        if self.topology is Topology.ROUTER:
            message = "a router graph has routes, not steps: use add_route()"
            raise GraphError(message)
        parents = (after,) if isinstance(after, str) else tuple(after or ())
        step = dataclasses.replace(self._make_step(target, name, options), after=parents)
        return self._append(step)

    def to_queue(self, name: str, stream: str, **options: Any) -> StepRef:
        """Add a queue step as an entry of the flow: a stream trigger, whose segment runs the
        steps added after it for every event written to ``stream``."""
        return self.add_queue(name, stream, **options)

    def add_queue(
        self,
        name: str,
        stream: str,
        *,
        after: str | Iterable[str] | None = None,
        **options: Any,
    ) -> StepRef:
        """Add a queue step after the named step(s); see ``StepRef.to_queue``."""
        if self.topology is Topology.ROUTER:
            message = "a router graph has routes, not steps: queues go in a flow"
            raise GraphError(message)
        parents = (after,) if isinstance(after, str) else tuple(after or ())
        step = StepSpec(
            name=name, kind=StepKind.QUEUE, stream=stream, options=dict(options), after=parents
        )
        return self._append(step)

    def add_router(
        self,
        name: str,
        *,
        after: str | Iterable[str] | None = None,
        default_route: str | None = None,
        responder: bool = False,
        router: type | str | None = None,
        router_args: Mapping[str, Any] | None = None,
    ) -> StepRef:
        """Add a router step inside the flow; give it routes with ``add_route``.

        ``router`` and ``router_args`` choose the router class, as in ``Graph.router``.
        """
        parents = (after,) if isinstance(after, str) else tuple(after or ())
        step = StepSpec(
            name=name,
            kind=StepKind.ROUTER,
            after=parents,
            default_route=default_route,
            responder=responder,
            **_router_fields(router, router_args),
        )
        return self._append(step)

    def add_route(self, name: str, target: StepTarget, **options: Any) -> StepRef:
        """Add a route to the graph's router (router topology) and return the router."""
        if self.topology is not Topology.ROUTER:
            message = "add_route() is for router graphs; in a flow, use add_router(...).add_route()"
            raise GraphError(message)
        return StepRef(self, 0).add_route(name, target, **options)

    def error_handler(self, target: StepTarget, name: str | None = None, **options: Any) -> StepRef:
        """Add the graph-level error handler: it gets events whose step has no handler."""
        handler = self._append(self._make_step(target, name, options))
        self.on_error = handler.name
        return handler

    def __getitem__(self, name: str) -> StepRef:
        for index, step in enumerate(self._steps):
            if step.name == name:
                return StepRef(self, index)
        message = f"no step named {name!r}"
        raise KeyError(message)

    # -- views ----------------------------------------------------------------------------

    @property
    def spec(self) -> GraphSpec:
        """The graph as an immutable spec."""
        return GraphSpec(
            topology=self.topology,
            steps=tuple(self._steps),
            on_error=self.on_error,
            engine=self.engine,
            params=dict(self.params),
            stop_on_none=self.stop_on_none,
            tracking=self.tracking,
        )

    def track(
        self,
        models: str | Iterable[str] = "*",
        sink: str = "parquet://records",
        sample: float = 1.0,
        **options: Any,
    ) -> Self:
        """Record the predictions of ``models`` (``"*"``: all of them) to ``sink``.

        ``sink`` is ``"parquet://DIR"`` (Parquet files under DIR, the default) or a stream URL
        (``"redis://host:6379/records"``...); ``sample`` is the share of predictions kept.
        Other options (``seed``, ``max_queue``, ``batch_size``, ``flush_interval_s``): see
        ``servegraph.monitoring.records.TrackingSettings``.

        Raises:
            GraphError: an unknown option or an invalid value.
        """
        from ..monitoring.records import TrackingSettings

        chosen = models if isinstance(models, str) else list(models)
        settings = {"models": chosen, "sink": sink, "sample": sample, **options}
        self.tracking = TrackingSettings.parse(settings).to_dict()
        return self

    def validate(self) -> None:
        """Check the graph and raise one GraphError listing every problem found."""
        from .validate import check

        check(self.spec, self.namespace)

    def to_dict(self) -> dict[str, Any]:
        """Return the graph as a plain dict (lossless: ``Graph.from_dict`` reads it back)."""
        from .serde import spec_to_dict

        return spec_to_dict(self.spec)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, namespace: Namespace = None) -> Self:
        """Return the graph that a ``to_dict`` dict describes."""
        from .serde import spec_from_dict

        return cls.from_spec(spec_from_dict(data), namespace=namespace)

    def save(self, path: str | Path) -> None:
        """Write the spec to a ``.json``, ``.yaml`` or ``.yml`` file."""
        from .serde import save_spec

        save_spec(self.spec, Path(path))

    @classmethod
    def load(cls, path: str | Path, *, namespace: Namespace = None) -> Self:
        """Read a graph from a ``.json``, ``.yaml`` or ``.yml`` spec file."""
        from .serde import load_spec

        return cls.from_spec(load_spec(Path(path)), namespace=namespace)

    def plot(self, format: str = "mermaid") -> str:  # noqa: A002 - the natural word
        """Return the graph as Mermaid (``"mermaid"``), Graphviz DOT (``"dot"``) or SVG text."""
        from .plot import render

        return render(self.spec, format)

    # -- running --------------------------------------------------------------------------

    def mock_server(
        self,
        *,
        engine: EngineKind | str | None = None,
        namespace: Namespace = None,
        params: Mapping[str, Any] | None = None,
        verbose: bool = False,
        metrics: bool = False,
        tracing: bool | Any = False,
    ) -> MockServer:
        """Compile the graph and return an in-process server to send it events.

        Args:
            engine: ``"sync"``, ``"async"`` or ``"auto"`` (default: the graph's engine).
            namespace: where bare class and function names are looked up.
            params: graph parameters for ``context.get_param``, over the graph's own.
            verbose: log what every step gets and returns (logger ``servegraph.engine``,
                DEBUG level).
            metrics: count events, errors and latency per step (``server.metrics``).
            tracing: a span per event and per step (OpenTelemetry, the ``tracing`` extra); or
                a ``servegraph.monitoring.tracing.Tracing`` to choose the tracer provider.

        Raises:
            GraphError: every problem of the graph, each naming its step.
        """
        from ..testing import MockServer

        return MockServer(
            self.spec,
            engine=engine,
            namespace=namespace if namespace is not None else self.namespace,
            params=params,
            verbose=verbose,
            metrics=metrics,
            tracing=tracing,
        )

    def test(
        self,
        body: Any = None,
        path: str = "/",
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one event through a mock server and return the responder's result.

        The mock server is built on first use and kept until the graph (its spec or namespace)
        changes; use ``mock_server()`` for a server of your own.
        """
        spec = self.spec
        if self._mock is None or self._mock[:2] != (spec, self.namespace):
            if self._mock is not None:
                self._mock[2].close()
            self._mock = (spec, self.namespace, self.mock_server())
        return self._mock[2].test(path, body, method=method, headers=headers)

    # -- internals ------------------------------------------------------------------------

    def _append(self, step: StepSpec) -> StepRef:
        self._steps.append(step)
        return StepRef(self, len(self._steps) - 1)

    def _replace(self, index: int, **changes: Any) -> None:
        self._steps[index] = dataclasses.replace(self._steps[index], **changes)

    def _make_step(self, target: StepTarget, name: str | None, options: dict[str, Any]) -> StepSpec:
        unknown = set(options) - _STEP_OPTIONS
        if unknown:
            allowed = ", ".join(sorted(_STEP_OPTIONS))
            message = f"unknown step option(s) {', '.join(sorted(unknown))}; allowed: {allowed}"
            raise TypeError(message)
        options = dict(options)
        options["class_args"] = dict(options.get("class_args") or {})
        as_step = getattr(target, "as_step", None)
        if as_step is not None and not is_class(target):
            # A built-in step object (servegraph.steps): the spec keeps its class and arguments.
            cls, arguments = as_step()
            options["class_args"] = {**arguments, **options["class_args"]}
            taken = {step.name for step in self._steps}
            name = name or _free_name(getattr(target, "default_name", "step"), taken)
            return StepSpec(name=name, class_name=reference_of(cls), target=cls, **options)
        if isinstance(target, str):
            default = name or _last_part(target)
            if "handler" in options or options["class_args"]:
                return StepSpec(name=default, class_name=target, **options)
            obj = self._try_resolve(target)
            if obj is not None and not is_class(obj):
                return StepSpec(name=default, handler=target, **options)
            return StepSpec(name=default, class_name=target, **options)
        reference = reference_of(target)
        default_name = getattr(target, "__name__", None) or type(target).__name__
        if default_name == "<lambda>":
            default_name = "lambda"
        if is_class(target):
            return StepSpec(
                name=name or default_name, class_name=reference, target=target, **options
            )
        if "handler" in options:
            message = "'handler' names a method of a class step; this step is a function"
            raise TypeError(message)
        return StepSpec(name=name or default_name, handler=reference, target=target, **options)

    def _try_resolve(self, reference: str) -> Any:
        try:
            return resolve(reference, self.namespace)
        except ResolveError:
            return None


_STEP_OPTIONS = frozenset(
    {
        "handler",
        "class_args",
        "full_event",
        "input_path",
        "result_path",
        "responder",
        "on_error",
        "blocking",
    }
)


def _free_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... when steps already have that name."""
    if base not in taken:
        return base
    return next(f"{base}_{n}" for n in itertools.count(2) if f"{base}_{n}" not in taken)


def _router_fields(router: type | str | None, router_args: Mapping[str, Any] | None) -> Any:
    if router is None:
        if router_args:
            message = "router_args need a router class"
            raise TypeError(message)
        return {}
    if isinstance(router, str):
        return {"class_name": router, "class_args": dict(router_args or {})}
    return {
        "class_name": reference_of(router),
        "class_args": dict(router_args or {}),
        "target": router,
    }


def _last_part(reference: str) -> str:
    return reference.replace(":", ".").rsplit(".", 1)[-1]
