"""Graphs that the HTTP benchmark serves with ``servegraph serve benchmarks.http_targets:...``."""

from __future__ import annotations

from typing import Any

from benchmarks.flow_bench import Linear, Parse, gate, post, scale
from servegraph import Graph
from servegraph.models.server import ModelServer


def w1() -> Graph:
    """W1 over HTTP; its five steps take microseconds, so they are declared non-blocking."""
    graph = Graph()
    step = graph.to(Parse, name="parse", blocking=False)
    for target in (scale, gate, Linear, post):
        step = step.to(target, blocking=False)
    step.respond()
    return graph


def iris_model() -> Any:
    """W2's model: a LogisticRegression trained on iris (max_iter=500)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(features, labels)


def w2() -> Graph:
    """W2: the iris model behind a router, with adaptive batching."""
    graph = Graph.router()
    batching = {"max_batch_size": 32, "max_latency_ms": 2.0}
    class_args = {"model": iris_model(), "batching": batching, "blocking": False}
    graph.add_route("iris", ModelServer, class_args=class_args)
    return graph


def w2_unbatched() -> Graph:
    """W2 without batching (for comparison)."""
    graph = Graph.router()
    graph.add_route("iris", ModelServer, class_args={"model": iris_model(), "blocking": False})
    return graph
