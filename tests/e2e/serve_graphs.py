"""Graphs the end-to-end tests serve (imported by the server process as ``module:attribute``)."""

from __future__ import annotations

import time
from typing import Any

from servegraph import Graph
from servegraph.models.server import ModelServer


class Doubler(ModelServer):
    """Doubles every input value."""

    def predict(self, request: dict[str, Any]) -> list[list[float]]:
        return [[2 * value for value in row] for row in request["inputs"]]


def build_models() -> Graph:
    """A router with one model, ``doubler``."""
    graph = Graph.router()
    graph.add_route("doubler", Doubler)
    return graph


def nap(body: Any) -> Any:
    """Sleeps one second (a blocking sync step: it runs in the server's thread pool)."""
    time.sleep(1.0)
    return {"slept": body}


def build_slow() -> Graph:
    """One step that takes a second to answer."""
    graph = Graph()
    graph.to(nap, blocking=True).respond()
    return graph
