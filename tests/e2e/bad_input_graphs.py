"""Graphs the bad-input end-to-end tests serve (imported by the server as ``module:attribute``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from servegraph import Graph

HANG_S = 30.0
"""How long a hung step sleeps: far past any test's time limit."""


def total(body: dict[str, Any]) -> dict[str, Any]:
    """Adds ``a`` and ``b``: it needs a JSON object, so text or bytes make it fail."""
    return {"total": body["a"] + body["b"]}


def build_total() -> Graph:
    """One step, ``total``, that needs a dict."""
    graph = Graph()
    graph.to(total, name="total").respond()
    return graph


async def half_second(body: Any) -> Any:
    """Sleeps half a second without blocking the loop (an async step)."""
    await asyncio.sleep(0.5)
    return {"slept": body}


def build_half_second() -> Graph:
    """One async step that takes half a second."""
    graph = Graph()
    graph.to(half_second, name="half_second").respond()
    return graph


def hang(body: Any) -> Any:
    """Blocks its thread for HANG_S seconds, unless the body says ``"quick"``."""
    if body != "quick":
        time.sleep(HANG_S)
    return {"answered": body}


def build_hang() -> Graph:
    """One blocking sync step (it runs in the server's thread pool) that hangs on request."""
    graph = Graph()
    graph.to(hang, name="hang", blocking=True).respond()
    return graph


async def hang_async(body: Any) -> Any:
    """Awaits for HANG_S seconds, unless the body says ``"quick"`` (an async step)."""
    if body != "quick":
        await asyncio.sleep(HANG_S)
    return {"answered": body}


def build_hang_async() -> Graph:
    """One async step that hangs on request."""
    graph = Graph()
    graph.to(hang_async, name="hang").respond()
    return graph
