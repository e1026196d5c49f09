"""Drive a ServingApp in-process: an httpx client over ASGITransport, and a fake lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import httpx

from servegraph import Graph
from servegraph.server.app import ServingApp
from servegraph.settings import Limits, ServerSettings

T = TypeVar("T")
Scenario = Callable[[httpx.AsyncClient, ServingApp], Awaitable[T]]


def make_app(graph: Graph, **settings: Any) -> ServingApp:
    """An app for ``graph``; ``settings`` are ServerSettings fields or Limits fields."""
    limit_names = {"max_body_bytes", "timeout_s", "max_in_flight", "threads"}
    limits = Limits(**{k: v for k, v in settings.items() if k in limit_names})
    rest = {k: v for k, v in settings.items() if k not in limit_names}
    return ServingApp(graph.spec, settings=ServerSettings(limits=limits, **rest))


async def drive(app: ServingApp, scenario: Scenario[T]) -> T:
    """Start ``app``, run ``scenario`` with a client on it, and shut the app down."""
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client, app)
    finally:
        await app.shutdown()


def serve(graph: Graph, scenario: Scenario[T], **settings: Any) -> T:
    """``drive`` an app for ``graph`` in a fresh event loop."""
    return asyncio.run(drive(make_app(graph, **settings), scenario))


def request(graph: Graph, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to a fresh app for ``graph``."""

    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> httpx.Response:
        return await client.request(method, path, **kwargs)

    return serve(graph, scenario)


async def lifespan(app: ServingApp, *kinds: str) -> list[MutableMapping[str, Any]]:
    """Send the lifespan messages ``kinds`` (e.g. ``"startup"``) to ``app``; return its replies."""
    inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    for kind in kinds:
        inbox.put_nowait({"type": f"lifespan.{kind}"})
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return await inbox.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent
