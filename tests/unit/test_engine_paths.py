"""Less common shapes: responders inside branches, several errors, custom route selectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from servegraph import Event, Graph, StepError
from tests.conftest import Driver, cause_text
from tests.unit.sample_steps import async_inc, boom, catch, double, inc


class FirstRoute:
    """A router class: always the first route (records its constructor argument)."""

    def __init__(self, label: str = "first") -> None:
        self.label = label

    def select(self, event: Event, routes: Sequence[str]) -> str:
        return routes[0]


class PostInitNoMode:
    """servegraph-style post_init without MLRun's mode argument."""

    def __init__(self) -> None:
        self.ready = False

    def post_init(self) -> None:
        self.ready = True

    def do(self, x: int) -> bool:
        return self.ready


def test_responder_in_the_middle_of_a_branch(drive: Driver) -> None:
    seen: list[int] = []

    def record(x: int) -> None:
        seen.append(x)

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="answer").respond().to(record)
    start.to(inc, name="other")
    assert drive(graph)(1) == 4
    assert seen == [4]


def test_step_after_the_responder_may_stop_the_event(drive: Driver) -> None:
    def drop(x: int) -> None:
        return None

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(double, name="answer").respond().to(drop).to(inc, name="never")
    start.to(inc, name="other")
    assert drive(graph)(1) == 4


def test_async_responder_in_a_branch_then_more_steps(drive_async: Driver) -> None:
    def drop(x: int) -> None:
        return None

    graph = Graph()
    start = graph.to(async_inc, name="start")
    start.to(async_inc, name="answer").respond().to(async_inc, name="more").to(drop)
    start.to(async_inc, name="other")
    assert drive_async(graph)(1) == 3


def test_async_step_before_sync_only_branches(drive_async: Driver) -> None:
    graph = Graph()
    start = graph.to(async_inc, name="start")
    start.to(double, name="a").respond()
    start.to(inc, name="b")
    assert drive_async(graph)(1) == 4


def test_async_chain_continuing_into_a_sync_segment(drive_async: Driver) -> None:
    graph = Graph()
    start = graph.to(async_inc, name="start")
    start.to(inc, name="a")
    start.to(inc, name="b")
    graph.add_step(double, name="merge", after=["a", "b"]).respond()
    assert drive_async(graph)(1) == 6


def test_several_entries_in_an_async_graph(drive_async: Driver) -> None:
    graph = Graph()
    graph.to(async_inc, name="one")
    graph.to(double, name="two").respond()
    assert drive_async(graph)(5) == 10


def test_first_handled_error_in_branch_order_answers(drive: Driver) -> None:
    def handler_a(event: Event) -> str:
        return "a"

    def handler_b(event: Event) -> str:
        return "b"

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(boom, name="fail_a").error_handler(handler_a, full_event=True)
    start.to(boom, name="fail_b").error_handler(handler_b, full_event=True)
    assert drive(graph)(1) == "a"


def test_handled_errors_in_concurrent_branches(drive_async: Driver) -> None:
    async def afail(x: int) -> int:
        raise ValueError(x)

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(afail, name="fail_a").error_handler(catch, name="ca", full_event=True)
    start.to(afail, name="fail_b").error_handler(catch, name="cb", full_event=True)
    start.to(async_inc, name="ok").respond()
    assert drive_async(graph)(1) == {"caught": "fail_a", "cause": "2", "body": 2}


def test_error_handler_that_answers_through_a_responder(drive: Driver) -> None:
    def recover(event: Event) -> int:
        return 0

    graph = Graph()
    graph.to(boom, name="exploder")
    handler = graph["exploder"].error_handler(recover, full_event=True)
    handler.to(inc, name="respond_here").respond().to(double, name="after_answer")
    assert drive(graph)(1) == 1


def test_chain_success_answers_none_when_the_responder_is_after_a_handler(drive: Driver) -> None:
    graph = Graph()
    graph.to(inc, name="main")
    graph["main"].error_handler(catch, full_event=True).to(inc, name="answer").respond()
    assert drive(graph)(1) is None


def test_router_class_selects_the_route(drive: Driver) -> None:
    graph = Graph()
    router = graph.add_router("r")
    graph._replace(0, class_name="tests.unit.test_engine_paths:FirstRoute")
    router.add_route("a", inc).add_route("b", double)
    router.respond()
    assert drive(graph)(10, path="/v2/models/b/infer") == 11


def test_router_class_unresolvable_is_reported() -> None:
    graph = Graph()
    router = graph.add_router("r")
    graph._replace(0, class_name="tests.unit.test_engine_paths:Nothing")
    router.add_route("a", inc)
    with pytest.raises(Exception, match="has no attribute 'Nothing'"):
        graph.mock_server()


def test_router_with_no_route_selected_names_the_router(drive: Driver) -> None:
    graph = Graph.router()
    graph.add_route("a", inc).add_route("b", double)
    with pytest.raises(StepError, match="no route was selected; known routes: a, b") as caught:
        drive(graph)(1)
    assert caught.value.step == "router"


def test_post_init_without_mode(drive: Driver) -> None:
    graph = Graph()
    graph.to(PostInitNoMode).respond()
    assert drive(graph)(0) is True


def test_async_full_event_route_and_stopping_route(drive_async: Driver) -> None:
    async def describe(event: Event) -> Event:
        event.body = {"path": event.path}
        return event

    async def drop(x: Any) -> None:
        return None

    graph = Graph.router()
    graph.add_route("d", describe, full_event=True).add_route("x", drop)
    send = drive_async(graph)
    assert send(1, path="/v2/models/d/infer") == {"path": "/v2/models/d/infer"}
    assert send(1, path="/v2/models/x/infer") is None


def test_sync_route_stopping_the_event(drive: Driver) -> None:
    def drop(x: Any) -> None:
        return None

    graph = Graph()
    router = graph.add_router("r")
    router.add_route("x", drop)
    router.to(inc).respond()
    assert drive(graph)(1) is None


def test_a_body_that_cannot_be_copied_for_branches_names_the_step(drive: Driver) -> None:
    import threading

    def locked(x: int) -> dict[str, Any]:
        return {"lock": threading.Lock()}

    graph = Graph()
    start = graph.to(locked, name="make_lock")
    start.to(inc, name="a")
    start.to(inc, name="b")
    with pytest.raises(StepError) as caught:
        drive(graph)(1)
    assert caught.value.step == "make_lock"
    assert cause_text(caught.value).startswith("TypeError: ")
    assert "_thread.lock" in cause_text(caught.value)


def test_steps_after_the_responder_cannot_change_the_answer(drive: Driver) -> None:
    def tamper(body: dict[str, Any]) -> dict[str, Any]:
        body["tampered"] = True
        return body

    def fresh(body: dict[str, Any]) -> dict[str, Any]:
        return dict(body)

    chain = Graph()
    chain.to(fresh).respond().to(tamper)
    branched = Graph()
    branched.to(fresh).respond()
    branched.add_step(tamper, after="fresh")
    branched.add_step(tamper, name="tamper_too", after="fresh")
    for graph in (chain, branched):
        assert drive(graph)({"a": 1}) == {"a": 1}
