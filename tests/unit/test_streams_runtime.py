"""The stream runtime through the mock server on its memory broker: segments, queue steps,
answers, event ids, dead letters, ordering per key, concurrency bounds and output streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest

from servegraph import Event, Graph, GraphError, MockServer, StepError
from servegraph.graph.segments import segment_spec, segments
from servegraph.streams.base import Message
from servegraph.streams.envelope import Envelope, read_dead_letter
from servegraph.streams.memory import MemoryBackend
from tests.unit.sample_steps import boom, catch, double, inc


def read_stream(server: MockServer, stream: str) -> list[Message]:
    """Every message of a stream of the server's broker, read in a fresh consumer group."""
    assert server.streams is not None
    assert server.streams.broker is not None
    backend = MemoryBackend(stream, broker=server.streams.broker)
    return asyncio.run(backend.consume("inspect", "inspector", count=1000, block_ms=0))


def answer_of(message: Message) -> Any:
    """The answer an output-stream message carries."""
    return msgspec.json.decode(message.body, type=Envelope).body


async def publish_then_drain(server: MockServer, bodies: Iterable[Any]) -> None:
    """Run the front for every body (its queue step publishes), then the segments after it:
    the consumers see all the events at once, as a consumer with a backlog does."""
    assert server.streams is not None
    front = server.streams.runner()
    for body in bodies:
        await front.run(Event(body))
    await server.drain_streams()
    await server.aclose()


def two_segments() -> Graph:
    graph = Graph()
    graph.to(inc, name="first").to_queue("q", "memory://q").to(double, name="second")
    return graph


# -- segments ----------------------------------------------------------------------------------


def test_a_queue_cuts_the_graph_into_segments() -> None:
    spec = two_segments().spec
    assert segments(spec) == {"main": ("first", "q"), "q": ("second",)}
    assert [step.after for step in segment_spec(spec, "q").steps] == [()]


def test_an_unknown_segment_lists_the_segments() -> None:
    with pytest.raises(GraphError, match="unknown segment 'nope'; this graph's segments are: "):
        segment_spec(two_segments().spec, "nope")
    with pytest.raises(GraphError, match="'main', 'q'"):
        segment_spec(two_segments().spec, "nope")


def test_a_step_reached_from_two_segments_is_a_graph_error_naming_it() -> None:
    graph = two_segments()
    graph.add_step(inc, name="shared", after=["first", "second"])
    with pytest.raises(GraphError, match="reached from segments 'main', 'q'") as caught:
        graph.validate()
    assert [problem.step for problem in caught.value.problems] == ["shared"]
    with pytest.raises(GraphError, match="'shared'"):
        graph.mock_server()


def test_an_error_handler_of_a_step_after_a_queue_runs_in_its_segment() -> None:
    graph = Graph()
    graph.to(inc, name="first").to_queue("q", "memory://q").to(boom, name="exploder")
    graph["exploder"].error_handler(catch, full_event=True)
    assert segments(graph.spec)["q"] == ("exploder", "catch")
    server = graph.mock_server()
    server.test(body=1)
    assert server.results["q"] == [{"caught": "exploder", "cause": "boom on 2", "body": 2}]
    server.close()


# -- queue step validation -----------------------------------------------------------------------


def test_a_queue_step_without_a_stream_is_a_graph_error() -> None:
    graph = Graph.from_dict({"steps": {"q": {"kind": "queue"}}})
    with pytest.raises(GraphError, match="a queue step needs a stream URL") as caught:
        graph.validate()
    assert [problem.step for problem in caught.value.problems] == ["q"]


def test_a_queue_step_with_an_unknown_url_scheme_is_a_graph_error() -> None:
    graph = Graph()
    graph.to(inc).to_queue("q", "ftp://host/events")
    with pytest.raises(GraphError, match=r"unknown stream URL scheme in 'ftp://host/events'"):
        graph.validate()


def test_an_unknown_queue_option_lists_the_known_ones() -> None:
    graph = Graph()
    graph.to(inc).to_queue("q", "memory://q", retries=3)
    with pytest.raises(GraphError, match="unknown queue option") as caught:
        graph.validate()
    assert "retries" in str(caught.value)
    assert "known: group, key, batch, max_in_flight, max_deliveries" in str(caught.value)


def test_a_queue_step_with_a_handler_or_class_args_is_a_graph_error() -> None:
    queue = {
        "kind": "queue",
        "stream": "memory://q",
        "handler": "tests.unit.sample_steps:inc",
        "class_args": {"factor": 2},
    }
    graph = Graph.from_dict({"steps": {"q": queue}})
    with pytest.raises(GraphError, match="a queue step cannot set handler, class_args"):
        graph.validate()


def test_a_graph_with_queues_round_trips_through_a_dict() -> None:
    graph = Graph()
    first = graph.to(inc, name="first")
    queue = first.to_queue("q", "memory://q", max_deliveries=2, output="memory://answers")
    queue.to(double, name="second")
    loaded = Graph.from_dict(graph.to_dict())
    assert loaded.spec == graph.spec
    assert loaded.spec.step("q").options == {"max_deliveries": 2, "output": "memory://answers"}
    server = loaded.mock_server()
    server.test(body=1)
    assert server.results == {"q": [4]}
    server.close()


# -- answers and event ids -----------------------------------------------------------------------


def test_the_mock_server_answers_the_event_id_at_a_queue() -> None:
    server = two_segments().mock_server()
    assert server.test(body=1, event_id="ev-1") == {"id": "ev-1"}
    server.close()


def test_a_responder_before_the_queue_answers() -> None:
    graph = Graph()
    graph.to(inc, name="first").respond().to_queue("q", "memory://q").to(double, name="second")
    server = graph.mock_server()
    assert server.test(body=1) == 2
    assert server.results == {"q": [4]}
    server.close()


def test_results_hold_the_answers_of_the_segments_after_queues() -> None:
    server = two_segments().mock_server()
    for body in (1, 2, 3):
        server.test(body=body)
    assert server.results == {"q": [4, 6, 8]}
    server.close()


def test_the_event_id_is_the_same_across_two_hops() -> None:
    seen: list[tuple[str, str]] = []

    def remember(event: Event) -> Event:
        seen.append((event.trigger, event.id))
        return event

    graph = Graph()
    hop = graph.to(remember, name="front", full_event=True).to_queue("q1", "memory://q1")
    hop = hop.to(remember, name="middle", full_event=True).to_queue("q2", "memory://q2")
    hop.to(remember, name="back", full_event=True)
    server = graph.mock_server()
    assert server.test(body={}, event_id="ev-7") == {"id": "ev-7"}
    assert seen == [("mock", "ev-7"), ("stream", "ev-7"), ("stream", "ev-7")]
    assert server.results == {"q1": [{"id": "ev-7"}], "q2": [{}]}
    server.close()


def test_the_output_stream_gets_each_answer_with_its_event_id() -> None:
    graph = Graph()
    graph.to_queue("q", "memory://q", output="memory://answers").to(double)
    server = graph.mock_server()
    for n in range(3):
        assert server.test(body=n, event_id=f"ev-{n}") == {"id": f"ev-{n}"}
    answers = [(message.event_id, answer_of(message)) for message in read_stream(server, "answers")]
    assert answers == [("ev-0", 0), ("ev-1", 2), ("ev-2", 4)]
    server.close()


# -- failures ----------------------------------------------------------------------------------


def test_events_failing_max_deliveries_times_go_to_the_dead_letter_stream() -> None:
    tries: list[int] = []

    def odd_fails(n: int) -> int:
        tries.append(n)
        if n % 2:
            message = f"odd {n}"
            raise ValueError(message)
        return n

    graph = Graph()
    graph.to_queue("q", "memory://q", max_deliveries=3).to(odd_fails)
    server = graph.mock_server()
    for n in range(1, 6):
        server.test(body=n, event_id=f"ev-{n}")
    assert server.results == {"q": [2, 4]}
    assert sorted(tries) == [1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5]
    messages = read_stream(server, "q-dead-letter")
    assert [message.event_id for message in messages] == ["ev-1", "ev-3", "ev-5"]
    letters = [read_dead_letter(message.body) for message in messages]
    assert [letter.error for letter in letters] == [
        "ValueError: odd 1",
        "ValueError: odd 3",
        "ValueError: odd 5",
    ]
    assert {
        (letter.step, letter.segment, letter.source, letter.deliveries) for letter in letters
    } == {("odd_fails", "q", "q", 3)}
    assert [letter.event.body for letter in letters if letter.event is not None] == [1, 3, 5]
    server.close()


@pytest.mark.parametrize("payload", [b"not json {", b'{"x": 1}'], ids=["not-json", "not-envelope"])
def test_a_message_that_is_not_an_envelope_is_dead_lettered_raw(payload: bytes) -> None:
    server = two_segments().mock_server()
    assert server.streams is not None
    source = MemoryBackend("q", broker=server.streams.broker)
    asyncio.run(source.publish(payload, event_id="raw-1"))
    server.test(body=1)  # drains the stream: the bad message first, then this event
    assert server.results == {"q": [4]}
    [message] = read_stream(server, "q-dead-letter")
    letter = read_dead_letter(message.body)
    assert message.event_id == "raw-1"
    assert letter.raw == payload.decode()
    assert letter.event is None
    assert letter.step is None
    assert letter.error.startswith("the message is not a servegraph event envelope")
    server.test(body=2)
    assert server.results == {"q": [4, 6]}
    server.close()


def test_a_base_exception_from_an_async_step_after_a_queue_is_not_swallowed() -> None:
    class Abort(BaseException):
        pass

    async def abort(x: int) -> int:
        raise Abort

    graph = Graph()
    graph.to_queue("q", "memory://q").to(abort)
    server = graph.mock_server()
    with pytest.raises(Abort):
        server.test(body=1)
    server.close()


# -- ordering and concurrency --------------------------------------------------------------------


class Tracker:
    """An async step body of random duration (a random number of loop turns) that records
    the order events finish in and the most events running at once."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.running = 0
        self.peak = 0
        self.finished: list[dict[str, Any]] = []

    async def work(self, body: dict[str, Any]) -> dict[str, Any]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        for _ in range(self.random.randrange(30)):
            await asyncio.sleep(0)
        self.running -= 1
        self.finished.append(body)
        return body


def test_events_with_one_key_finish_in_publish_order() -> None:
    tracker = Tracker(seed=3)
    graph = Graph()
    graph.to_queue("q", "memory://q", key="user").to(tracker.work)
    server = graph.mock_server()
    bodies = [{"user": user, "n": n} for n in range(10) for user in ("a", "b", "c")]
    asyncio.run(publish_then_drain(server, bodies))
    assert len(tracker.finished) == len(bodies)
    assert tracker.peak > 1  # events of different keys did run at once
    for user in ("a", "b", "c"):
        order = [body["n"] for body in tracker.finished if body["user"] == user]
        assert order == list(range(10))


def test_max_in_flight_bounds_the_events_running_at_once() -> None:
    tracker = Tracker(seed=5)
    graph = Graph()
    graph.to_queue("q", "memory://q", max_in_flight=3).to(tracker.work)
    server = graph.mock_server()
    asyncio.run(publish_then_drain(server, ({"n": n} for n in range(12))))
    assert len(server.results["q"]) == 12
    assert tracker.peak == 3


def test_query_content_type_and_time_cross_a_queue() -> None:
    seen: list[tuple[object, object, object]] = []

    def look(event: Event) -> Event:
        seen.append((dict(event.query), event.content_type, event.time))
        return event

    graph = Graph()
    graph.to(look, name="before", full_event=True).to_queue("q", "memory://q").to(
        look, name="after", full_event=True
    )
    server = graph.mock_server()
    event = Event({}, query={"a": "1"}, content_type="application/json")
    server.run_event(event)
    assert len(seen) == 2
    assert seen[0] == seen[1] == ({"a": "1"}, "application/json", event.time)


def test_a_missing_ordering_key_names_the_queue_and_the_option() -> None:
    graph = Graph()
    graph.to(double).to_queue("q", "memory://q", key="user").to(double, name="again")
    with pytest.raises(StepError, match="queue 'q': the key option 'user' is not in the event"):
        graph.mock_server().test(body=1)


def test_an_envelope_from_a_newer_writer_is_dead_lettered_with_the_reason() -> None:
    server = two_segments().mock_server()
    assert server.streams is not None
    source = MemoryBackend("q", broker=server.streams.broker)
    asyncio.run(source.publish(b'{"body": 1, "v": 2, "later": true}', event_id="new-1"))
    server.test(body=1)
    [message] = read_stream(server, "q-dead-letter")
    letter = read_dead_letter(message.body)
    assert letter.error.startswith("the envelope is version 2, written by a newer servegraph")
    assert letter.event is not None  # replayable once upgraded
    assert letter.event.body == 1
    server.close()
