"""Graphs with queues for the end-to-end tests; ``E2E_STREAM`` names their stream URL."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from servegraph import Graph


def parse(body: dict[str, Any]) -> dict[str, Any]:
    return {"n": int(body["n"])}


def square(body: dict[str, Any]) -> dict[str, Any]:
    return {"n": body["n"], "square": body["n"] ** 2}


async def slow_square(body: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(os.environ.get("E2E_STEP_SLEEP_S", "0")))
    return square(body)


def build() -> Graph:
    """parse -> queue "work" -> square; answers go to ``E2E_STREAM`` + "-out"."""
    url = os.environ["E2E_STREAM"]
    graph = Graph()
    graph.to(parse).to_queue("work", url, output=url + "-out", claim_idle_s=5).to(slow_square)
    return graph
