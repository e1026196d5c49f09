"""Routers: pick one route for an event (by path, by the body's ``model``, or the default)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RoutingError, StepError
from ..event import Event

if TYPE_CHECKING:
    from .plan import Node

MODELS_PREFIX = "/v2/models/"


class RouteSelector(Protocol):
    """What a router class provides: the name of the route an event goes to (None: none)."""

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """Return the route name for ``event`` among ``routes``."""
        ...


class PathSelector:
    """The default route selection, in order: the model in an Open Inference Protocol path
    (``/v2/models/<name>[/versions/<v>]/...``, version routes are named ``name:v``); the first
    path segment when it names a route (``/<name>``); the ``"model"`` key of a dict body; the
    default route; the only route.
    """

    def __init__(self, default: str | None = None) -> None:
        self.default = default

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """Return the route name for ``event`` among ``routes``."""
        path = event.path
        if path.startswith(MODELS_PREFIX):
            parts = path[len(MODELS_PREFIX) :].split("/")
            if len(parts) >= 3 and parts[1] == "versions":
                return f"{parts[0]}:{parts[2]}"
            if parts[0]:
                return parts[0]
        else:
            first = path.strip("/").split("/", 1)[0]
            if first in routes:
                return first
        body = event.body
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return str(body["model"])
        if self.default is not None:
            return self.default
        return routes[0] if len(routes) == 1 else None


class RouteTable:
    """The routes of one router and the selector that picks one per event."""

    __slots__ = ("name", "names", "routes", "selector")

    def __init__(self, name: str, routes: Mapping[str, Node], selector: RouteSelector) -> None:
        self.name = name
        self.routes = dict(routes)
        self.names = tuple(self.routes)
        self.selector = selector

    def select(self, event: Event) -> Node:
        """Return the route for ``event``; raise RoutingError naming what was asked for."""
        wanted = self.selector.select(event, self.names)
        route = self.routes.get(wanted) if wanted is not None else None
        if route is None:
            raise RoutingError(self.name, wanted, self.names)
        return route


def make_router_call(table: RouteTable, is_async: bool) -> Callable[[Event], Any]:
    """Return the event call of a router node: select a route, run it, name it on failure."""
    if is_async:
        return _async_router(table)
    return _sync_router(table)


def _sync_router(table: RouteTable) -> Callable[[Event], Event | None]:
    def call(event: Event) -> Event | None:
        route = table.select(event)
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

    return call


def _async_router(table: RouteTable) -> Callable[[Event], Awaitable[Event | None]]:
    async def call(event: Event) -> Event | None:
        route = table.select(event)
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

    return call
