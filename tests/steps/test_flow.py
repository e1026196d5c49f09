"""Flat-map, choice, merge, batch and reduce: the steps that run the steps after them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from servegraph import Event, Graph
from servegraph.errors import GraphError, StepError
from servegraph.event import EVENT_ID_HEADER
from servegraph.steps.flow import Batch, Choice, FlatMap, Merge, Reduce
from servegraph.steps.transforms import Filter, Map
from tests.conftest import Driver


class Recorder:
    """A full-event step that records what reaches it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __call__(self, event: Event) -> Event:
        self.events.append((event.id, event.body))
        return event


def record(graph: Graph, after: str, recorder: Recorder, name: str = "record") -> None:
    graph.add_step(recorder, name, after=after, full_event=True)


# -- flat-map --------------------------------------------------------------------------------


def test_flat_map_sends_each_item_on_with_a_derived_id(drive: Driver) -> None:
    recorder = Recorder()
    graph = Graph()
    graph.to(FlatMap("event['items']"), name="split").to(Map("event * 10"), name="scale")
    record(graph, "scale", recorder)
    answer = drive(graph)({"items": [1, 2, 3]}, headers={EVENT_ID_HEADER: "e1"})
    assert answer == 10  # the first item's answer
    assert recorder.events == [("e1:0", 10), ("e1:1", 20), ("e1:2", 30)]


def test_flat_map_of_nothing_answers_none(drive: Driver) -> None:
    graph = Graph()
    graph.to(FlatMap("event")).to(Map("event + 1"))
    assert drive(graph)([]) is None


def test_flat_map_error_names_the_step(drive: Driver) -> None:
    graph = Graph()
    graph.to(FlatMap("event['missing']"), name="split").to(Map("event"))
    with pytest.raises(StepError, match="step 'split'"):
        drive(graph)({"items": []})


def test_flat_map_before_an_async_step(drive_async: Driver) -> None:
    async def slow_double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    recorder = Recorder()
    graph = Graph()
    graph.to(FlatMap("event")).to(slow_double, name="double")
    record(graph, "double", recorder)
    assert drive_async(graph)([4, 5]) == 8
    assert [body for _, body in recorder.events] == [8, 10]


# -- choice ----------------------------------------------------------------------------------


def choice_graph(choice: Choice) -> Graph:
    graph = Graph()
    router = graph.to(choice, name="route")
    router.to(Map("'big'"), name="big")
    router.to(Map("'small'"), name="small")
    router.to(Map("'even'"), name="even")
    return graph


def test_choice_takes_the_first_outlet_whose_condition_holds(drive: Driver) -> None:
    send = drive(
        choice_graph(Choice({"big": "event > 10", "even": "event % 2 == 0"}, default="small"))
    )
    assert send(100) == "big"
    assert send(4) == "even"
    assert send(3) == "small"


def test_choice_all_matches_sends_to_every_outlet_that_holds(drive: Driver) -> None:
    recorder = Recorder()
    graph = choice_graph(Choice({"big": "event > 10", "even": "event % 2 == 0"}, all_matches=True))
    record(graph, "big", recorder, "r1")
    record(graph, "even", recorder, "r2")
    send = drive(graph)
    assert send(12) == "big"
    assert sorted(body for _, body in recorder.events) == ["big", "even"]
    assert send(3) is None  # no outlet and no default: the event stops


def test_choice_naming_an_outlet_that_does_not_follow_it_fails_at_build() -> None:
    graph = choice_graph(Choice({"huge": "event > 10"}))
    with pytest.raises(GraphError, match="step 'route': choice names outlet\\(s\\) 'huge'"):
        graph.mock_server()


class Parity(Choice):
    def select_outlets(self, body: Any) -> Sequence[str]:
        return ["even"] if body % 2 == 0 else ["small", "nowhere"]


def test_choice_subclass_selects_outlets_and_unknown_ones_fail_the_event() -> None:
    server = choice_graph(Parity()).mock_server()
    assert server.test(body=2) == "even"
    with pytest.raises(StepError, match="selected outlet 'nowhere' does not follow this step"):
        server.test(body=3)


def test_choice_condition_errors_name_the_step(drive: Driver) -> None:
    send = drive(choice_graph(Choice({"big": "event['x'] > 1"})))
    with pytest.raises(StepError, match="step 'route'"):
        send(3)


# -- merge -----------------------------------------------------------------------------------


def test_merge_waits_for_every_branch_and_combines_by_name(drive: Driver) -> None:
    graph = Graph()
    graph.to(Map("event + 1"), name="plus")
    graph.to(Map("event * 2"), name="times")
    graph.add_step(Merge(), "merge", after=["plus", "times"]).to(
        Map("event['plus'] + event['times']"), name="total"
    )
    assert drive(graph)(5) == 16


def test_merge_after_async_branches_that_run_concurrently(drive_async: Driver) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 100

    graph = Graph()
    graph.to(slow, name="slow")
    graph.to(Map("event - 1"), name="fast")
    graph.add_step(Merge(), "merge", after=["slow", "fast"])
    assert drive_async(graph)(1) == {"slow": 101, "fast": 0}


def test_merge_drops_the_oldest_waiting_events_beyond_max_pending() -> None:
    graph = Graph()
    graph.to(Map("event"), name="a")
    graph.to(Filter("False"), name="never")  # this branch never reaches the merge
    graph.add_step(Merge(max_pending=2), "merge", after=["a", "never"])
    server = graph.mock_server()
    for n in range(5):
        assert server.test(body=n) is None
    merge = next(step for step in server.plan.instances if isinstance(step, Merge))
    assert len(merge.pending) == 2
    assert merge.dropped == 3


# -- batch -----------------------------------------------------------------------------------


def test_batch_under_the_sync_engine_fills_by_count_and_flushes_at_close() -> None:
    seen: list[list[int]] = []

    def total(batch: list[int]) -> int:
        seen.append(batch)
        return sum(batch)

    graph = Graph()
    graph.to(Batch(max_events=3)).to(Map(total))
    server = graph.mock_server(engine="sync")
    assert [server.test(body=n) for n in range(7)] == [None, None, 3, None, None, 12, None]
    server.close()
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]


def test_batch_events_wait_for_their_batch_and_answer_its_result() -> None:
    async def main() -> list[Any]:
        graph = Graph()
        graph.to(Batch(max_events=3, flush_after_s=0.05)).to(Map("sum(event)"))
        server = graph.mock_server(engine="async")
        try:
            return list(await asyncio.gather(*(server.atest(body=n) for n in range(7))))
        finally:
            await server.aclose()

    started = time.monotonic()
    assert asyncio.run(main()) == [3, 3, 3, 12, 12, 12, 6]
    assert time.monotonic() - started < 1.0  # the last, partial batch went at 50 ms


def test_batch_per_key() -> None:
    async def main() -> list[Any]:
        graph = Graph()
        graph.to(Batch(max_events=2, flush_after_s=0.05, key="user")).to(Map("len(event)"))
        server = graph.mock_server(engine="async")
        try:
            bodies = [{"user": n % 2, "n": n} for n in range(5)]
            return list(await asyncio.gather(*(server.atest(body=b) for b in bodies)))
        finally:
            await server.aclose()

    assert asyncio.run(main()) == [2, 2, 2, 2, 1]


def test_a_failed_batch_fails_every_event_in_it() -> None:
    async def main() -> list[Any]:
        graph = Graph()
        graph.to(Batch(max_events=2)).to(Map("event[5]"), name="pick")
        server = graph.mock_server(engine="async")
        try:
            return list(
                await asyncio.gather(
                    *(server.atest(body=n) for n in range(2)), return_exceptions=True
                )
            )
        finally:
            await server.aclose()

    errors = asyncio.run(main())
    assert all(isinstance(error, StepError) and error.step == "pick" for error in errors)


def test_batch_missing_key_field_names_the_field() -> None:
    graph = Graph()
    graph.to(Batch(max_events=2, key="user"), name="group")
    with pytest.raises(StepError, match="batch key field 'user' is missing from the body"):
        graph.mock_server(engine="sync").test(body={"n": 1})


def test_batch_in_every_mode_answers_when_its_batch_ran(drive: Driver) -> None:
    graph = Graph()
    graph.to(Batch(max_events=1)).to(Map("len(event)"))
    send = drive(graph)
    assert [send(n) for n in range(3)] == [1, 1, 1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "batch needs max_events, flush_after_s or both"),
        ({"max_events": 0}, "max_events must be a positive integer"),
        ({"flush_after_s": 0}, "flush_after_s must be positive"),
    ],
)
def test_batch_arguments_are_checked(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        Batch(**arguments)


# -- reduce ----------------------------------------------------------------------------------


def test_reduce_sends_its_value_on_when_the_graph_closes() -> None:
    totals: list[int] = []
    graph = Graph()
    graph.to(Reduce("accumulator + event", initial=0)).to(Map(totals.append))
    server = graph.mock_server()
    assert [server.test(body=n) for n in range(5)] == [None] * 5
    assert totals == []
    server.close()
    assert totals == [10]


def test_reduce_every_event_carries_the_value_so_far(drive: Driver) -> None:
    graph = Graph()
    graph.to(Reduce("accumulator + [event]", initial=[], emit_every_event=True)).to(
        Map("len(event)")
    )
    send = drive(graph)
    assert [send(n) for n in range(3)] == [1, 2, 3]


def test_flow_steps_save_and_load(tmp_path: Any) -> None:
    graph = Graph()
    route = graph.to(Choice({"a": "event > 0"}, default="b"), name="route")
    route.to(Batch(max_events=2), name="a")
    route.to(FlatMap("[event, event]"), name="b")
    graph.add_step(Merge(), "m", after=["a", "b"])
    graph.to(Reduce("accumulator + event", initial=0), name="sum")
    path = tmp_path / "graph.yaml"
    graph.save(path)
    loaded = Graph.load(path)
    assert loaded.to_dict() == graph.to_dict()
    assert loaded.spec.step("route").class_args == {
        "conditions": {"a": "event > 0"},
        "default": "b",
        "all_matches": False,
    }


def test_a_timed_batch_needs_the_async_engine() -> None:
    graph = Graph()
    graph.to(Batch(max_events=10, flush_after_s=0.5), name="group")
    with pytest.raises(GraphError, match="async steps \\('group'\\) need the async engine"):
        graph.mock_server(engine="sync")
    assert graph.mock_server().engine == "async"  # auto picks it
