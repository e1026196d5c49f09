"""Wrap user functions and classes into the two call shapes the runner knows.

A *body* call takes the event body and returns the new body (None stops the event): plain
functions and ``do(self, body)`` methods run with no wrapper at all. An *event* call takes the
Event and returns the Event to continue with (or None): full-event steps, ``do_event`` methods
and steps with ``input_path`` / ``result_path`` get such a wrapper, chosen once at compile time.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..context import Context
from ..errors import GraphError, Problem
from ..event import Event
from ..graph.resolve import Namespace, ResolveError
from ..graph.spec import StepSpec
from ..graph.validate import constructor_arguments, method_name, resolve_step
from .paths import get_path, set_path
from .routing import PathSelector, RouteSelector


@dataclass(frozen=True, slots=True)
class Callee:
    """A step's compiled call: its shape, whether it must be awaited, and the object behind it."""

    call: Callable[[Any], Any]
    takes_body: bool
    is_async: bool
    instance: object | None


def build_callee(
    step: StepSpec, namespace: Namespace, context: Context, *, stop_on_none: bool = True
) -> Callee:
    """Resolve, instantiate and wrap a task step; raise GraphError naming the step on failure.

    With ``stop_on_none`` false, a None result becomes the body instead of stopping the event.
    """
    try:
        target = resolve_step(step, namespace)
        instance: object | None = None
        if inspect.isclass(target):
            method = method_name(step, target)
            instance = _instantiate(target, step, context)
            function = getattr(instance, method)
            # Filters stop events even where None is passed on (MLRun's stop_on_none=False).
            stop_on_none = stop_on_none or getattr(instance, "stops_on_none", False) is True
            full_event = step.full_event or method == "do_event"
        else:
            function = target
            full_event = step.full_event
    except ResolveError as exc:
        raise GraphError([Problem(step.name, str(exc))]) from exc
    is_async = _is_async(function)
    plain = not full_event and step.input_path is None and step.result_path is None
    if plain and stop_on_none:
        return Callee(function, takes_body=True, is_async=is_async, instance=instance)
    if full_event and step.result_path is None and not is_async:
        return Callee(_full_event(function, stop_on_none), False, is_async, instance)
    wrap = _wrap_async if is_async else _wrap_sync
    return Callee(wrap(function, step, full_event, stop_on_none), False, is_async, instance)


def in_executor(call: Callable[[Any], Any], executor: Executor) -> Callable[[Any], Awaitable[Any]]:
    """``call`` run in ``executor`` from the event loop (for blocking sync steps in servers)."""

    async def offloaded(argument: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, call, argument)

    return offloaded


def _full_event(
    function: Callable[[Event], Any], stop_on_none: bool
) -> Callable[[Event], Event | None]:
    """The lean wrapper of the common full-event step: an Event back, or a new body."""

    def call(event: Event) -> Event | None:
        result = function(event)
        if result.__class__ is Event:
            return result
        if result is None and stop_on_none:
            return None
        if isinstance(result, Event):
            return result
        event.body = result
        return event

    return call


def build_selector(step: StepSpec, namespace: Namespace, context: Context) -> RouteSelector:
    """Return a router step's route selector: its class's instance, else the path selector."""
    if step.reference is None and step.target is None:
        return PathSelector(step.default_route)
    try:
        cls = resolve_step(step, namespace)
    except ResolveError as exc:
        raise GraphError([Problem(step.name, str(exc))]) from exc
    selector: RouteSelector = _instantiate(cls, step, context)  # type: ignore[assignment]
    return selector


def _instantiate(cls: type, step: StepSpec, context: Context) -> object:
    try:
        extras = constructor_arguments(cls, step.class_args)
    except TypeError as exc:
        message = f"class {cls.__qualname__} rejects class_args {dict(step.class_args)}: {exc}"
        raise GraphError([Problem(step.name, message)]) from exc
    except ValueError:
        extras = ()
    arguments: dict[str, Any] = dict(step.class_args)
    if "context" in extras:
        arguments.setdefault("context", context.for_step(step.name))
    if "name" in extras:
        arguments.setdefault("name", step.name)
    try:
        instance = cls(**arguments)
        post_init = getattr(instance, "post_init", None)
        if callable(post_init):
            _call_post_init(post_init)
    except GraphError as exc:
        # A step that checks its own arguments (the built-ins) says what is wrong already.
        problems = [Problem(problem.step or step.name, problem.message) for problem in exc.problems]
        raise GraphError(problems) from exc
    except Exception as exc:
        message = f"constructing {cls.__qualname__} failed: {type(exc).__name__}: {exc}"
        raise GraphError([Problem(step.name, message)]) from exc
    return instance


def _call_post_init(post_init: Callable[..., Any]) -> None:
    # MLRun calls post_init(mode); servegraph's own classes take no argument.
    parameters = inspect.signature(post_init).parameters
    if "mode" in parameters:
        post_init(mode="sync")
    else:
        post_init()


def _is_async(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return inspect.iscoroutinefunction(call)


def _wrap_sync(
    function: Callable[[Any], Any], step: StepSpec, full_event: bool, stop_on_none: bool
) -> Callable[[Event], Event | None]:
    name = step.name
    input_keys = tuple(step.input_path.split(".")) if step.input_path else None
    result_keys = tuple(step.result_path.split(".")) if step.result_path else None

    def call(event: Event) -> Event | None:
        if full_event:
            argument: Any = event
        elif input_keys is not None:
            argument = get_path(event.body, input_keys, name)
        else:
            argument = event.body
        return _place(event, function(argument), result_keys, full_event, stop_on_none, name)

    return call


def _wrap_async(
    function: Callable[[Any], Awaitable[Any]], step: StepSpec, full_event: bool, stop_on_none: bool
) -> Callable[[Event], Awaitable[Event | None]]:
    name = step.name
    input_keys = tuple(step.input_path.split(".")) if step.input_path else None
    result_keys = tuple(step.result_path.split(".")) if step.result_path else None

    async def call(event: Event) -> Event | None:
        if full_event:
            argument: Any = event
        elif input_keys is not None:
            argument = get_path(event.body, input_keys, name)
        else:
            argument = event.body
        result = await function(argument)
        return _place(event, result, result_keys, full_event, stop_on_none, name)

    return call


def _place(
    event: Event,
    result: Any,
    result_keys: tuple[str, ...] | None,
    full_event: bool,
    stop_on_none: bool,
    step: str,
) -> Event | None:
    """Put a step's result where it belongs and return the event to continue with."""
    if full_event and isinstance(result, Event):
        return result
    if result_keys is not None:
        set_path(event.body, result_keys, result, step)
        return event
    if result is None and stop_on_none:
        return None
    event.body = result
    return event
