"""Routers: pick one route for an event (by path, by the body's ``model``, or the default)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import RoutingError, StepError
from ..event import Event

if TYPE_CHECKING:
    from .plan import Node

MODELS_PREFIX = "/v2/models/"


class RouteTable:
    """The routes of one router and how an event selects one.

    Selection, in order: the model name in an Open Inference Protocol path
    (``/v2/models/<name>/...``); the first path segment when it names a route (``/<name>``); the
    ``"model"`` key of a dict body; the default route; the only route.
    """

    __slots__ = ("default", "name", "routes")

    def __init__(self, name: str, routes: Mapping[str, Node], default: str | None) -> None:
        self.name = name
        self.routes = dict(routes)
        if default is None and len(self.routes) == 1:
            default = next(iter(self.routes))
        self.default = default

    def select(self, event: Event) -> Node:
        """Return the route for ``event``; raise RoutingError naming what was asked for."""
        path = event.path
        wanted: str | None = None
        if path.startswith(MODELS_PREFIX):
            wanted = path[len(MODELS_PREFIX) :].split("/", 1)[0] or None
        else:
            first = path.strip("/").split("/", 1)[0]
            if first in self.routes:
                wanted = first
        if wanted is None:
            body = event.body
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                wanted = body["model"]
            else:
                wanted = self.default
        route = self.routes.get(wanted) if wanted is not None else None
        if route is None:
            raise RoutingError(self.name, wanted, list(self.routes))
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
