"""Translate MLRun graph dicts (``function.spec.graph.to_dict()``) into servegraph specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ... import errors
from ...errors import Problem
from ...graph.builder import Graph, StepRef, StepTarget
from ...graph.resolve import Namespace, ResolveError, reference_of, resolve
from ...graph.spec import EngineKind, GraphSpec, StepKind, StepSpec, Topology
from . import storey
from .errors import GraphError, MLRunInvalidArgumentError
from .queues import IGNORED_QUEUE_KEYS, PLATFORM_KEYS, QUEUE_CLASS_NAMES, QUEUE_KEYS, queue_step

# Keys MLRun writes that change nothing in-process (deployment, endpoints, monitoring, cycles).
IGNORED_GRAPH_KEYS = frozenset(
    {
        "allow_cyclic",
        "max_iterations",
        "track_models",
        "model_endpoints_names",
        "model_endpoints_routes_names",
        "shared_models",
        "shared_models_mechanism",
        "shared_runnable_name",
        "pool_factor",
        "final_step",
        "default_final_step",
        "name",
        "comment",
        "model_endpoint_creation_strategy",
        "endpoint_type",
        "function",
        "shape",
        "after",
    }
)
IGNORED_STEP_KEYS = frozenset(
    {
        "comment",
        "function",
        "shape",
        "skip_context",
        "model_endpoint_creation_strategy",
        "endpoint_type",
        "max_iterations",
        "cycle_from",
        "name",
        "base_step",
    }
)
STEP_KEYS = frozenset(
    {
        "kind",
        "class_name",
        "class_args",
        "handler",
        "after",
        "before",
        "responder",
        "full_event",
        "input_path",
        "result_path",
        "on_error",
        "routes",
    }
)
MLRUN_ROUTERS = frozenset(
    {"", "ModelRouter", "mlrun.serving.ModelRouter", "mlrun.serving.routers.ModelRouter"}
)
ROUTER_CLASS = "servegraph.compat.mlrun.steps:ModelRouter"
LAMBDA_CLASS = "servegraph.compat.mlrun.steps:Lambda"
ERROR_HANDLER_CLASS = "servegraph.compat.mlrun.steps:ErrorHandler"
MLRUN_STEP_CLASS = "servegraph.compat.mlrun.steps:MLRunStep"
SOON = {
    "flow": "nested flow steps are not supported; flatten the flow",
}


class MLRunGraph(Graph):
    """A graph loaded from an MLRun dict; its mock server answers the way MLRun's does."""

    mlrun_engine: str = "async"

    def mock_server(
        self,
        *,
        namespace: Namespace = None,
        params: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        """Return an MLRunMockServer (``current_function`` and other MLRun keywords ignored)."""
        from .mock import MLRunMockServer

        return MLRunMockServer(
            self.spec,
            namespace=namespace if namespace is not None else self.namespace,
            params=params,
            mlrun_engine=self.mlrun_engine,
        )

    def add_step(
        self,
        target: StepTarget,
        name: str | None = None,
        *,
        after: str | Iterable[str] | None = None,
        **options: Any,
    ) -> StepRef:
        """Add a step; ``">>"`` or ``"$queue"`` as the target adds a queue step, as in MLRun.

        ``to(">>", "q1", path=...)`` takes MLRun's queue arguments: ``path`` (required, may be
        None), ``shards``, ``retention_in_hours`` and ``trigger_args`` (ignored), and options
        (servegraph's queue options; ``full_event`` is ignored). ``function``, which MLRun
        requires on the steps after a queue, is accepted and ignored: those steps run in the
        queue's segment.

        Raises:
            MLRunInvalidArgumentError: a queue without a name or without ``path``.
            GraphError: a path servegraph has no stream for (Kafka), or unknown options.
        """
        options.pop("function", None)
        if not (isinstance(target, str) and target in QUEUE_CLASS_NAMES):
            return super().add_step(target, name, after=after, **options)
        if not name:
            message = "queue name must be specified"
            raise MLRunInvalidArgumentError(message)
        if "path" not in options:
            message = "path=<stream path or None> must be specified for queues"
            raise MLRunInvalidArgumentError(message)
        data: dict[str, Any] = {key: options.pop(key, None) for key in ("path", *PLATFORM_KEYS)}
        step, problems = queue_step(name, {**data, "options": options})
        if problems:
            raise GraphError([Problem(name, problem) for problem in problems])
        if self.engine is EngineKind.SYNC:
            self.engine = EngineKind.ASYNC  # queue steps are async; mlrun_engine keeps the rules
        return self.add_queue(name, step.stream or "", after=after, **step.options)


def load(
    graph: Mapping[str, Any],
    *,
    namespace: Namespace = None,
    params: Mapping[str, Any] | None = None,
    streams: Mapping[str, str] | None = None,
) -> MLRunGraph:
    """Return the graph an MLRun graph dict describes, ready to run with the same results.

    Args:
        graph: what ``function.spec.graph.to_dict()`` returns (flow or router topology).
        namespace: module(s) or mapping(s) where bare class and handler names are looked up,
            like ``to_mock_server(namespace=...)``.
        params: the function parameters that ``context.get_param`` returns.
        streams: stream URLs by queue step name, over what the queues' MLRun paths map to
            (``{"q1": "redis://127.0.0.1:6379/q1"}``): a queue whose path is a v3io path or a
            bare name runs on ``memory://`` (in one process), and Kafka is not supported.

    Raises:
        GraphError: every problem of the graph, each naming its step.
    """
    translator = _Translator(namespace, dict(streams or {}))
    spec = translator.graph(graph, dict(params or {}))
    queues = {step.name for step in spec.steps if step.kind is StepKind.QUEUE}
    for name in translator.streams:
        if name not in queues:
            translator.problems.append(Problem(None, f"streams= names no queue step {name!r}"))
    if translator.problems:
        raise GraphError(translator.problems)
    result = MLRunGraph.from_spec(spec, namespace=namespace)
    result.mlrun_engine = str(graph.get("engine") or "async")
    try:
        result.validate()
    except errors.GraphError as exc:
        raise GraphError(exc.problems) from None
    return result


class _Translator:
    def __init__(self, namespace: Namespace, streams: dict[str, str]) -> None:
        self.namespace = namespace
        self.streams = streams
        self.problems: list[Problem] = []

    def graph(self, data: Mapping[str, Any], params: dict[str, Any]) -> GraphSpec:
        kind = data.get("kind") or "flow"
        if kind == "router":
            router = self.step("router", {**data, "kind": "router"}, set())
            return GraphSpec(
                topology=Topology.ROUTER, steps=(router,), params=params, stop_on_none=False
            )
        if kind not in ("flow", "root"):
            self.problems.append(Problem(None, f"unknown graph kind {kind!r}; use flow or router"))
        self._check_keys(data, {"kind", "steps", "engine", "on_error"}, IGNORED_GRAPH_KEYS, None)
        engine = str(data.get("engine") or "async")
        raw_steps: Mapping[str, Any] = data.get("steps") or {}
        handlers = {str(s.get("on_error")) for s in raw_steps.values() if s.get("on_error")}
        handlers |= {name for name, s in raw_steps.items() if s.get("kind") == "error_step"}
        if data.get("on_error"):
            handlers.add(str(data["on_error"]))
        steps = {name: self.step(name, body, handlers) for name, body in raw_steps.items()}
        for name, body in raw_steps.items():
            for later in body.get("before") or ():
                if later in steps:
                    step = steps[later]
                    steps[later] = dataclasses.replace(step, after=(*step.after, name))
                else:
                    self.problems.append(Problem(name, f"'before' names an unknown step {later!r}"))
        if engine == "sync":
            steps = self._as_sync(steps, handlers)
        elif engine != "async":
            self.problems.append(Problem(None, f"engine {engine!r} is not 'sync' or 'async'"))
        # servegraph's queue steps are asynchronous: a sync MLRun graph with queues runs on the
        # async engine, with the sync engine's rules (one chain, the last step answers).
        queues = any(step.kind is StepKind.QUEUE for step in steps.values())
        return GraphSpec(
            topology=Topology.FLOW,
            steps=tuple(steps.values()),
            on_error=data.get("on_error"),
            engine=EngineKind.SYNC if engine == "sync" and not queues else EngineKind.ASYNC,
            params=params,
            stop_on_none=False,
        )

    def step(self, name: str, data: Mapping[str, Any], handlers: set[str]) -> StepSpec:
        kind = data.get("kind") or "task"
        if kind in SOON:
            self.problems.append(Problem(name, SOON[kind]))
            return StepSpec(name=name, handler="builtins:repr")
        if kind == "queue":
            self._check_keys(data, QUEUE_KEYS, IGNORED_QUEUE_KEYS, name)
            step, problems = queue_step(name, data, stream=self.streams.get(name))
            self.problems.extend(Problem(name, problem) for problem in problems)
            return step
        self._check_keys(data, STEP_KEYS, IGNORED_STEP_KEYS, name)
        base = StepSpec(
            name=name,
            after=tuple(data.get("after") or ()),
            responder=bool(data.get("responder")),
            on_error=data.get("on_error"),
        )
        if kind == "router":
            return self._router(base, data, handlers)
        if kind not in ("task", "error_step"):
            self.problems.append(Problem(name, f"unknown step kind {kind!r}"))
        class_name = data.get("class_name") or None
        handler = data.get("handler") or None
        class_args = dict(data.get("class_args") or {})
        full_event = bool(data.get("full_event"))
        if name in handlers:
            # MLRun error steps see the failed event in MLRun's shape (error, origin_state).
            target = self._reference(name, class_name or handler)
            args = {"target": target, "full_event": full_event, "class_args": class_args}
            if class_name and handler:
                args["method"] = handler
            return dataclasses.replace(base, class_name=ERROR_HANDLER_CLASS, class_args=args)
        paths = dataclasses.replace(  # MLRun ignores input_path on full-event steps
            base,
            input_path=None if full_event else data.get("input_path"),
            result_path=data.get("result_path"),
        )
        if class_name is None and isinstance(handler, str) and _is_lambda(handler):
            return dataclasses.replace(
                paths, class_name=LAMBDA_CLASS, class_args={"expression": handler}
            )
        if class_name is not None and storey.is_builtin(class_name):
            # storey's and MLRun's own classes become servegraph's built-in steps.
            step, problems = storey.builtin_step(
                paths,
                class_name,
                class_args,
                full_event=full_event,
                handler=handler,
                namespace=self.namespace,
            )
            self.problems.extend(Problem(name, problem) for problem in problems)
            return step
        input_path = None if full_event else data.get("input_path")
        if input_path or any(key.startswith("_") for key in class_args):
            # MLRun rules servegraph does not share: functions in class_args, lenient paths.
            args = {
                "target": self._reference(name, class_name or handler),
                "class_args": class_args,
                "full_event": full_event,
                "input_path": input_path,
            }
            if class_name and handler:
                args["method"] = handler
            return dataclasses.replace(
                paths, class_name=MLRUN_STEP_CLASS, class_args=args, input_path=None
            )
        if class_name is not None:
            return dataclasses.replace(
                paths,
                class_name=self._reference(name, class_name),
                handler=handler,
                class_args=class_args,
                full_event=full_event,
            )
        return dataclasses.replace(
            paths,
            handler=self._reference(name, handler),
            class_args=class_args,
            full_event=full_event,
        )

    def _router(self, base: StepSpec, data: Mapping[str, Any], handlers: set[str]) -> StepSpec:
        class_name = data.get("class_name") or ""
        if class_name not in MLRUN_ROUTERS:
            message = f"router class {class_name} is not available in servegraph.compat.mlrun yet"
            self.problems.append(Problem(base.name, message))
        raw_routes: Mapping[str, Any] = data.get("routes") or {}
        for route, body in raw_routes.items():
            if body.get("kind") == "queue":
                self.problems.append(Problem(route, "a queue step cannot be a route"))
        routes = tuple(
            self.step(route, body, handlers)
            for route, body in raw_routes.items()
            if body.get("kind") != "queue"
        )
        return dataclasses.replace(
            base,
            kind=StepKind.ROUTER,
            class_name=ROUTER_CLASS,
            class_args=dict(data.get("class_args") or {}),
            routes=routes,
        )

    def _as_sync(self, steps: dict[str, StepSpec], handlers: set[str]) -> dict[str, StepSpec]:
        """MLRun's sync engine: one chain, no branches; its answer is the last step's body."""
        children: dict[str, list[str]] = {name: [] for name in steps}
        for step in steps.values():
            if len(step.after) > 1:
                message = (
                    "synchronous flow engine doesnt support branches use async "
                    f"for step {step.name}"
                )
                self.problems.append(Problem(step.name, message))
            for parent in step.after:
                children.setdefault(parent, []).append(step.name)
        for parent, kids in children.items():
            if len(kids) > 1 and parent in steps:
                message = (
                    f"synchronous flow engine doesnt support branches use async, step={parent}"
                )
                self.problems.append(Problem(parent, message))
        starts = [s for s in steps.values() if not s.after and s.name not in handlers]
        if len(starts) > 1:
            names = ", ".join(s.name for s in starts)
            message = f"sync engine can only have one starting step (found {names})"
            self.problems.append(Problem(None, message))
        return {name: dataclasses.replace(step, responder=False) for name, step in steps.items()}

    def _reference(self, step: str, reference: str | None) -> str:
        """Turn a bare name into a full import path through the namespace, when it resolves."""
        if reference is None:
            self.problems.append(Problem(step, "the step has neither class_name nor handler"))
            return "builtins:repr"
        if "." in reference or ":" in reference or self.namespace is None:
            return reference
        try:
            obj = resolve(reference, self.namespace)
        except ResolveError:
            return reference
        return reference_of(obj) or reference

    def _check_keys(
        self,
        data: Mapping[str, Any],
        known: frozenset[str] | set[str],
        ignored: frozenset[str],
        step: str | None,
    ) -> None:
        unknown = sorted(str(key) for key in data if key not in known and key not in ignored)
        if unknown:
            allowed = ", ".join(sorted(known))
            message = f"unknown MLRun key(s) {', '.join(unknown)}; understood: {allowed}"
            self.problems.append(Problem(step, message))


def _is_lambda(handler: str) -> bool:
    return handler.startswith("(") and handler.endswith(")")
