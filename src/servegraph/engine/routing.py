"""Routers: pick one route for an event (by path, by the body's ``model``, or the default)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RoutingError, StepError
from ..event import Event

if TYPE_CHECKING:
    from .plan import Node

MODELS_PREFIX = "/v2/models/"
OPERATIONS = frozenset({"infer", "explain", "ready"})
PATH_CACHE_SIZE = 4096


class RouteSelector(Protocol):
    """What a router class provides: the name of the route an event goes to (None: none)."""

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """Return the route name for ``event`` among ``routes``."""
        ...


class RouteCombiner(Protocol):
    """A router class that runs several routes per event (an ensemble) and combines them."""

    def select(self, event: Event, routes: Sequence[str]) -> Sequence[str]:
        """Return the names of the routes to run for ``event``."""
        ...

    def combine(self, event: Event, answers: dict[str, Any]) -> Any:
        """Return the router's answer from each route's answer (in the order selected)."""
        ...


class PathSelector:
    """The default route selection, in order: the model in an Open Inference Protocol path
    (``/v2/models/<name>[/versions/<v>]/...``; a version's route is named ``name:v``, and a
    model asked for by name alone is its only version); the first path segment when it names a
    route (``/<name>``); the ``"model"`` key of a dict body; the default route; the only route.
    ``/v2/models/infer`` names no model and goes to the default.
    """

    def __init__(self, default: str | None = None) -> None:
        self.default = default

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """Return the route name for ``event`` among ``routes``."""
        named = self._named_by(event.path, routes)
        if named is not None:
            return named
        body = event.body
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return str(body["model"])
        if self.default is not None:
            return self.default
        return routes[0] if len(routes) == 1 else None

    @staticmethod
    def _named_by(path: str, routes: Sequence[str]) -> str | None:
        """The route a path names, or None when the path names none."""
        if path.startswith(MODELS_PREFIX):
            parts = path[len(MODELS_PREFIX) :].split("/")
            if len(parts) >= 3 and parts[1] == "versions":
                return f"{parts[0]}:{parts[2]}"
            name = parts[0]
            if name and not (len(parts) == 1 and name in OPERATIONS):
                return name if name in routes else _only_version(name, routes)
            return None
        first = path.strip("/").split("/", 1)[0]
        return first if first in routes else None


def _only_version(name: str, routes: Sequence[str]) -> str:
    versions = [route for route in routes if route.startswith(name + ":")]
    return versions[0] if len(versions) == 1 else name


class RouteTable:
    """The routes of one router and the selector that picks one (or several) per event."""

    __slots__ = ("by_path", "combine", "name", "names", "routes", "selector")

    def __init__(
        self, name: str, routes: Mapping[str, Node], selector: RouteSelector | RouteCombiner
    ) -> None:
        self.name = name
        self.routes = dict(routes)
        self.names = tuple(self.routes)
        self.selector = selector
        # With the path selection, a path that names a route always names that route: the
        # route is remembered by path (paths repeat), so most events skip the selector.
        by_path = type(selector).select is PathSelector.select
        self.by_path: dict[str, Node] | None = {} if by_path else None
        combine = getattr(selector, "combine", None)
        self.combine: Callable[[Event, dict[str, Any]], Any] | None = (
            combine if callable(combine) else None
        )

    def select(self, event: Event) -> Node:
        """Return the route for ``event``; raise RoutingError naming what was asked for."""
        by_path = self.by_path
        if by_path is not None:
            route = by_path.get(event.path)
            if route is not None:
                return route
        wanted = self.selector.select(event, self.names)
        route = self.routes.get(wanted) if isinstance(wanted, str) else None
        if route is None:
            raise RoutingError(self.name, wanted if isinstance(wanted, str) else None, self.names)
        if (
            by_path is not None
            and len(by_path) < PATH_CACHE_SIZE
            and PathSelector._named_by(event.path, self.names) == wanted
        ):
            by_path[event.path] = route
        return route

    def select_many(self, event: Event) -> list[Node]:
        """Return the routes an ensemble runs for ``event``."""
        wanted = self.selector.select(event, self.names)
        names = [wanted] if isinstance(wanted, str) else list(wanted or ())
        if not names:
            raise RoutingError(self.name, None, self.names)
        for name in names:
            if name not in self.routes:
                raise RoutingError(self.name, name, self.names)
        return [self.routes[name] for name in names]


def make_router_call(table: RouteTable, is_async: bool) -> Callable[[Event], Any]:
    """Return the event call of a router node: select a route (or, for an ensemble, several),
    run it, name the route on failure."""
    if table.combine is not None:
        return _async_ensemble(table) if is_async else _sync_ensemble(table)
    return _async_router(table) if is_async else _sync_router(table)


def _sync_router(table: RouteTable) -> Callable[[Event], Event | None]:
    def call(event: Event) -> Event | None:
        return _run_route(table.select(event), event)

    return call


def _run_route(route: Node, event: Event) -> Event | None:
    try:
        if not route.takes_body:
            result: Event | None = route.call(event)
            return result
        body = route.call(event.body)
    except Exception as exc:
        raise StepError(route.name, event.id, exc) from exc
    if body is None:
        return None
    event.body = body
    return event


async def _run_route_async(route: Node, event: Event) -> Event | None:
    try:
        if route.takes_body:
            pending = route.call(event.body)
            body = await pending if route.is_async else pending
        else:
            pending = route.call(event)
            result: Event | None = await pending if route.is_async else pending
            return result
    except Exception as exc:
        raise StepError(route.name, event.id, exc) from exc
    if body is None:
        return None
    event.body = body
    return event


def _async_router(table: RouteTable) -> Callable[[Event], Awaitable[Event | None]]:
    async def call(event: Event) -> Event | None:
        return await _run_route_async(table.select(event), event)

    return call


def _sync_ensemble(table: RouteTable) -> Callable[[Event], Event | None]:
    combine = table.combine
    assert combine is not None

    def call(event: Event) -> Event | None:
        routes = table.select_many(event)
        answers: dict[str, Any] = {}
        for route, copy in zip(routes, _copies(event, len(routes)), strict=True):
            reached = _run_route(route, copy)
            answers[route.name] = None if reached is None else reached.body
        event.body = combine(event, answers)
        return event

    return call


def _async_ensemble(table: RouteTable) -> Callable[[Event], Awaitable[Event | None]]:
    combine = table.combine
    assert combine is not None

    async def call(event: Event) -> Event | None:
        routes = table.select_many(event)
        copies = _copies(event, len(routes))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(_run_route_async(route, copy))
                    for route, copy in zip(routes, copies, strict=True)
                ]
        except BaseExceptionGroup as group_error:
            first = group_error.exceptions[0]
            raise first from first.__cause__
        answers: dict[str, Any] = {}
        for route, task in zip(routes, tasks, strict=True):
            reached = task.result()
            answers[route.name] = None if reached is None else reached.body
        event.body = combine(event, answers)
        return event

    return call


def _copies(event: Event, count: int) -> list[Event]:
    # Every route of an ensemble reads the same request: each gets its own copy of the body.
    return [event, *(event.branch() for _ in range(count - 1))]
