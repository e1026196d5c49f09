"""Engine behaviour, with identical expectations for the sync engine and the async engine."""

from __future__ import annotations

from typing import Any

import pytest

from servegraph import Event, Graph, StepError
from tests.conftest import Driver, cause_text
from tests.unit import sample_steps
from tests.unit.sample_steps import EventStep, Multiply, boom, catch, double, inc


def test_chain_answers_with_the_responder(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(double).respond()
    assert drive(graph)(3) == 8


def test_chain_without_responder_answers_with_the_last_step(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(double)
    assert drive(graph)(3) == 8


def test_responder_in_the_middle_answers_but_later_steps_still_run(drive: Driver) -> None:
    seen: list[int] = []

    def record(x: int) -> int:
        seen.append(x)
        return x

    graph = Graph()
    graph.to(inc).respond().to(double).to(record)
    assert drive(graph)(1) == 2
    assert seen == [4]


def test_steps_from_import_paths(drive: Driver) -> None:
    graph = Graph()
    graph.to("tests.unit.sample_steps:inc").to("tests.unit.sample_steps.double").respond()
    assert drive(graph)(1) == 4


def test_class_step_with_class_args(drive: Driver) -> None:
    graph = Graph()
    graph.to(Multiply, class_args={"factor": 5}).respond()
    assert drive(graph)(2) == 10


def test_class_step_with_a_named_handler_method(drive: Driver) -> None:
    graph = Graph()
    graph.to(sample_steps.NoDo, handler="run").respond()
    assert drive(graph)("same") == "same"


def test_mlrun_constructor_gets_context_name_kwargs_and_post_init(drive: Driver) -> None:
    graph = Graph(params={"p": 7})
    graph.to(sample_steps.MLRunStyle, name="styled", class_args={"extra": 1}).respond()
    assert drive(graph)({"a": 1}) == {
        "a": 1,
        "step": "styled",
        "kwargs": {"extra": 1},
        "initialised": True,
        "param": 7,
    }


def test_do_event_gets_the_full_event(drive: Driver) -> None:
    graph = Graph()
    graph.to(EventStep).respond()
    answer = drive(graph)({"x": 1}, path="/some/where", method="PUT")
    assert answer == {"path": "/some/where", "method": "PUT", "body": {"x": 1}}


def test_full_event_function_may_return_a_body(drive: Driver) -> None:
    def describe(event: Event) -> dict[str, Any]:
        return {"id": event.id, "headers": dict(event.headers)}

    graph = Graph()
    graph.to(describe, full_event=True).respond()
    answer = drive(graph)({}, headers={"servegraph-event-id": "e-1", "x": "y"})
    assert answer == {"id": "e-1", "headers": {"servegraph-event-id": "e-1", "x": "y"}}


def test_input_path_and_result_path(drive: Driver) -> None:
    graph = Graph()
    graph.to(double, input_path="in.x", result_path="out.y").respond()
    assert drive(graph)({"in": {"x": 4}}) == {"in": {"x": 4}, "out": {"y": 8}}


def test_missing_input_path_names_the_step_and_key(drive: Driver) -> None:
    graph = Graph()
    graph.to(double, name="twice", input_path="in.x").respond()
    with pytest.raises(StepError, match=r"in\.x") as caught:
        drive(graph)({"in": {}})
    assert caught.value.step == "twice"


def test_result_path_needs_a_dict_body(drive: Driver) -> None:
    graph = Graph()
    graph.to(double, name="twice", result_path="y").respond()
    with pytest.raises(StepError, match="needs a dict body") as caught:
        drive(graph)(3)
    assert caught.value.step == "twice"


def test_none_stops_the_event(drive: Driver) -> None:
    reached: list[int] = []

    def keep_even(x: int) -> int | None:
        return x if x % 2 == 0 else None

    def record(x: int) -> int:
        reached.append(x)
        return x

    graph = Graph()
    graph.to(keep_even).to(record).respond()
    send = drive(graph)
    assert send(3) is None
    assert send(4) == 4
    assert reached == [4]


def test_stop_on_none_false_passes_none_on(drive: Driver) -> None:
    def nothing(x: int) -> None:
        return None

    def describe(x: Any) -> str:
        return repr(x)

    graph = Graph()
    graph.stop_on_none = False
    graph.to(nothing).to(describe).respond()
    assert drive(graph)(1) == "None"


def test_branches_get_their_own_copy_of_the_body(drive: Driver) -> None:
    def mark_a(body: dict[str, Any]) -> dict[str, Any]:
        body["a"] = True
        return body

    def mark_b(body: dict[str, Any]) -> dict[str, Any]:
        body["b"] = True
        return body

    graph = Graph()
    start = graph.to(inc, name="start", input_path="n", result_path="n")
    start.to(mark_a)
    start.to(mark_b).respond()
    assert drive(graph)({"n": 1}) == {"n": 2, "b": True}


def test_branches_keep_the_event_id(drive: Driver) -> None:
    ids: list[str] = []

    def remember(event: Event) -> Event:
        ids.append(event.id)
        return event

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(remember, name="left", full_event=True)
    start.to(remember, name="right", full_event=True)
    drive(graph)(1, headers={"servegraph-event-id": "same"})
    assert ids == ["same", "same"]


def test_without_responder_the_first_branch_to_finish_in_order_answers(drive: Driver) -> None:
    def drop(x: int) -> None:
        return None

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(drop, name="first")
    start.to(double, name="second")
    start.to(inc, name="third")
    assert drive(graph)(1) == 4


def test_merge_step_runs_once_per_arriving_branch(drive: Driver) -> None:
    arrivals: list[int] = []

    def merge(x: int) -> int:
        arrivals.append(x)
        return x

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="left")
    start.to(inc, name="right")
    graph.add_step(merge, after=["left", "right"]).respond()
    assert drive(graph)(1) == 4
    assert arrivals == [4, 3]


def test_several_entry_steps_each_get_the_event(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc, name="one").respond()
    graph.to(double, name="two")
    assert drive(graph)(5) == 6


def test_step_error_without_handler_names_the_step_and_the_cause(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(boom, name="exploder").to(double)
    with pytest.raises(StepError) as caught:
        drive(graph)(1)
    error = caught.value
    assert error.step == "exploder"
    assert cause_text(error) == "ValueError: boom on 2"
    assert error.__cause__ is error.cause
    assert str(error) == "step 'exploder' failed: ValueError: boom on 2"
    assert error.event_id


def test_step_error_handler_gets_the_event_and_answers(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(boom, name="exploder").to(double).respond()
    graph["exploder"].error_handler(catch, full_event=True)
    assert drive(graph)(1) == {"caught": "exploder", "cause": "boom on 2", "body": 2}


def test_graph_error_handler_catches_steps_without_their_own(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(boom, name="exploder").respond()
    graph.error_handler(catch, full_event=True)
    assert drive(graph)(1) == {"caught": "exploder", "cause": "boom on 2", "body": 2}


def test_step_handler_wins_over_the_graph_handler(drive: Driver) -> None:
    def graph_level(event: Event) -> str:
        return "graph"

    def step_level(event: Event) -> str:
        return "step"

    graph = Graph()
    graph.to(boom, name="exploder").respond()
    graph["exploder"].error_handler(step_level, full_event=True)
    graph.error_handler(graph_level, full_event=True)
    assert drive(graph)(1) == "step"


def test_error_handler_can_lead_to_more_steps(drive: Driver) -> None:
    def recover(event: Event) -> int:
        return 100

    graph = Graph()
    graph.to(boom, name="exploder").respond()
    handler = graph["exploder"].error_handler(recover, full_event=True)
    handler.to(inc, name="after_recovery")
    assert drive(graph)(1) == 101


def test_error_in_a_handler_raises_naming_the_handler(drive: Driver) -> None:
    graph = Graph()
    graph.to(boom, name="exploder").respond()
    graph["exploder"].error_handler(boom, name="bad_handler")
    with pytest.raises(StepError) as caught:
        drive(graph)(1)
    assert caught.value.step == "bad_handler"


def test_handled_error_in_a_branch_takes_precedence_over_the_responder(drive: Driver) -> None:
    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="main").respond()
    start.to(boom, name="side")
    graph["side"].error_handler(catch, full_event=True)
    assert drive(graph)(1) == {"caught": "side", "cause": "boom on 2", "body": 2}


def test_error_in_a_branch_without_handler_raises(drive: Driver) -> None:
    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="main").respond()
    start.to(boom, name="side")
    with pytest.raises(StepError) as caught:
        drive(graph)(1)
    assert caught.value.step == "side"


def test_router_topology_routes_by_model_path(drive: Driver) -> None:
    graph = Graph.router()
    graph.add_route("m1", Multiply, class_args={"factor": 10})
    graph.add_route("m2", Multiply, class_args={"factor": 100})
    send = drive(graph)
    assert send(2, path="/v2/models/m1/infer") == 20
    assert send(2, path="/v2/models/m2/infer") == 200
    assert send(2, path="/m2") == 200


def test_router_routes_by_body_model_then_default(drive: Driver) -> None:
    def echo(body: dict[str, Any]) -> str:
        return "a"

    def other(body: dict[str, Any]) -> str:
        return "b"

    graph = Graph.router(default_route="b")
    graph.add_route("a", echo).add_route("b", other)
    send = drive(graph)
    assert send({"model": "a"}) == "a"
    assert send({}) == "b"


def test_router_versioned_route(drive: Driver) -> None:
    graph = Graph.router()
    graph.add_route("m:v1", inc).add_route("m:v2", double)
    assert drive(graph)(5, path="/v2/models/m/versions/v2/infer") == 10


def test_router_unknown_route_is_a_routing_error(drive: Driver) -> None:
    graph = Graph.router()
    graph.add_route("m1", inc).add_route("m2", double)
    with pytest.raises(StepError) as caught:
        drive(graph)(1, path="/v2/models/nope/infer")
    assert caught.value.step == "router"
    assert cause_text(caught.value) == (
        "RoutingError: router 'router': no route named 'nope'; known routes: m1, m2"
    )


def test_router_inside_a_flow(drive: Driver) -> None:
    graph = Graph()
    start = graph.to(inc, name="start")
    router = graph.add_router("models", after=start.name)
    router.add_route("m1", Multiply, class_args={"factor": 3})
    router.to(double, name="post").respond()
    assert drive(graph)(1, path="/v2/models/m1/infer") == 12


def test_route_error_names_the_route(drive: Driver) -> None:
    graph = Graph.router()
    graph.add_route("bad", boom)
    with pytest.raises(StepError) as caught:
        drive(graph)(1)
    assert caught.value.step == "bad"


def test_route_error_reaches_the_router_error_handler(drive: Driver) -> None:
    graph = Graph()
    router = graph.add_router("models")
    router.add_route("bad", boom)
    router.respond()
    router.error_handler(catch, full_event=True)
    assert drive(graph)(1) == {"caught": "bad", "cause": "boom on 1", "body": 1}


def test_step_objects_are_built_once_per_server(drive: Driver) -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def do(self, x: int) -> int:
            self.count += 1
            return self.count

    graph = Graph()
    graph.to(Counter).respond()
    send = drive(graph)
    assert [send(0), send(0), send(0)] == [1, 2, 3]


def test_a_chain_passes_the_body_on_without_copying_it() -> None:
    def same(body: dict[str, Any]) -> dict[str, Any]:
        return body

    body: dict[str, Any] = {"a": 1}
    graph = Graph()
    graph.to(same, name="one").to(same, name="two").respond()
    assert graph.mock_server(engine="sync").test(body=body) is body
    assert graph.mock_server(engine="async").test(body=body) is body


def test_the_sync_engine_never_touches_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        message = "the sync engine used asyncio"
        raise AssertionError(message)

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double).respond()
    start.to(boom, name="side").error_handler(catch, full_event=True)
    server = graph.mock_server()
    monkeypatch.setattr("asyncio.new_event_loop", forbidden)
    monkeypatch.setattr("asyncio.get_event_loop", forbidden)
    monkeypatch.setattr("asyncio.TaskGroup", forbidden)
    assert server.test(body=1) == {"caught": "side", "cause": "boom on 2", "body": 2}
