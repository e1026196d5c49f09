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


class Counted:
    """A step with a custom counter (labelled with the step's name by the context)."""

    def __init__(self, context: Any = None) -> None:
        self.seen = context.metrics.counter("app_seen_total", "Bodies this step saw.")

    def do(self, body: Any) -> Any:
        self.seen.inc()
        if body.get("fail"):
            message = "asked to fail"
            raise ValueError(message)
        return body if body.get("keep", True) else None


def build_metered() -> Graph:
    """parse -> gate (stops keep=false, fails fail=true) -> last."""
    graph = Graph()
    graph.to(lambda body: body, name="parse").to(Counted, name="gate").to(
        lambda body: body, name="last"
    ).respond()
    return graph
