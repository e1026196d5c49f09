"""The MLRun corpus: graph dicts as MLRun writes them, with the answers MLRun gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servegraph.compat import mlrun
from tests.compat.mlrun_cases import steps

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "mlrun_cases" / "cases.json").read_text()
)


def case_id(case: dict[str, Any]) -> str:
    return str(case["name"])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case_answers_like_mlrun(case: dict[str, Any]) -> None:
    load_error = next((r["expect_error"] for r in case["requests"] if "expect_error" in r), None)
    if case.get("error_phase") == "load":
        with pytest.raises(mlrun.GraphError, match=load_error):
            mlrun.load(case["graph"], namespace=steps).mock_server()
        return
    server = mlrun.load(case["graph"], namespace=steps).mock_server()
    for request in case["requests"]:
        send = {
            "path": request.get("path", "/"),
            "body": request.get("body"),
            "method": request.get("method"),
            "headers": request.get("headers"),
            "event_id": request.get("event_id"),
        }
        if "expect_error" in request:
            with pytest.raises(mlrun.MLRunRuntimeError, match=r"failed \(400\)") as caught:
                server.test(**send)
            assert request["expect_error"] in str(caught.value)
        else:
            assert server.test(**send) == request["expect"], request
    server.close()


def test_a_storey_class_servegraph_lacks_fails_clearly_at_load() -> None:
    graph = {"kind": "flow", "steps": {"r": {"kind": "task", "class_name": "storey.Rename"}}}
    with pytest.raises(mlrun.GraphError, match=r"storey\.Rename is not available"):
        mlrun.load(graph, namespace=steps)


def test_pending_requests_are_few_and_explained() -> None:
    pending = [c["pending"] for c in CASES if "pending" in c]
    assert all(p["reason"] and p["requests"] for p in pending)
    assert sum(len(p["requests"]) for p in pending) == 2
