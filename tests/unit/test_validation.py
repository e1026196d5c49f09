"""Every invalid graph fails at build time with one GraphError naming each problem's step."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from servegraph import Graph, GraphError
from servegraph.errors import Problem
from tests.unit import sample_steps
from tests.unit.sample_steps import Broken, Multiply, NoDo, double, inc


def problems_of(graph: Graph) -> list[Problem]:
    with pytest.raises(GraphError) as caught:
        graph.mock_server()
    return list(caught.value.problems)


def test_unknown_after_target() -> None:
    graph = Graph()
    graph.to(inc)
    graph.add_step(double, after="nowhere")
    assert problems_of(graph) == [Problem("double", "'after' names an unknown step 'nowhere'")]


def test_cycle_is_reported_with_its_path() -> None:
    graph = Graph()
    graph.to(inc, name="a")
    graph.add_step(double, name="b", after=["a", "c"])
    graph.add_step(double, name="c", after="b")
    [problem] = problems_of(graph)
    assert "cycle" in problem.message
    assert "b -> c -> b" in problem.message or "c -> b -> c" in problem.message


def test_step_after_itself() -> None:
    graph = Graph()
    graph.to(inc, name="a")
    graph.add_step(double, name="b", after=["a", "b"])
    assert problems_of(graph) == [Problem("b", "a step cannot run after itself")]


def test_duplicate_names() -> None:
    graph = Graph()
    graph.to(inc, name="same").to(double, name="same")
    [problem] = problems_of(graph)
    assert problem.step == "same"
    assert "duplicate" in problem.message


def test_two_responders() -> None:
    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="a").respond()
    start.to(double, name="b").respond()
    [problem] = problems_of(graph)
    assert "'a', 'b'" in problem.message
    assert "responders" in problem.message


def test_module_that_cannot_be_imported() -> None:
    graph = Graph()
    graph.to("no_such_package.mod:thing", name="ghost")
    [problem] = problems_of(graph)
    assert problem.step == "ghost"
    assert "no_such_package" in problem.message


def test_attribute_that_does_not_exist() -> None:
    graph = Graph()
    graph.to("tests.unit.sample_steps:missing", name="ghost")
    [problem] = problems_of(graph)
    assert "'tests.unit.sample_steps' has no attribute 'missing'" in problem.message


def test_module_that_fails_while_importing_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_mod.py").write_text("import not_installed_thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = Graph()
    graph.to("broken_mod.step", name="uses_broken")
    [problem] = problems_of(graph)
    assert "importing 'broken_mod' failed" in problem.message
    assert "not_installed_thing" in problem.message
    sys.modules.pop("broken_mod", None)


def test_module_with_a_syntax_error_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "syntax_mod.py").write_text(textwrap.dedent("def f(:\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = Graph()
    graph.to("syntax_mod:f", name="bad_syntax")
    [problem] = problems_of(graph)
    assert "SyntaxError" in problem.message


def test_handler_missing_on_class() -> None:
    graph = Graph()
    graph.to(Multiply, class_args={"factor": 2}, handler="predict", name="m")
    [problem] = problems_of(graph)
    assert problem == Problem("m", "class Multiply has no method 'predict'")


def test_class_without_a_step_method() -> None:
    graph = Graph()
    graph.to(NoDo, name="nodo")
    [problem] = problems_of(graph)
    assert "no do() or do_event() method" in problem.message


def test_constructor_rejects_class_args() -> None:
    graph = Graph()
    graph.to(Multiply, class_args={"factr": 2}, name="m")
    [problem] = problems_of(graph)
    assert problem.step == "m"
    assert "rejects class_args {'factr': 2}" in problem.message


def test_constructor_missing_a_required_argument() -> None:
    graph = Graph()
    graph.to(Multiply, name="m")
    [problem] = problems_of(graph)
    assert "missing a required argument: 'factor'" in problem.message


def test_constructor_that_raises_is_reported_at_build_time() -> None:
    graph = Graph()
    graph.to(Broken, name="b")
    [problem] = problems_of(graph)
    assert problem == Problem("b", "constructing Broken failed: RuntimeError: cannot start")


def test_all_problems_are_reported_together() -> None:
    graph = Graph()
    graph.to(inc, name="a").to(double, name="a")
    graph.add_step(double, name="c", after="missing")
    graph.to("nope.nothing:x", name="d")
    graph.to(Multiply, name="e", class_args={"bad": 1})
    with pytest.raises(GraphError) as caught:
        graph.validate()
    error = caught.value
    steps = {problem.step for problem in error.problems}
    assert steps == {"a", "c", "d", "e"}
    assert "4 problems" in str(error)
    for name in ("'a'", "'c'", "'d'", "'e'"):
        assert name in str(error)


def test_unknown_on_error_target() -> None:
    graph = Graph()
    graph.to(inc, name="a", on_error="ghost")
    assert problems_of(graph) == [Problem("a", "on_error names an unknown step 'ghost'")]


def test_unknown_graph_on_error_target() -> None:
    graph = Graph()
    graph.to(inc)
    graph.on_error = "ghost"
    assert problems_of(graph) == [Problem(None, "on_error names an unknown step 'ghost'")]


def test_empty_graph() -> None:
    assert "no steps" in problems_of(Graph())[0].message


def test_router_without_routes() -> None:
    graph = Graph()
    graph.add_router("r")
    [problem] = problems_of(graph)
    assert problem.step == "r"
    assert "no routes" in problem.message


def test_router_default_route_must_exist() -> None:
    graph = Graph.router(default_route="m9")
    graph.add_route("m1", inc)
    [problem] = problems_of(graph)
    assert "default_route 'm9'" in problem.message


def test_router_class_needs_a_select_method() -> None:
    graph = Graph()
    graph.add_router("r")
    graph._replace(0, class_name="tests.unit.sample_steps:Multiply")
    graph["r"].add_route("m1", inc)
    [problem] = problems_of(graph)
    assert "select(event, routes)" in problem.message


def test_bad_route_is_named() -> None:
    graph = Graph.router()
    graph.add_route("m1", "nope.nowhere:Model")
    [problem] = problems_of(graph)
    assert problem.step == "m1"


def test_bad_dotted_paths() -> None:
    graph = Graph()
    graph.to(double, name="d", input_path="a..b", result_path="")
    messages = sorted(problem.message for problem in problems_of(graph))
    assert messages == [
        "input_path 'a..b' is not a dotted path like 'a.b'",
        "result_path '' is not a dotted path like 'a.b'",
    ]


def test_class_args_on_a_function() -> None:
    graph = Graph()
    graph.to("tests.unit.sample_steps:inc", name="f", class_args={"x": 1})
    [problem] = problems_of(graph)
    assert "class_args are given but the step is a function" in problem.message


def test_error_handlers_that_handle_each_other_form_a_cycle() -> None:
    graph = Graph()
    graph.to(inc, name="a", on_error="h1")
    graph.to(inc, name="h1", on_error="h2")
    graph.to(inc, name="h2", on_error="h1")
    with pytest.raises(GraphError, match="cycle"):
        graph.mock_server()


def test_only_error_handlers_is_no_entry() -> None:
    graph = Graph()
    graph.to(inc, name="h")
    graph.on_error = "h"
    with pytest.raises(GraphError, match="no entry step"):
        graph.mock_server()


def test_unknown_builder_option_lists_the_allowed_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown step option.*allowed: blocking, class_args"):
        Graph().to(inc, classargs={})


def test_handler_option_on_a_function_is_rejected() -> None:
    with pytest.raises(TypeError, match="'handler' names a method"):
        Graph().to(inc, handler="do")


def test_router_graph_has_no_steps() -> None:
    with pytest.raises(GraphError, match="add_route"):
        Graph.router().to(inc)


def test_add_route_on_a_flow_explains_add_router() -> None:
    with pytest.raises(GraphError, match="add_router"):
        Graph().add_route("m", inc)


def test_add_route_on_a_task_step() -> None:
    with pytest.raises(GraphError, match="not a router"):
        Graph().to(inc).add_route("m", double)


def test_generator_function_and_generator_method_steps() -> None:
    def numbers(x: int) -> Iterator[int]:
        yield x

    class Numbers:
        def do(self, x: int) -> Iterator[int]:
            yield x

    graph = Graph()
    graph.to(numbers).to(Numbers)
    messages = {problem.step: problem.message for problem in problems_of(graph)}
    assert set(messages) == {"numbers", "Numbers"}
    assert all("generator steps are not supported" in m for m in messages.values())


def test_a_step_cannot_handle_its_own_errors() -> None:
    graph = Graph()
    graph.to(inc, name="a", on_error="a")
    assert problems_of(graph) == [Problem("a", "a step cannot be its own error handler")]


def test_input_path_on_a_full_event_step() -> None:
    graph = Graph()
    graph.to(sample_steps.EventStep, name="ev", input_path="a")
    graph.to(sample_steps.catch, name="fn", full_event=True, input_path="a")
    problems = problems_of(graph)
    assert {problem.step for problem in problems} == {"ev", "fn"}
    assert all("no effect on a full-event step" in problem.message for problem in problems)
