"""Check a graph spec and gather every problem into one GraphError, each naming its step."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import GraphError, Problem
from .resolve import Namespace, ResolveError, resolve
from .segments import segment_problems
from .spec import GraphSpec, StepKind, StepSpec, Topology

DEFAULT_METHODS = ("do_event", "do")
"""Methods called on a class step when no handler is named, in order of preference."""

CONSTRUCTOR_EXTRAS = ("context", "name")
"""Keywords given to a step class's constructor when it accepts them (MLRun's signature)."""


GENERATOR_PROBLEM = "generator steps are not supported: return a value (a list for several results)"


def _is_generator(function: Any) -> bool:
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def check(spec: GraphSpec, namespace: Namespace = None) -> None:
    """Raise GraphError listing every problem of ``spec``; return quietly when there is none."""
    problems = list(find_problems(spec, namespace))
    if problems:
        raise GraphError(problems)


def find_problems(spec: GraphSpec, namespace: Namespace = None) -> Iterator[Problem]:
    """Yield every problem of ``spec``: topology, names, references and arguments."""
    yield from _check_names(spec)
    names = {step.name for step in spec.steps}
    duplicated = len(names) < len(spec.steps)
    if not spec.steps:
        yield Problem(None, "the graph has no steps; add one with graph.to(...)")
    if spec.topology is Topology.ROUTER and (
        len(spec.steps) != 1 or spec.steps[0].kind is not StepKind.ROUTER
    ):
        yield Problem(None, "a router graph holds exactly one router step")
    if spec.on_error is not None and spec.on_error not in names:
        yield Problem(None, f"on_error names an unknown step {spec.on_error!r}")
    responders = [step.name for step in spec.steps if step.responder]
    if len(responders) > 1:
        listed = ", ".join(repr(name) for name in responders)
        yield Problem(None, f"two or more responders in one flow ({listed}); keep one")
    for step in spec.steps:
        for parent in step.after:
            if parent not in names:
                yield Problem(step.name, f"'after' names an unknown step {parent!r}")
            elif parent == step.name and not duplicated:
                yield Problem(step.name, "a step cannot run after itself")
        if step.on_error is not None and step.on_error not in names:
            yield Problem(step.name, f"on_error names an unknown step {step.on_error!r}")
        elif step.on_error == step.name:
            yield Problem(step.name, "a step cannot be its own error handler")
        yield from _check_step(step, namespace)
    yield from _check_cycles(spec)
    if not duplicated:
        yield from segment_problems(spec)


def resolve_step(step: StepSpec, namespace: Namespace) -> Any:
    """Return the class or function a task step runs (its live target, else its import path)."""
    if step.target is not None:
        return step.target
    reference = step.reference
    if reference is None:
        message = "the step runs nothing: give it a function, a class or an import path"
        raise ResolveError(message)
    return resolve(reference, namespace)


def method_name(step: StepSpec, cls: type) -> str:
    """Return the method a class step calls, or raise ResolveError saying what to set."""
    if step.handler is not None:
        if not callable(getattr(cls, step.handler, None)):
            message = f"class {cls.__qualname__} has no method {step.handler!r}"
            raise ResolveError(message)
        return step.handler
    for name in DEFAULT_METHODS:
        if callable(getattr(cls, name, None)):
            return name
    if "__call__" in vars(cls) or any("__call__" in vars(base) for base in cls.__mro__[1:-1]):
        return "__call__"
    message = f"class {cls.__qualname__} has no do() or do_event() method; set handler='method'"
    raise ResolveError(message)


def constructor_arguments(cls: type, class_args: Mapping[str, Any]) -> tuple[str, ...]:
    """Return which of CONSTRUCTOR_EXTRAS the constructor takes; raise TypeError if it rejects
    ``class_args``."""
    signature = inspect.signature(cls)
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    extras = tuple(name for name in CONSTRUCTOR_EXTRAS if name in parameters or takes_any)
    arguments = {name: None for name in extras if name not in class_args}
    signature.bind(**arguments, **class_args)
    return extras


def _check_step(step: StepSpec, namespace: Namespace) -> Iterator[Problem]:
    for field, path in (("input_path", step.input_path), ("result_path", step.result_path)):
        if path is not None and (not path or any(not part for part in path.split("."))):
            yield Problem(step.name, f"{field} {path!r} is not a dotted path like 'a.b'")
    if step.kind is StepKind.QUEUE:
        yield from _check_queue(step)
        return
    if step.stream is not None or step.options:
        yield Problem(step.name, "stream and options are for queue steps (kind 'queue')")
    if step.kind is StepKind.ROUTER:
        yield from _check_router(step, namespace)
        return
    try:
        target = resolve_step(step, namespace)
    except ResolveError as exc:
        yield Problem(step.name, str(exc))
        return
    full_event = step.full_event
    if inspect.isclass(target):
        try:
            name = method_name(step, target)
        except ResolveError as exc:
            yield Problem(step.name, str(exc))
        else:
            full_event = full_event or name == "do_event"
            if _is_generator(getattr(target, name)):
                yield Problem(step.name, GENERATOR_PROBLEM)
        try:
            constructor_arguments(target, step.class_args)
        except TypeError as exc:
            message = (
                f"class {target.__qualname__} rejects class_args {dict(step.class_args)}: {exc}"
            )
            yield Problem(step.name, message)
        except ValueError:
            pass  # builtins without a signature: constructed at compile time, errors reported then
    elif not callable(target):
        yield Problem(step.name, f"{step.reference!r} is not callable")
    elif step.class_args:
        yield Problem(step.name, "class_args are given but the step is a function, not a class")
    elif step.class_name is not None and step.handler is not None:
        message = f"{step.class_name!r} is a function: 'handler' names a method of a class step"
        yield Problem(step.name, message)
    elif _is_generator(target):
        yield Problem(step.name, GENERATOR_PROBLEM)
    if full_event and step.input_path is not None:
        message = "input_path has no effect on a full-event step (it gets the whole event)"
        yield Problem(step.name, message)


def _check_queue(step: StepSpec) -> Iterator[Problem]:
    from ..streams.settings import QueueOptions, StreamURL

    if step.stream is None:
        message = "a queue step needs a stream URL, e.g. stream='redis://127.0.0.1:6379/events'"
        yield Problem(step.name, message)
    else:
        try:
            StreamURL.parse(step.stream)
        except ValueError as exc:
            yield Problem(step.name, str(exc))
    try:
        QueueOptions.parse(step.options)
    except ValueError as exc:
        yield Problem(step.name, str(exc))
    misplaced = [
        option
        for option, value in (
            ("class_name", step.class_name),
            ("handler", step.handler),
            ("class_args", step.class_args),
            ("routes", step.routes),
            ("input_path", step.input_path),
            ("result_path", step.result_path),
            ("full_event", step.full_event),
            ("responder", step.responder),
        )
        if value
    ]
    if misplaced:
        message = f"a queue step cannot set {', '.join(misplaced)}; it only writes to its stream"
        yield Problem(step.name, message)


def _check_router(step: StepSpec, namespace: Namespace) -> Iterator[Problem]:
    if not step.routes:
        yield Problem(step.name, "the router has no routes; add one with add_route()")
    route_names = [route.name for route in step.routes]
    if step.default_route is not None and step.default_route not in route_names:
        message = f"default_route {step.default_route!r} is not one of its routes {route_names}"
        yield Problem(step.name, message)
    for route in step.routes:
        misplaced = [
            option
            for option, value in (
                ("after", route.after),
                ("responder", route.responder),
                ("on_error", route.on_error),
            )
            if value
        ]
        if misplaced:
            message = (
                f"a route cannot set {', '.join(misplaced)}; "
                f"set it on the router {step.name!r} instead"
            )
            yield Problem(route.name, message)
        yield from _check_step(route, namespace)
    if step.reference is None and step.target is None:
        return
    try:
        selector = resolve_step(step, namespace)
    except ResolveError as exc:
        yield Problem(step.name, str(exc))
        return
    if not inspect.isclass(selector) or not callable(getattr(selector, "select", None)):
        message = (
            f"router class {step.reference!r} must be a class with a select(event, routes) method"
        )
        yield Problem(step.name, message)
        return
    try:
        constructor_arguments(selector, step.class_args)
    except TypeError as exc:
        message = f"router class {selector.__qualname__} rejects {dict(step.class_args)}: {exc}"
        yield Problem(step.name, message)


def _check_names(spec: GraphSpec) -> Iterator[Problem]:
    seen: set[str] = set()
    for step in spec.steps:
        for name in (step.name, *(route.name for route in step.routes)):
            if not name:
                yield Problem(None, "a step has an empty name")
            elif name in seen:
                yield Problem(name, "duplicate step name; step names are unique in a graph")
            seen.add(name)


def _check_cycles(spec: GraphSpec) -> Iterator[Problem]:
    parents = {step.name: [p for p in step.after if p != step.name] for step in spec.steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> Iterator[Problem]:
        state[name] = 1
        path.append(name)
        for parent in parents.get(name, ()):
            if state.get(parent) == 1:
                cycle = path[path.index(parent) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    loop = " -> ".join([*reversed(cycle), cycle[-1]])
                    yield Problem(parent, f"the steps form a cycle: {loop}")
            elif parent in parents and state.get(parent) is None:
                yield from visit(parent, path)
        path.pop()
        state[name] = 2

    for step in spec.steps:
        if state.get(step.name) is None:
            yield from visit(step.name, [])
