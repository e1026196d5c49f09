"""Map, filter, extend and sample: the same answers in every mode (sync, async, stream)."""

from __future__ import annotations

from typing import Any

import pytest

from servegraph import Graph
from servegraph.errors import GraphError, StepError
from servegraph.steps.transforms import Extend, Filter, Map, Sample
from tests.conftest import Driver


def test_map_takes_an_expression_a_callable_or_an_import_path(drive: Driver) -> None:
    graph = Graph()
    graph.to(Map("event * 2")).to(Map(lambda x: x + 1)).to(Map("tests.unit.sample_steps:double"))
    assert drive(graph)(5) == 22


def test_builtin_steps_get_unique_default_names() -> None:
    graph = Graph()
    graph.to(Map("event")).to(Map("event")).to(Filter("event"), name="keep")
    assert [step.name for step in graph.spec.steps] == ["map", "map_2", "keep"]


def test_filter_stops_the_events_whose_condition_is_false(drive: Driver) -> None:
    graph = Graph()
    graph.to(Filter("event['amount'] > 100")).to(Map("event['amount']"))
    send = drive(graph)
    assert send({"amount": 150}) == 150
    assert send({"amount": 50}) is None


def test_filter_stops_events_where_none_is_passed_on() -> None:
    graph = Graph()
    graph.stop_on_none = False  # MLRun's behaviour: a None result is passed on as the body
    graph.to(Filter("event > 0")).to(Map(lambda x: "reached"))
    server = graph.mock_server()
    assert server.test(body=-1) is None
    assert server.test(body=1) == "reached"


def test_extend_adds_fields(drive: Driver) -> None:
    graph = Graph()
    graph.to(Extend("{'total': event['a'] + event['b'], 'a': 0}"))
    assert drive(graph)({"a": 1, "b": 2}) == {"a": 0, "b": 2, "total": 3}


def test_extend_of_a_body_that_is_not_a_dict_names_the_step() -> None:
    graph = Graph()
    graph.to(Extend("{'x': 1}"), name="enrich")
    with pytest.raises(
        StepError, match="extend step 'enrich' adds fields to a dict body: got a int"
    ):
        graph.mock_server().test(body=3)


def test_sample_every_nth_event(drive: Driver) -> None:
    graph = Graph()
    graph.to(Sample(every=3))
    send = drive(graph)
    assert [send(n) for n in range(7)] == [0, None, None, 3, None, None, 6]


def test_sample_by_rate_is_repeatable_with_a_seed() -> None:
    def kept(seed: int) -> list[int]:
        graph = Graph()
        graph.to(Sample(rate=0.3, seed=seed))
        server = graph.mock_server()
        return [n for n in range(1000) if server.test(body=n) is not None]

    first = kept(7)
    assert first == kept(7)
    assert first != kept(8)
    assert 200 < len(first) < 400


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "sample takes either every=N"),
        ({"every": 2, "rate": 0.5}, "sample takes either every=N"),
        ({"every": 0}, "every must be a positive integer"),
        ({"rate": 1.5}, r"rate must be in \(0, 1\]"),
    ],
)
def test_sample_arguments_are_checked(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        Sample(**arguments)


def test_unsupported_expressions_are_refused_when_the_graph_is_built() -> None:
    with pytest.raises(GraphError, match="fn:"):
        Map("__import__('os').system('true')")
    spec = {
        "steps": {
            "bad": {
                "class_name": "servegraph.steps.transforms:Map",
                "class_args": {"fn": "[x for x in event]"},
            }
        }
    }
    with pytest.raises(GraphError, match="step 'bad'") as caught:
        Graph.from_dict(spec).mock_server()
    assert "comprehension" in str(caught.value)


def test_fn_must_be_callable_or_text() -> None:
    with pytest.raises(GraphError, match="fn must be a callable, an import path"):
        Map(42)  # type: ignore[arg-type]


def test_an_import_path_that_names_nothing_is_an_error() -> None:
    with pytest.raises(GraphError, match=r"fn: cannot resolve 'tests\.unit\.sample_steps:missing'"):
        Map("tests.unit.sample_steps:missing")


def test_steps_with_expressions_save_and_load(tmp_path: Any) -> None:
    graph = Graph()
    graph.to(Filter("event > 1")).to(Map("event * 10")).to(Sample(every=1))
    path = tmp_path / "graph.json"
    graph.save(path)
    loaded = Graph.load(path)
    assert loaded.spec.steps[1].class_args == {"fn": "event * 10"}
    server = loaded.mock_server()
    assert server.test(body=2) == 20
    assert server.test(body=1) is None


def test_specs_name_built_in_steps_by_their_bare_class_names() -> None:
    spec = {
        "steps": {
            "big": {"class_name": "Filter", "class_args": {"fn": "event > 10"}},
            "double": {"class_name": "Map", "class_args": {"fn": "event * 2"}, "after": ["big"]},
        }
    }
    server = Graph.from_dict(spec).mock_server()
    assert server.test(body=20) == 40
    assert server.test(body=5) is None


def test_an_unknown_step_name_in_a_spec_lists_the_built_in_ones() -> None:
    spec = {"steps": {"m": {"class_name": "Mapp", "class_args": {"fn": "event"}}}}
    with pytest.raises(GraphError, match="it is not a built-in step \\(AggregateByKey, Batch,"):
        Graph.from_dict(spec).validate()


def test_built_in_steps_import_from_the_package() -> None:
    import servegraph.steps as steps

    assert steps.Map is Map
    with pytest.raises(AttributeError, match="has no attribute 'Mapp'"):
        _ = steps.Mapp
