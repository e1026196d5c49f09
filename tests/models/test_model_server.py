"""ModelServer through the mock server: OIP v2 and MLRun bodies, metadata, health, errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from servegraph import Graph
from servegraph.models.records import PredictionRecord
from servegraph.models.server import ModelServer
from servegraph.testing import MockServer
from tests.models import models_steps
from tests.models.conftest import SETOSA, VIRGINICA, oip


def iris_server(iris_model: Any, **route: Any) -> MockServer:
    graph = Graph.router()
    graph.add_route("iris", ModelServer, class_args={"model": iris_model, "version": "1", **route})
    return graph.mock_server()


def test_oip_infer_answers_tensors(iris_model: Any) -> None:
    response = iris_server(iris_model).request(
        "POST", "/v2/models/iris/infer", oip([SETOSA, VIRGINICA], id="req-1")
    )
    assert response.status == 200
    assert response.body == {
        "model_name": "iris",
        "model_version": "1",
        "id": "req-1",
        "outputs": [{"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 2]}],
    }


def test_mlrun_style_body_gets_an_mlrun_answer(iris_model: Any) -> None:
    server = iris_server(iris_model)
    response = server.request("POST", "/v2/models/iris/infer", {"inputs": [SETOSA]})
    assert response.status == 200
    assert response.body["model_name"] == "iris"
    assert response.body["model_version"] == "1"
    assert response.body["outputs"] == [0]
    assert set(response.body) == {"id", "model_name", "model_version", "outputs"}


def test_requested_outputs_and_unknown_output(iris_model: Any) -> None:
    server = iris_server(iris_model)
    chosen = oip([SETOSA], outputs=[{"name": "output-0"}])
    assert server.request("POST", "/v2/models/iris/infer", chosen).status == 200
    unknown = oip([SETOSA], outputs=[{"name": "probabilities"}])
    response = server.request("POST", "/v2/models/iris/infer", unknown)
    assert response.status == 400
    assert "probabilities" in response.body["error"]


def test_model_metadata_and_ready(iris_model: Any) -> None:
    inputs = [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    server = iris_server(iris_model, inputs=inputs)
    metadata = server.request("GET", "/v2/models/iris")
    assert metadata.status == 200
    assert metadata.body == {
        "name": "iris",
        "versions": ["1"],
        "platform": "python",
        "inputs": inputs,
        "outputs": [],
    }
    ready = server.request("GET", "/v2/models/iris/ready")
    assert (ready.status, ready.body) == (200, {"name": "iris", "ready": True})


def test_server_routes(iris_model: Any) -> None:
    server = iris_server(iris_model)
    assert server.request("GET", "/v2/health/live").body == {"live": True}
    assert server.request("GET", "/v2/health/ready").body == {"ready": True}
    assert server.request("GET", "/v2/models").body == {"models": ["iris"]}
    metadata = server.request("GET", "/v2").body
    assert metadata["name"] == "servegraph"
    assert metadata["extensions"] == []


def test_model_loaded_from_a_joblib_file_or_directory(iris_file: Path) -> None:
    for model_path in (str(iris_file), f"file://{iris_file.parent}"):
        graph = Graph.router()
        graph.add_route("iris", ModelServer, class_args={"model_path": model_path})
        response = graph.mock_server().request("POST", "/v2/models/iris/infer", oip([VIRGINICA]))
        assert response.body["outputs"][0]["data"] == [2]


def test_model_loaded_from_a_pickle_file(iris_model: Any, tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "iris.pkl"
    path.write_bytes(pickle.dumps(iris_model))
    model = ModelServer(name="iris", model_path=str(path))
    model.post_init()
    assert model.ready
    assert model.predict({"inputs": [SETOSA]}).tolist() == [0]


def test_onnx_model(tmp_path: Path) -> None:
    import numpy
    import onnx
    from onnx import TensorProto, helper

    weights = numpy.array([[1.0], [2.0]], dtype=numpy.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 1], weights.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "linear.onnx"
    onnx.save(model, str(path))
    routed = Graph.router()
    routed.add_route("linear", ModelServer, class_args={"model_path": str(path)})
    response = routed.mock_server().request(
        "POST",
        "/v2/models/linear/infer",
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 2, 3]}]},
    )
    assert response.status == 200
    assert response.body["outputs"][0] == {
        "name": "output-0",
        "shape": [2, 1],
        "datatype": "FP32",
        "data": [3.0, 8.0],
    }


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        ("{not json", "application/json", "not valid JSON"),
        ({"instances": [1]}, None, "neither an Open Inference Protocol v2 request"),
        ({"inputs": "text"}, None, "neither an Open Inference Protocol v2 request"),
        (
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": SETOSA}]},
            None,
            "needs 8 values, got 4",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP128", "data": SETOSA}]},
            None,
            "FP128",
        ),
    ],
    ids=["malformed-json", "other-shape", "inputs-not-rows", "wrong-length", "unknown-datatype"],
)
def test_bad_input_is_a_400(
    iris_model: Any, body: Any, content_type: str | None, fragment: str
) -> None:
    server = iris_server(iris_model)
    response = server.request("POST", "/v2/models/iris/infer", body, content_type=content_type)
    assert response.status == 400
    assert fragment in response.body["error"]
    assert "Traceback" not in response.body["error"]
    assert server.request("POST", "/v2/models/iris/infer", oip([SETOSA])).status == 200


def test_unknown_model_and_version_are_404(iris_model: Any) -> None:
    server = iris_server(iris_model)
    for path in ("/v2/models/rose/infer", "/v2/models/iris/versions/9/infer"):
        response = server.request("POST", path, oip([SETOSA]))
        assert response.status == 404
        assert "known routes: iris" in response.body["error"]


def test_a_model_that_failed_to_load_is_not_ready_and_the_others_serve(iris_model: Any) -> None:
    graph = Graph.router()
    graph.add_route("iris", ModelServer, class_args={"model": iris_model})
    graph.add_route("broken", models_steps.NeverLoads)
    server = graph.mock_server()
    failed = server.request("POST", "/v2/models/broken/infer", {"inputs": [[1]]})
    assert failed.status == 503
    assert "weights missing" in failed.body["error"]
    assert server.request("GET", "/v2/models/broken/ready").status == 503
    health = server.request("GET", "/v2/health/ready")
    assert health.status == 503
    assert (
        "'broken' is not ready: loading failed: FileNotFoundError: weights missing"
        in (health.body["error"])
    )
    assert server.request("GET", "/v2/health/live").status == 200
    assert server.request("POST", "/v2/models/iris/infer", oip([SETOSA])).status == 200


def test_a_predict_that_raises_is_a_500_and_the_server_keeps_serving(iris_model: Any) -> None:
    graph = Graph.router()
    graph.add_route("iris", ModelServer, class_args={"model": iris_model})
    graph.add_route("failing", models_steps.Failing)
    server = graph.mock_server()
    response = server.request("POST", "/v2/models/failing/infer", {"inputs": [[1]]})
    assert response.status == 500
    assert response.body == {"error": "RuntimeError: the model broke", "step": "failing"}
    assert server.request("POST", "/v2/models/iris/infer", oip([SETOSA])).status == 200


def test_explain_is_501_unless_implemented(iris_model: Any) -> None:
    response = iris_server(iris_model).request("POST", "/v2/models/iris/explain", oip([SETOSA]))
    assert response.status == 501
    assert "does not implement explain" in response.body["error"]


def test_async_predict() -> None:
    graph = Graph.router()
    graph.add_route("sum", models_steps.AsyncSummer)
    server = graph.mock_server()
    assert server.engine == "async"
    assert server.test("/v2/models/sum/infer", {"inputs": [[1, 2], [3, 4]]})["outputs"] == [3, 7]


def test_sync_predict_in_the_models_own_thread_pool() -> None:
    models_steps.THREADS.clear()
    graph = Graph.router()
    graph.add_route("threads", models_steps.ThreadRecorder, class_args={"threads": 2})
    server = graph.mock_server()
    assert server.test("/v2/models/threads/infer", {"inputs": [[1]]})["outputs"] == [[1]]
    assert models_steps.THREADS[0].startswith("model-threads")
    assert models_steps.THREADS[0] != threading.current_thread().name


def test_batched_callers_each_get_their_own_rows() -> None:
    graph = Graph.router()
    settings = {"max_batch_size": 16, "max_latency_ms": 20}
    graph.add_route("sum", models_steps.Summer, class_args={"batching": settings})
    server = graph.mock_server()

    async def call(i: int) -> Any:
        rows = [[i, j] for j in range(i % 3 + 1)]
        return await server.arequest("POST", "/v2/models/sum/infer", {"inputs": rows})

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(call(i) for i in range(24))))

    for i, response in enumerate(asyncio.run(main())):
        assert response.status == 200
        assert response.body["outputs"] == [i + j for j in range(i % 3 + 1)]


def test_a_batch_member_with_invalid_rows_fails_alone() -> None:
    graph = Graph.router()
    settings = {"max_batch_size": 64, "max_latency_ms": 20}
    graph.add_route("check", models_steps.RowChecker, class_args={"batching": settings})
    server = graph.mock_server()

    async def main() -> list[Any]:
        bodies = [{"inputs": [[1, 2]]}, {"inputs": [[-1, 2]]}, {"inputs": [[3, 4]]}]
        calls = (server.arequest("POST", "/v2/models/check/infer", body) for body in bodies)
        return list(await asyncio.gather(*calls))

    good, bad, other = asyncio.run(main())
    assert good.body["outputs"] == [3.0]
    assert other.body["outputs"] == [7.0]
    assert bad.status == 500
    assert "negative values" in bad.body["error"]


def test_prediction_records_reach_the_monitoring_hook(iris_model: Any) -> None:
    records: list[PredictionRecord] = []
    server = iris_server(iris_model)
    server.context.hooks.record_prediction = records.append
    server.request("POST", "/v2/models/iris/infer", {"inputs": [SETOSA]}, headers={})
    server.request("POST", "/v2/models/iris/infer", oip([VIRGINICA]))
    assert [record.model for record in records] == ["iris", "iris"]
    assert records[0].version == "1"
    assert records[0].inputs == [SETOSA]
    assert records[1].outputs.tolist() == [2]
    assert records[0].latency_ms >= 0
    assert records[0].error is None


def test_failed_predictions_are_recorded_with_their_error() -> None:
    records: list[PredictionRecord] = []
    graph = Graph.router()
    graph.add_route("failing", models_steps.Failing)
    server = graph.mock_server()
    server.context.hooks.record_prediction = records.append
    assert server.request("POST", "/", {"inputs": [[1]]}).status == 500
    assert records[0].error == "RuntimeError: the model broke"


def test_a_full_batching_queue_is_a_503_with_retry_after() -> None:
    graph = Graph.router()
    settings = {"max_batch_size": 1, "max_latency_ms": 1, "max_queue_size": 2}
    graph.add_route("slow", models_steps.SlowAsync, class_args={"batching": settings})
    server = graph.mock_server()

    async def main() -> list[Any]:
        calls = (server.arequest("POST", "/", {"inputs": [[i]]}) for i in range(8))
        return list(await asyncio.gather(*calls))

    responses = asyncio.run(main())
    served = [response for response in responses if response.status == 200]
    overloaded = [response for response in responses if response.status == 503]
    assert len(served) == 2  # all arrive before the first batch leaves: max_queue_size rows
    assert len(overloaded) == 6
    assert dict(overloaded[0].headers)["retry-after"] == "1"
    assert "queue" in overloaded[0].body["error"]


def test_a_batched_request_past_its_timeout_is_a_504() -> None:
    graph = Graph.router()
    settings = {"max_batch_size": 4, "max_latency_ms": 1, "timeout_ms": 20}
    graph.add_route("slow", models_steps.SlowAsync, class_args={"batching": settings})
    server = graph.mock_server()
    response = asyncio.run(server.arequest("POST", "/", {"inputs": [[1]]}))
    assert response.status == 504
    assert "slow" in response.body["error"]


def test_a_non_blocking_batched_model_predicts_on_the_loop_thread() -> None:
    models_steps.THREADS.clear()
    graph = Graph.router()
    class_args = {"batching": {"max_batch_size": 8, "max_latency_ms": 1}, "blocking": False}
    graph.add_route("threads", models_steps.ThreadRecorder, class_args=class_args)
    server = graph.mock_server()

    async def main() -> tuple[list[Any], str]:
        calls = (server.arequest("POST", "/", {"inputs": [[i]]}) for i in range(4))
        return list(await asyncio.gather(*calls)), threading.current_thread().name

    responses, loop_thread = asyncio.run(main())
    assert [response.body["outputs"] for response in responses] == [[[i]] for i in range(4)]
    assert set(models_steps.THREADS) == {loop_thread}
