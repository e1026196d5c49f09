"""``astart()`` hooks: run once, before the first event, in every way of running a graph."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from servegraph import Graph
from tests.server.asgi import lifespan, make_app


class Connects:
    """A step that must connect before it serves (as table and remote steps do)."""

    starts: list[str]

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.starts = []
        self.connected = False

    async def astart(self) -> None:
        self.starts.append("start")
        await asyncio.sleep(0.01)
        if self.fail_times:
            self.fail_times -= 1
            message = "cannot reach the table at memory://nowhere"
            raise ConnectionError(message)
        self.connected = True

    async def do(self, body: Any) -> Any:
        assert self.connected
        return body


def connecting_step(server: Any) -> Connects:
    return next(step for step in server.plan.instances if isinstance(step, Connects))


def test_the_mock_server_starts_steps_once_before_the_first_event() -> None:
    graph = Graph()
    graph.to(Connects)
    server = graph.mock_server()
    assert server.test(body=1) == 1
    assert server.test(body=2) == 2
    assert connecting_step(server).starts == ["start"]
    server.close()


def test_concurrent_first_events_wait_for_one_start() -> None:
    async def main() -> list[Any]:
        graph = Graph()
        graph.to(Connects)
        server = graph.mock_server()
        try:
            answers = await asyncio.gather(*(server.atest(body=n) for n in range(5)))
            assert connecting_step(server).starts == ["start"]
            return list(answers)
        finally:
            await server.aclose()

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_a_failed_start_fails_the_event_and_the_next_event_tries_again() -> None:
    graph = Graph()
    graph.to(Connects, class_args={"fail_times": 1})
    server = graph.mock_server()
    with pytest.raises(ConnectionError, match="memory://nowhere"):
        server.test(body=1)
    assert server.test(body=2) == 2
    assert connecting_step(server).starts == ["start", "start"]
    server.close()


def test_a_failed_start_fails_server_startup_with_its_message() -> None:
    graph = Graph()
    graph.to(Connects, class_args={"fail_times": 1}).respond()
    sent = asyncio.run(lifespan(make_app(graph), "startup"))
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "memory://nowhere" in sent[0]["message"]
