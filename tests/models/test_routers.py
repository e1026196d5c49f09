"""Model routers: versions, defaults, ensembles, traffic split, switch, routers in flows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from servegraph import Graph, GraphError
from servegraph.models.ensemble import ParallelRun, VotingEnsemble
from servegraph.models.router import ModelRouter, Switch, TrafficSplit
from servegraph.models.server import ModelServer
from tests.models import models_steps
from tests.models.conftest import SETOSA, VIRGINICA, oip


def labels(*pairs: tuple[str, Any], **router: Any) -> Graph:
    graph = Graph.router(**router)
    for name, label in pairs:
        graph.add_route(name, models_steps.Label, class_args={"label": label})
    return graph


@pytest.fixture(params=["sync", "async"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_route_by_name_and_version(engine: str) -> None:
    graph = labels(("m:v1", "one"), ("m:v2", "two"), ("solo:v1", "solo"))
    server = graph.mock_server(engine=engine)
    answer = server.test("/v2/models/m/versions/v2/infer", {"inputs": [[1]]})
    assert answer["outputs"] == ["two"]
    assert server.test("/v2/models/solo/infer", {"inputs": [[1]]})["outputs"] == ["solo"]
    response = server.request("POST", "/v2/models/m/infer", {"inputs": [[1]]})
    assert response.status == 404
    assert "known routes: m:v1, m:v2, solo:v1" in response.body["error"]


def test_model_infer_path_without_a_name_goes_to_the_default(engine: str) -> None:
    graph = labels(("a", "A"), ("b", "B"), default_route="b")
    server = graph.mock_server(engine=engine)
    assert server.test("/v2/models/infer", {"inputs": [[1]]})["outputs"] == ["B"]
    assert server.test("/", {"model": "a", "inputs": [[1]]})["outputs"] == ["A"]


def test_model_router_class_is_the_default_router(engine: str) -> None:
    graph = labels(("a", "A"), ("b", "B"), router=ModelRouter, router_args={"default": "a"})
    assert graph.mock_server(engine=engine).test("/", {"inputs": [[1]]})["outputs"] == ["A"]


def test_voting_classification_by_majority_with_per_model_outputs(engine: str) -> None:
    graph = Graph.router(router=VotingEnsemble, router_args={"vote_type": "classification"})
    for name, label in (("m1", "cat"), ("m2", "dog"), ("m3", "dog")):
        graph.add_route(name, models_steps.Label, class_args={"label": label})
    answer = graph.mock_server(engine=engine).test("/", {"inputs": [[1], [2]]}, event_id="e")
    assert answer == {
        "id": "e",
        "model_name": "router",
        "outputs": ["dog", "dog"],
        "model_outputs": {"m1": ["cat", "cat"], "m2": ["dog", "dog"], "m3": ["dog", "dog"]},
    }


def test_voting_weights_can_outvote_the_majority(engine: str) -> None:
    graph = Graph.router(
        router=VotingEnsemble, router_args={"weights": {"m1": 3}, "vote_type": "classification"}
    )
    for name, label in (("m1", "cat"), ("m2", "dog"), ("m3", "dog")):
        graph.add_route(name, models_steps.Label, class_args={"label": label})
    assert graph.mock_server(engine=engine).test("/", {"inputs": [[1]]})["outputs"] == ["cat"]


def test_voting_regression_is_the_weighted_mean(engine: str) -> None:
    graph = Graph.router(
        router=VotingEnsemble, router_args={"vote_type": "regression", "weights": {"a": 3}}
    )
    graph.add_route("a", models_steps.Label, class_args={"label": 1.0})
    graph.add_route("b", models_steps.Label, class_args={"label": 5.0})
    assert graph.mock_server(engine=engine).test("/", {"inputs": [[0]]})["outputs"] == [2.0]


def test_voting_over_oip_answers_of_real_models(iris_model: Any, engine: str) -> None:
    graph = Graph.router(router=VotingEnsemble)
    for name in ("left", "right"):
        graph.add_route(name, ModelServer, class_args={"model": iris_model})
    answer = graph.mock_server(engine=engine).test("/", oip([SETOSA, VIRGINICA]))
    assert answer["outputs"] == [
        {"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    ]
    assert answer["parameters"]["model_outputs"] == {"left": [0, 2], "right": [0, 2]}


def test_voting_rejects_a_bad_vote_type() -> None:
    graph = Graph.router(router=VotingEnsemble, router_args={"vote_type": "median"})
    graph.add_route("a", models_steps.Summer)
    with pytest.raises(GraphError, match="vote_type must be"):
        graph.mock_server()


def test_parallel_run_merges_by_name(engine: str) -> None:
    graph = Graph.router(router=ParallelRun)
    graph.add_route("sum", models_steps.Summer)
    graph.add_route("label", models_steps.Label, class_args={"label": "x"})
    answer = graph.mock_server(engine=engine).test("/", {"inputs": [[1, 2]]}, event_id="e")
    assert answer == {
        "sum": {"id": "e", "model_name": "sum", "outputs": [3]},
        "label": {"id": "e", "model_name": "label", "outputs": ["x"]},
    }


def test_parallel_run_of_async_models_runs_them_concurrently() -> None:
    graph = Graph.router(router=ParallelRun, router_args={"routes": ["a", "b"]})
    graph.add_route("a", models_steps.AsyncSummer)
    graph.add_route("b", models_steps.AsyncSummer)
    graph.add_route("c", models_steps.Failing)
    answer = graph.mock_server().test("/", {"inputs": [[1]]})
    assert list(answer) == ["a", "b"]


def test_traffic_split_is_reproducible_with_a_seed(engine: str) -> None:
    def split_counts() -> Counter[str]:
        graph = labels(
            ("stable", "S"),
            ("canary", "C"),
            router=TrafficSplit,
            router_args={"weights": {"stable": 9, "canary": 1}, "seed": 7},
        )
        server = graph.mock_server(engine=engine)
        return Counter(server.test("/", {"inputs": [[1]]})["outputs"][0] for _ in range(1000))

    first = split_counts()
    assert first == split_counts()
    assert 850 < first["S"] < 950
    assert first["S"] + first["C"] == 1000


def test_traffic_split_honours_an_explicit_model(engine: str) -> None:
    graph = labels(
        ("stable", "S"),
        ("canary", "C"),
        router=TrafficSplit,
        router_args={"weights": {"stable": 1, "canary": 0}, "seed": 1},
    )
    server = graph.mock_server(engine=engine)
    assert server.test("/v2/models/canary/infer", {"inputs": [[1]]})["outputs"] == ["C"]
    assert server.test("/", {"inputs": [[1]]})["outputs"] == ["S"]


def test_switch_routes_by_condition_with_a_default(engine: str) -> None:
    cases = [{"when": "event['amount'] > 1000", "route": "big"}]
    graph = labels(
        ("big", "B"),
        ("small", "S"),
        router=Switch,
        router_args={"cases": cases, "default": "small"},
    )
    server = graph.mock_server(engine=engine)
    assert server.test("/", {"amount": 5000, "inputs": [[1]]})["outputs"] == ["B"]
    assert server.test("/", {"amount": 5, "inputs": [[1]]})["outputs"] == ["S"]


def test_switch_rejects_unsafe_conditions_at_build_time() -> None:
    cases = [{"when": "__import__('os')", "route": "big"}]
    graph = labels(("big", "B"), router=Switch, router_args={"cases": cases})
    with pytest.raises(GraphError):
        graph.mock_server()


def test_router_between_flow_steps(iris_model: Any, engine: str) -> None:
    def to_request(body: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": [body["features"]]}

    def to_label(answer: dict[str, Any]) -> str:
        names = ["setosa", "versicolor", "virginica"]
        return names[int(answer["outputs"][0])]

    graph = Graph()
    graph.to(to_request)
    router = graph.add_router("models", after="to_request")
    router.add_route("iris", ModelServer, class_args={"model": iris_model})
    router.to(to_label).respond()
    server = graph.mock_server(engine=engine)
    assert server.test("/v2/models/iris/infer", {"features": VIRGINICA}) == "virginica"


def test_router_class_args_are_checked_at_build_time() -> None:
    graph = labels(("a", "A"), router=TrafficSplit, router_args={"weight": {"a": 1}})
    with pytest.raises(GraphError, match="rejects"):
        graph.validate()


def test_router_spec_round_trip_keeps_the_router_class() -> None:
    graph = labels(("a", "A"), router=VotingEnsemble, router_args={"vote_type": "regression"})
    restored = Graph.from_dict(graph.to_dict())
    assert restored.spec == graph.spec
    assert restored.to_dict()["class_name"] == "servegraph.models.ensemble:VotingEnsemble"
