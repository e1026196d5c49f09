"""The iris model-serving example runs and prints the answers docs/models.md describes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from examples import iris_server

INPUTS = [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
OUTPUTS = [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


def printed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    iris_server.main()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_example_prints_one_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    lines = printed(capsys)
    assert [(line["request"], line["status"]) for line in lines] == [
        ("POST /v2/models/iris/versions/v2/infer", 200),
        ("POST /v2/models/iris/versions/v1/infer", 200),
        ("GET /v2/models/iris/versions/v1", 200),
        ("GET /v2/models", 200),
        ("GET /v2/health/ready", 200),
        ("POST /v2/models/iris/versions/v1/infer", 400),
        ("POST /v2/models/infer", 200),
    ]


def test_the_answers_are_exact(capsys: pytest.CaptureFixture[str]) -> None:
    oip, mlrun, metadata, models, ready, bad, vote = (line["body"] for line in printed(capsys))
    assert oip == {
        "model_name": "iris",
        "model_version": "v2",
        "id": "req-1",
        "outputs": [{"name": "output-0", "shape": [3], "datatype": "INT64", "data": [0, 2, 2]}],
    }
    assert mlrun == {
        "id": "req-2",
        "model_name": "iris",
        "model_version": "v1",
        "outputs": [0, 1, 2],
    }
    assert metadata == {
        "name": "iris",
        "versions": ["v1"],
        "platform": "python",
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }
    assert models == {"models": ["iris"]}
    assert ready == {"ready": True}
    assert bad == {
        "error": "input 'input-0': shape [2, 4] needs 8 values, got 4",
        "step": "iris:v1",
    }
    assert vote == {
        "id": "req-4",
        "model_name": "iris-vote",
        "outputs": [0, 1, 2],
        "model_outputs": {"v1": [0, 1, 2], "v2": [0, 2, 2], "v3": [0, 1, 2]},
    }


def test_the_example_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys) == printed(capsys)


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_both_engines_serve_the_versions_alike(engine: str) -> None:
    with iris_server.build_graph().mock_server(engine=engine) as server:
        body = {"inputs": iris_server.ROWS}
        headers = {"servegraph-event-id": "e"}
        v1 = server.request("POST", "/v2/models/infer", body, headers=headers)
        v2 = server.request("POST", "/v2/models/iris/versions/v2/infer", body, headers=headers)
        unversioned = server.request("POST", "/v2/models/iris/infer", body)
    assert (v1.status, v1.body["model_version"], v1.body["outputs"]) == (200, "v1", [0, 1, 2])
    assert (v2.status, v2.body["model_version"], v2.body["outputs"]) == (200, "v2", [0, 2, 2])
    assert unversioned.status == 404
    assert "known routes: iris:v1, iris:v2" in unversioned.body["error"]
