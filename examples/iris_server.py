"""Serving a scikit-learn model: two versions behind a router, and a voting ensemble.

At start it trains a LogisticRegression on iris three times, with different regularisation
strengths, then sends requests through in-process mock servers and prints each answer (its
status and body) as one JSON line:

* ``build_graph()``: a router over ``iris:v1`` and ``iris:v2`` (an Open Inference Protocol v2
  tensor request, an MLRun-style request, model metadata, the model list, readiness and a
  request whose tensor has the wrong number of values, which is a 400);
* ``build_ensemble()``: a VotingEnsemble over three models, answering their majority vote and
  what each one said.

Run it with ``python examples/iris_server.py``. See docs/models.md.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servegraph import Graph
from servegraph.models.ensemble import VotingEnsemble
from servegraph.models.server import ModelServer
from servegraph.testing import MockServer

SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.3, 3.3, 4.7, 1.6]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]
ROWS = [SETOSA, VERSICOLOR, VIRGINICA]

C_OF_VERSION = {"v1": 1.0, "v2": 0.01, "v3": 0.1}
"""The inverse regularisation strength ``C`` of each model version (v2 is the most regularised)."""

INPUTS = [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
OUTPUTS = [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


@functools.cache
def train(c: float) -> Any:
    """A LogisticRegression fitted on the whole iris data set (deterministic: lbfgs)."""
    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500, C=c).fit(features, labels)


def model_args(version: str) -> dict[str, Any]:
    """The class arguments of the ModelServer that serves one version."""
    return {
        "model": train(C_OF_VERSION[version]),
        "name": "iris",  # the model name in answers; the route name stays "iris:<version>"
        "version": version,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def build_graph() -> Graph:
    """A router over two versions of the iris model; ``/v2/models/infer`` goes to v1."""
    graph = Graph.router(default_route="iris:v1")
    graph.add_route("iris:v1", ModelServer, class_args=model_args("v1"))
    graph.add_route("iris:v2", ModelServer, class_args=model_args("v2"))
    return graph


def build_ensemble() -> Graph:
    """A VotingEnsemble over three versions: the majority label wins, row by row."""
    graph = Graph.router(
        router=VotingEnsemble,
        router_args={"vote_type": "classification", "name": "iris-vote"},
    )
    for version in C_OF_VERSION:
        graph.add_route(version, ModelServer, class_args=model_args(version))
    return graph


def send(
    server: MockServer,
    method: str,
    path: str,
    body: Any = None,
    event_id: str | None = None,
) -> None:
    """Send one request and print its status and body as one JSON line."""
    headers = {"servegraph-event-id": event_id} if event_id else None
    response = server.request(method, path, body, headers=headers)
    line = {"request": f"{method} {path}", "status": response.status, "body": response.body}
    print(json.dumps(line))


def tensor_request(rows: list[list[float]], request_id: str) -> dict[str, Any]:
    """An Open Inference Protocol v2 request holding ``rows`` as one FP32 tensor."""
    tensor = {"name": "input-0", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}
    return {"id": request_id, "inputs": [tensor]}


def main() -> None:
    """Send a few requests to each graph and print the answers."""
    with build_graph().mock_server() as server:
        send(server, "POST", "/v2/models/iris/versions/v2/infer", tensor_request(ROWS, "req-1"))
        send(server, "POST", "/v2/models/iris/versions/v1/infer", {"inputs": ROWS}, "req-2")
        send(server, "GET", "/v2/models/iris/versions/v1")
        send(server, "GET", "/v2/models")
        send(server, "GET", "/v2/health/ready")
        # The shape announces two rows (8 values) but the data holds one row: a 400.
        wrong = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": SETOSA}
        send(server, "POST", "/v2/models/iris/versions/v1/infer", {"inputs": [wrong]})
    with build_ensemble().mock_server() as server:
        send(server, "POST", "/v2/models/infer", {"inputs": ROWS}, "req-4")


if __name__ == "__main__":
    main()
