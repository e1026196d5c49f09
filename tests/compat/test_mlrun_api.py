"""The MLRun surface beyond the corpus: server.test options, errors, V2ModelServer, loader."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy
import pytest

from servegraph import Event, StepError
from servegraph.compat import mlrun
from tests.compat.mlrun_cases import steps


def chain(engine: str = "sync", **extra: Any) -> dict[str, Any]:
    return {
        "steps": {
            "s1": {"kind": "task", "class_name": "Chain"},
            "s2": {"kind": "task", "class_name": "Chain", "after": ["s1"], **extra},
        },
        "engine": engine,
    }


def raising() -> dict[str, Any]:
    return {"steps": {"r": {"kind": "task", "handler": "raise_error"}}, "engine": "sync"}


class Doubler(mlrun.V2ModelServer):
    """An MLRun model class, written against the compatibility base class."""

    def load(self) -> None:
        self.factor = float(self.get_param("factor", 2))

    def predict(self, request: dict[str, Any]) -> list[float]:
        return [x * self.factor for x in request["inputs"]]


def test_silent_returns_the_failure_instead_of_raising() -> None:
    server = mlrun.load(raising(), namespace=steps).mock_server()
    response = server.test(body=[1], silent=True)
    assert response == mlrun.MockResponse(400, "ValueError: boom")


def test_failure_is_a_runtime_error_with_status_and_body() -> None:
    server = mlrun.load(raising(), namespace=steps).mock_server()
    with pytest.raises(RuntimeError, match=r"^failed \(400\): ValueError: boom$") as caught:
        server.test(body=[1])
    assert isinstance(caught.value, mlrun.MLRunRuntimeError)
    assert caught.value.status_code == 400
    assert caught.value.body == "ValueError: boom"


def test_get_body_false_returns_the_response() -> None:
    server = mlrun.load(chain(), namespace=steps).mock_server()
    response = server.test(body=[], get_body=False)
    assert response.status_code == 200
    assert response.body == ["s1", "s2"]


def test_bad_json_with_a_json_content_type_is_a_400() -> None:
    server = mlrun.load(chain(), namespace=steps).mock_server()
    response = server.test(body="{nope", content_type="application/json", silent=True)
    assert response.status_code == 400
    assert response.body.startswith("failed to json decode event, ")


def test_event_path_header_overrides_the_path() -> None:
    graph = {"steps": {"info": {"handler": "request_info", "full_event": True}}, "engine": "sync"}
    server = mlrun.load(graph, namespace=steps).mock_server()
    answer = server.test(body={"a": 1}, headers={"MLRUN-EVENT-PATH": "/over"}, event_id="e")
    assert answer == {"id": "e", "method": "POST", "path": "/over", "body": {"a": 1}}


def test_causes_are_chained_in_the_error_body() -> None:
    server = mlrun.load(raising(), namespace={"raise_error": chained_failure}).mock_server()
    assert server.test(body=1, silent=True).body == (
        "RuntimeError: outer, caused by: KeyError: 'inner'"
    )


def chained_failure(body: Any) -> Any:
    try:
        empty: dict[str, int] = {}
        empty["inner"]
    except KeyError as exc:
        message = "outer"
        raise RuntimeError(message) from exc


def test_graph_errors_use_the_mlrun_name_and_list_every_problem() -> None:
    graph = {
        "kind": "flow",
        "steps": {
            "q": {"kind": "queue", "path": "kafka://broker:9092/x"},
            "m": {"kind": "task", "class_name": "storey.Rename"},
            "w": {"kind": "weird"},
            "u": {"kind": "task", "handler": "inc", "colour": "red"},
            "b": {"kind": "error_step", "handler": "catch_error", "before": ["ghost"]},
        },
        "engine": "turbo",
        "surprise": 1,
    }
    with pytest.raises(mlrun.GraphError) as caught:
        mlrun.load(graph, namespace=steps)
    text = str(caught.value)
    for expected in (
        "Kafka streams are not supported by servegraph yet",
        "storey.Rename is not available",
        "unknown step kind 'weird'",
        "unknown MLRun key(s) colour",
        "'before' names an unknown step 'ghost'",
        "engine 'turbo' is not 'sync' or 'async'",
        "unknown MLRun key(s) surprise",
    ):
        assert expected in text


def test_unknown_graph_kind_and_router_class() -> None:
    with pytest.raises(mlrun.GraphError, match="unknown graph kind 'mesh'"):
        mlrun.load({"kind": "mesh", "steps": {"a": {"handler": "inc"}}}, namespace=steps)
    router = {"kind": "router", "class_name": "mlrun.serving.VotingEnsemble", "routes": {}}
    with pytest.raises(mlrun.GraphError, match="VotingEnsemble is not available"):
        mlrun.load(router, namespace=steps)


def test_validation_problems_surface_as_the_mlrun_graph_error() -> None:
    graph = {"steps": {"a": {"handler": "no_such_function"}}, "engine": "sync"}
    with pytest.raises(mlrun.GraphError, match="not found in the given namespace"):
        mlrun.load(graph, namespace=steps)


def test_constructor_failure_surfaces_when_the_server_is_built() -> None:
    graph = {"steps": {"a": {"class_name": "Multiply", "class_args": {"factor": 2}}}}
    loaded = mlrun.load(graph, namespace={"Multiply": ExplodingStep})
    with pytest.raises(mlrun.GraphError, match="constructing ExplodingStep failed"):
        loaded.mock_server()


class ExplodingStep:
    def __init__(self, context: Any = None, name: str | None = None, **kwargs: Any) -> None:
        message = "no"
        raise RuntimeError(message)

    def do(self, body: Any) -> Any:  # pragma: no cover - never constructed
        return body


def test_step_with_neither_class_nor_handler() -> None:
    with pytest.raises(mlrun.GraphError, match="neither class_name nor handler"):
        mlrun.load({"steps": {"a": {"kind": "task"}}}, namespace=steps)


def test_params_reach_get_param() -> None:
    graph = {"kind": "router", "routes": {"m": {"class_name": "Doubler"}}}
    server = mlrun.load(graph, namespace={"Doubler": Doubler}, params={"factor": 3}).mock_server()
    answer = server.test("/v2/models/m/infer", body={"inputs": [1, 2]}, event_id="e1")
    assert answer == {"id": "e1", "model_name": "m", "outputs": [3.0, 6.0]}


def test_v2_model_server_defaults_and_version() -> None:
    model = Doubler(name="d", version="v7", factor=5)
    model.post_init()
    answer = model.do_event(Event({"inputs": [1]}, id="e"))
    assert answer == {"id": "e", "model_name": "d", "model_version": "v7", "outputs": [5.0]}
    assert model.ready
    assert model.get_param("missing", "fallback") == "fallback"


def test_v2_model_server_predict_must_be_written() -> None:
    model = mlrun.V2ModelServer(model=object())
    model.post_init()
    with pytest.raises(NotImplementedError, match=r"override predict\(\)"):
        model.do_event(Event({"inputs": [1]}))


def test_v2_model_server_finds_its_model_file(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"x")
    model = mlrun.V2ModelServer(model_path=f"file://{tmp_path}")
    assert model.get_model(".pkl") == (str(tmp_path / "model.pkl"), None)
    (tmp_path / "other.pkl").write_bytes(b"y")
    with pytest.raises(ValueError, match="exactly one model file"):
        model.get_model(".pkl")
    with pytest.raises(ValueError, match="has no model_path"):
        mlrun.V2ModelServer(name="m").get_model()


def test_error_step_class_with_a_handler_method() -> None:
    graph = {
        "steps": {
            "r": {"kind": "task", "handler": "raise_error", "on_error": "catcher"},
            "catcher": {
                "kind": "error_step",
                "class_name": "Catcher",
                "handler": "handle",
                "full_event": True,
            },
        },
        "engine": "sync",
    }
    server = mlrun.load(graph, namespace={"Catcher": Catcher, "raise_error": steps.raise_error})
    assert server.mock_server().test(body=[1]) == {"caught": "boom", "at": "r"}


class Catcher:
    def __init__(self, context: Any = None, name: str | None = None) -> None:
        self.name = name

    def handle(self, event: mlrun.MLRunEvent) -> dict[str, Any]:
        return {"caught": str(event.error), "at": event.origin_state}


def test_lambda_handler_errors_are_named() -> None:
    graph = {"steps": {"l": {"handler": "(event.__class__)"}}, "engine": "sync"}
    with pytest.raises(mlrun.GraphError):
        mlrun.load(graph).mock_server()


def test_step_errors_are_still_servegraph_step_errors_natively() -> None:
    graph = mlrun.load(raising(), namespace=steps)
    assert isinstance(graph, mlrun.MLRunGraph)
    native = graph.spec
    from servegraph import Graph

    with pytest.raises(StepError, match="step 'r' failed"):
        Graph.from_spec(native).mock_server().test(body=1)


def test_versioned_route_name_gives_model_name_and_version() -> None:
    graph = {"kind": "router", "routes": {"m:v2": {"class_name": "Doubler"}}}
    server = mlrun.load(graph, namespace={"Doubler": Doubler}).mock_server()
    answer = server.test("/v2/models/m/versions/v2/infer", body={"inputs": [1]}, event_id="e")
    assert answer == {"id": "e", "model_name": "m", "model_version": "v2", "outputs": [2.0]}


class ClassifierModel(mlrun.V2ModelServer):
    """A model class as MLRun's documentation writes it, unchanged but for the import."""

    def load(self) -> None:
        model_file, _extra_data = self.get_model(".pkl")
        with open(model_file, "rb") as file:
            self.model = pickle.load(file)

    def predict(self, body: dict[str, Any]) -> list[Any]:
        feats = numpy.asarray(body["inputs"])
        result = self.model.predict(feats)
        return list(result.tolist())


def test_mlrun_model_class_serves_a_real_model(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    (tmp_path / "model.pkl").write_bytes(
        pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels))
    )
    graph = {
        "kind": "router",
        "routes": {
            "iris": {
                "kind": "task",
                "class_name": "ClassifierModel",
                "class_args": {"model_path": str(tmp_path)},
            }
        },
    }
    server = mlrun.load(graph, namespace={"ClassifierModel": ClassifierModel}).mock_server()
    body = {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}
    answer = server.test("/v2/models/iris/infer", body=body, event_id="e1")
    assert answer == {"id": "e1", "model_name": "iris", "outputs": [0, 2]}
    response = server.test("/v2/models/iris/infer", body={"inputs": "x"}, silent=True)
    assert response.status_code == 400
