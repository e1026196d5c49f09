"""Spec round trip: dict, JSON and YAML files, and clear errors for bad specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servegraph import Graph, GraphError
from servegraph.graph.serde import dumps, loads, spec_from_dict, spec_to_dict
from tests.unit.sample_steps import Multiply, catch, double, inc


def rich_flow() -> Graph:
    graph = Graph(engine="async", params={"threshold": 0.5})
    start = graph.to(inc, name="start")
    start.to(Multiply, name="times", class_args={"factor": 3}, input_path="a", result_path="b.c")
    start.to("tests.unit.sample_steps:EventStep", name="event_step", full_event=True)
    router = graph.add_router("models", after=["times", "event_step"], default_route="m1")
    router.add_route("m1", double).add_route(
        "m2", "tests.unit.sample_steps:Multiply", class_args={"factor": 2}
    )
    router.to(inc, name="post").respond()
    graph["times"].error_handler(catch, name="catcher", full_event=True)
    graph.error_handler(catch, name="fallback", full_event=True)
    return graph


def test_flow_round_trips_through_a_dict() -> None:
    graph = rich_flow()
    data = graph.to_dict()
    assert Graph.from_dict(data).spec == graph.spec
    assert json.loads(json.dumps(data)) == data


def test_router_graph_round_trips_through_a_dict() -> None:
    graph = Graph.router(default_route="b")
    graph.add_route("a", inc).add_route("b", Multiply, class_args={"factor": 4})
    data = graph.to_dict()
    assert data == {
        "version": 1,
        "kind": "router",
        "routes": {
            "a": {"handler": "tests.unit.sample_steps:inc"},
            "b": {"class_name": "tests.unit.sample_steps:Multiply", "class_args": {"factor": 4}},
        },
        "default_route": "b",
    }
    assert Graph.from_dict(data).spec == graph.spec


def test_dict_leaves_defaults_out() -> None:
    graph = Graph()
    graph.to(inc).to(double).respond()
    assert graph.to_dict() == {
        "version": 1,
        "kind": "flow",
        "steps": {
            "inc": {"handler": "tests.unit.sample_steps:inc"},
            "double": {
                "handler": "tests.unit.sample_steps:double",
                "after": ["inc"],
                "responder": True,
            },
        },
    }


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_spec_files_round_trip(tmp_path: Path, suffix: str) -> None:
    graph = rich_flow()
    path = tmp_path / f"graph{suffix}"
    graph.save(path)
    assert Graph.load(path).spec == graph.spec


def test_loaded_graph_runs_like_the_original(tmp_path: Path) -> None:
    graph = Graph()
    graph.to(inc).to(Multiply, class_args={"factor": 10}).respond()
    path = tmp_path / "g.yaml"
    graph.save(path)
    assert Graph.load(path).test(1) == graph.test(1) == 20


def test_unknown_file_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.json, \.yaml or \.yml"):
        Graph.load(tmp_path / "graph.txt")


def test_lambda_cannot_be_serialised() -> None:
    graph = Graph()
    graph.to(lambda x: x, name="anonymous")

    def nested(x: int) -> int:
        return x

    graph.to(nested)
    with pytest.raises(GraphError) as caught:
        graph.to_dict()
    error = caught.value
    assert [problem.step for problem in error.problems] == ["anonymous", "nested"]
    assert "define it at module level" in str(error)


def test_unknown_keys_are_listed_with_the_allowed_ones() -> None:
    data: dict[str, Any] = {
        "version": 1,
        "steps": {"a": {"handler": "x:y", "colour": "red"}},
        "extra": 1,
    }
    with pytest.raises(GraphError) as caught:
        spec_from_dict(data)
    messages = {problem.step: problem.message for problem in caught.value.problems}
    assert messages[None].startswith("unknown key(s) extra; allowed:")
    assert messages["a"].startswith("unknown key(s) colour; allowed:")


def test_bad_kind_engine_and_version_are_each_reported() -> None:
    data = {"version": 9, "kind": "mesh", "engine": "turbo", "steps": {"a": {"kind": "magic"}}}
    with pytest.raises(GraphError) as caught:
        spec_from_dict(data)
    text = str(caught.value)
    assert "unsupported spec version 9" in text
    assert "kind 'mesh' is not one of: flow, router" in text
    assert "engine 'turbo' is not one of: auto, sync, async" in text
    assert "kind 'magic' is not one of: task, router" in text


def test_wrongly_shaped_parts_are_reported() -> None:
    with pytest.raises(GraphError) as caught:
        spec_from_dict({"steps": {"a": 1, "b": {"class_args": [1]}}})
    assert {problem.step for problem in caught.value.problems} == {"a", "b"}
    with pytest.raises(GraphError, match="'steps' must map step names"):
        spec_from_dict({"steps": [1]})


def test_after_may_be_a_single_name() -> None:
    spec = spec_from_dict(
        {"steps": {"a": {"handler": "x:y"}, "b": {"handler": "x:y", "after": "a"}}}
    )
    assert spec.step("b").after == ("a",)


def test_text_helpers_and_top_level_shape() -> None:
    spec = rich_flow().spec
    assert loads(dumps(spec, "yaml"), "yaml") == spec
    assert loads(dumps(spec)) == spec
    with pytest.raises(ValueError, match="unknown spec format"):
        dumps(spec, "toml")
    with pytest.raises(ValueError, match="unknown spec format"):
        loads("", "toml")
    with pytest.raises(GraphError, match="mapping at the top level"):
        loads("[1, 2]")


def test_stop_on_none_is_kept() -> None:
    graph = Graph()
    graph.stop_on_none = False
    graph.to(inc)
    assert spec_to_dict(graph.spec)["stop_on_none"] is False
    assert Graph.from_dict(graph.to_dict()).spec.stop_on_none is False


def test_spec_step_lookup() -> None:
    spec = rich_flow().spec
    assert spec.step("m2").class_args == {"factor": 2}
    with pytest.raises(KeyError, match="no step named 'zzz'"):
        spec.step("zzz")
