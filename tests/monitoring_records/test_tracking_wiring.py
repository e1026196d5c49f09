"""graph.track(...): saved with the spec, and installed by the mock server and the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from servegraph import Graph, GraphError
from servegraph.models.server import ModelServer
from servegraph.monitoring.records import read_records
from servegraph.server.app import ServingApp
from tests.server.asgi import serve


class Doubler(ModelServer):
    def predict(self, request: Any) -> Any:
        return [[2 * value for value in row] for row in request["inputs"]]


def tracked(root: Path) -> Graph:
    graph = Graph.router()
    graph.add_route("double", Doubler)
    graph.track(models=["double"], sink=str(root), sample=1.0)
    return graph


def test_tracking_settings_round_trip_through_the_spec(tmp_path: Path) -> None:
    graph = tracked(tmp_path)
    data = graph.to_dict()
    assert data["tracking"]["models"] == ["double"]
    assert Graph.from_dict(data).to_dict() == data
    with pytest.raises(GraphError, match="tracking: sample must be a number from 0 to 1"):
        Graph.from_dict({**data, "tracking": {"sample": 3}})


def test_the_mock_server_records_tracked_predictions(tmp_path: Path) -> None:
    with tracked(tmp_path).mock_server() as server:
        for n in range(3):
            server.request("POST", "/v2/models/double/infer", {"inputs": [[n]]})
    table = read_records(tmp_path, "double")
    assert table.num_rows == 3
    assert table.column("outputs").to_pylist() == ["[[0]]", "[[2]]", "[[4]]"]


def test_the_http_server_records_tracked_predictions(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: ServingApp) -> list[int]:
        statuses = []
        for n in range(4):
            response = await client.post("/v2/models/double/infer", json={"inputs": [[n]]})
            statuses.append(response.status_code)
        return statuses

    assert serve(tracked(tmp_path), scenario) == [200] * 4
    assert read_records(tmp_path, "double").num_rows == 4
