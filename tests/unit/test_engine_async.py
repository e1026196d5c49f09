"""Async user code: awaited by the async engine, rejected by the sync engine at build time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from servegraph import Event, Graph, GraphError, StepError
from tests.conftest import Driver, cause_text
from tests.unit.sample_steps import AsyncDouble, async_inc, boom, catch, double, inc


def test_sync_and_async_steps_mix_in_one_graph(drive_async: Driver) -> None:
    graph = Graph()
    graph.to(inc).to(async_inc).to(AsyncDouble).to(double).respond()
    assert drive_async(graph)(1) == 12


def test_auto_engine_picks_async_when_a_step_is_async() -> None:
    graph = Graph()
    graph.to(async_inc).respond()
    server = graph.mock_server()
    assert server.engine == "async"
    assert server.test(body=1) == 2


def test_auto_engine_picks_sync_when_no_step_is_async() -> None:
    graph = Graph()
    graph.to(inc).respond()
    assert graph.mock_server().engine == "sync"


def test_sync_engine_rejects_async_steps_at_build_time() -> None:
    graph = Graph()
    graph.to(inc).to(async_inc, name="slow").respond()
    with pytest.raises(GraphError, match=r"'slow'.*engine='async'"):
        graph.mock_server(engine="sync")


def test_async_branches_run_concurrently(drive_async: Driver) -> None:
    # Each branch waits for the other: run one after the other, they would never finish.
    handshake: dict[str, asyncio.Event] = {}

    async def left(x: int) -> str:
        handshake.setdefault("left", asyncio.Event()).set()
        await asyncio.wait_for(handshake.setdefault("right", asyncio.Event()).wait(), 2)
        return "left"

    async def right(x: int) -> str:
        handshake.setdefault("right", asyncio.Event()).set()
        await asyncio.wait_for(handshake.setdefault("left", asyncio.Event()).wait(), 2)
        return "right"

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(left).respond()
    start.to(right)
    assert drive_async(graph)(1) == "left"


def test_concurrent_branches_answer_in_declaration_order(drive_async: Driver) -> None:
    async def slow(x: int) -> str:
        await asyncio.sleep(0.01)
        return "slow"

    async def fast(x: int) -> str:
        return "fast"

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(slow)
    start.to(fast)
    assert drive_async(graph)(1) == "slow"


def test_async_step_error_names_the_step(drive_async: Driver) -> None:
    async def explode(x: int) -> int:
        await asyncio.sleep(0)
        raise KeyError(x)

    graph = Graph()
    graph.to(inc).to(explode).respond()
    with pytest.raises(StepError) as caught:
        drive_async(graph)(1)
    assert caught.value.step == "explode"
    assert cause_text(caught.value) == "KeyError: 2"


def test_async_error_handler(drive_async: Driver) -> None:
    async def acatch(event: Event) -> dict[str, Any]:
        await asyncio.sleep(0)
        return catch(event)

    graph = Graph()
    graph.to(async_inc).to(boom, name="exploder").respond()
    graph["exploder"].error_handler(acatch, full_event=True)
    assert drive_async(graph)(1) == {"caught": "exploder", "cause": "boom on 2", "body": 2}


def test_error_in_a_concurrent_branch_raises_the_step_error(drive_async: Driver) -> None:
    async def waits(x: int) -> int:
        await asyncio.sleep(1)
        return x

    async def fails(x: int) -> int:
        raise ValueError(x)

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(waits).respond()
    start.to(fails)
    with pytest.raises(StepError) as caught:
        drive_async(graph)(1)
    assert caught.value.step == "fails"


def test_async_full_event_and_paths(drive_async: Driver) -> None:
    async def tag(event: Event) -> Event:
        event.body = {**event.body, "path": event.path}
        return event

    graph = Graph()
    graph.to(tag, full_event=True).to(async_inc, input_path="n", result_path="m").respond()
    assert drive_async(graph)({"n": 1}, path="/p") == {"n": 1, "path": "/p", "m": 2}


def test_async_routes(drive_async: Driver) -> None:
    graph = Graph.router()
    graph.add_route("a", async_inc).add_route("b", AsyncDouble)
    send = drive_async(graph)
    assert send(3, path="/v2/models/a/infer") == 4
    assert send(3, path="/v2/models/b/infer") == 6


def test_async_none_stops_the_event(drive_async: Driver) -> None:
    async def drop(x: int) -> None:
        return None

    graph = Graph()
    graph.to(drop).to(inc).respond()
    assert drive_async(graph)(1) is None


def test_callable_object_with_async_call_is_awaited(drive_async: Driver) -> None:
    class Model:
        async def __call__(self, x: int) -> int:
            return x + 10

    graph = Graph()
    graph.to(Model).respond()
    assert drive_async(graph)(1) == 11
