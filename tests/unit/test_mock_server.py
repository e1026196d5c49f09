"""The mock server: request shaping, body decoding, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from servegraph import Event, Graph, MockServer, ProtocolError
from tests.unit import sample_steps
from tests.unit.sample_steps import Closable, async_inc, inc


def describe(event: Event) -> dict[str, Any]:
    return {
        "body": event.body,
        "method": event.method,
        "path": event.path,
        "id": event.id,
        "content_type": event.content_type,
    }


def describing_server() -> MockServer:
    graph = Graph()
    graph.to(describe, full_event=True).respond()
    return graph.mock_server()


def test_method_defaults_to_post_with_a_body_and_get_without() -> None:
    server = describing_server()
    assert server.test(body={"a": 1})["method"] == "POST"
    assert server.test()["method"] == "GET"
    assert server.test(body=1, method="PUT")["method"] == "PUT"


def test_json_text_bodies_are_decoded() -> None:
    server = describing_server()
    assert server.test(body='{"a": [1, 2]}')["body"] == {"a": [1, 2]}
    assert server.test(body=b"5")["body"] == 5


def test_non_json_text_without_content_type_stays_text() -> None:
    assert describing_server().test(body="plain words")["body"] == "plain words"


def test_text_with_a_non_json_content_type_is_not_decoded() -> None:
    answer = describing_server().test(body="[1]", content_type="text/plain")
    assert answer["body"] == "[1]"
    assert answer["content_type"] == "text/plain"


def test_bad_json_with_a_json_content_type_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        describing_server().test(body="{oops", content_type="application/json")


def test_event_id_from_argument_or_header() -> None:
    server = describing_server()
    assert server.test(body=1, event_id="given")["id"] == "given"
    assert server.test(body=1, headers={"servegraph-event-id": "hdr"})["id"] == "hdr"
    generated = server.test(body=1)["id"]
    assert isinstance(generated, str)
    assert len(generated) == 32


def test_path_is_passed_on() -> None:
    assert describing_server().test("/a/b", body=1)["path"] == "/a/b"


def test_graph_test_reuses_its_server_until_the_graph_changes() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def do(self, x: int) -> int:
            self.count += 1
            return self.count

    graph = Graph()
    step = graph.to(Counter)
    assert [graph.test(0), graph.test(0)] == [1, 2]
    step.respond()
    assert graph.test(0) == 1


def test_close_calls_step_close_hooks_once_per_object() -> None:
    sample_steps.CLOSED.clear()
    graph = Graph()
    graph.to(Closable, class_args={"label": "a"}).to(Closable, name="b", class_args={"label": "b"})
    with graph.mock_server() as server:
        assert server.test(body=1) == 1
    assert sample_steps.CLOSED == ["b", "a"]


def test_async_graph_is_driven_to_completion_by_test() -> None:
    graph = Graph()
    graph.to(async_inc).to(inc).respond()
    server = graph.mock_server()
    assert [server.test(body=i) for i in range(3)] == [2, 3, 4]
    server.wait_for_completion()
    server.close()


def test_atest_runs_inside_a_running_loop() -> None:
    graph = Graph()
    graph.to(async_inc).respond()
    server = graph.mock_server()

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(server.atest(body=i) for i in range(3))))

    assert asyncio.run(main()) == [1, 2, 3]


def test_run_event_takes_a_ready_event() -> None:
    server = describing_server()
    assert server.run_event(Event(7, id="x", path="/p"))["path"] == "/p"


def test_params_reach_the_context() -> None:
    graph = Graph(params={"p": "graph"})
    graph.to(sample_steps.MLRunStyle).respond()
    assert graph.mock_server(params={"p": "server"}).test(body={})["param"] == "server"
    assert graph.mock_server().test(body={})["param"] == "graph"


def test_verbose_logs_every_step_and_route(caplog: pytest.LogCaptureFixture) -> None:
    graph = Graph()
    router = graph.to(inc).to(async_inc, name="ainc").to(describe, full_event=True)
    router = graph.add_router("r", after="describe")
    router.add_route("only", sample_steps.double, input_path="body", result_path="doubled")
    router.respond()
    with caplog.at_level(logging.DEBUG, logger="servegraph.engine"):
        answer = graph.mock_server(verbose=True).test(body=1, event_id="e")
    assert answer["doubled"] == 6
    lines = [record.getMessage() for record in caplog.records]
    assert lines[:2] == ["step inc: 1 -> 2", "step ainc: 2 -> 3"]
    assert [record.step for record in caplog.records] == [  # type: ignore[attr-defined]
        "inc",
        "ainc",
        "describe",
        "only",
        "r",
    ]


def test_quiet_servers_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    graph = Graph()
    graph.to(inc).respond()
    with caplog.at_level(logging.DEBUG, logger="servegraph.engine"):
        assert graph.mock_server().test(body=1) == 2
    assert caplog.records == []


def test_graph_test_rebuilds_when_params_change_directly() -> None:
    graph = Graph(params={"p": 1})
    graph.to(sample_steps.MLRunStyle).respond()
    assert graph.test({})["param"] == 1
    graph.params["p"] = 2
    assert graph.test({})["param"] == 2
