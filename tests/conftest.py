"""Shared fixtures: every behaviour test runs in each way of driving the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
import pytest

from servegraph import Context, Event, Graph, MockServer, StepError
from servegraph.engine.lifecycle import await_all, close_steps, shutdown_loop
from servegraph.event import EVENT_ID_HEADER
from servegraph.graph.spec import GraphSpec, StepKind, StepSpec, Topology
from servegraph.streams.consumer import SegmentConsumer
from servegraph.streams.envelope import Envelope, encode_event, read_dead_letter
from servegraph.streams.memory import MemoryBackend, MemoryBroker
from servegraph.streams.runtime import StreamRuntime

MOCK_MODES = ("sync", "async", "async-await")
"""sync engine via test(); async engine via test(); async engine awaited inside a running loop."""

MODES = (*MOCK_MODES, "stream")
"""The mock server's modes, and "stream": the graph runs after a queue, fed by its stream."""

INPUT = "input"
"""The stream-triggered graph's entry queue step (and the segment that runs the user's graph)."""

STREAM_OPTIONS: Mapping[str, Any] = {
    "output": "memory://output",
    "retry_delay_s": 0.0,
    "max_deliveries": 1,
}
"""The entry queue's options: answers go to the output stream, a failure is dead-lettered."""

Send = Callable[..., Any]


class DeadLettered(Exception):
    """The cause of a StepError rebuilt from a dead letter: a dead letter records only the
    original exception's type name and text (``DeadLetter.error``)."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(text)
        self.type_name = type_name
        self.text = text


def cause_text(error: StepError) -> str:
    """``"TypeName: message"`` of a step error's cause, the same in every mode."""
    cause = error.cause
    if isinstance(cause, DeadLettered):
        return f"{cause.type_name}: {cause.text}"
    return f"{type(cause).__name__}: {cause}"


def stream_triggered(spec: GraphSpec) -> GraphSpec:
    """``spec`` run after an entry queue ``input``: its entry steps (a router graph's router,
    which becomes a step of a flow) run after the queue, in the queue's segment."""
    queue = StepSpec(
        INPUT, kind=StepKind.QUEUE, stream=f"memory://{INPUT}", options=dict(STREAM_OPTIONS)
    )
    handlers = {step.on_error for step in spec.steps} | {spec.on_error}
    steps = tuple(
        dataclasses.replace(step, after=(INPUT,))
        if not step.after and step.name not in handlers
        else step
        for step in spec.steps
    )
    return dataclasses.replace(spec, topology=Topology.FLOW, steps=(queue, *steps))


def request_event(
    body: Any, path: str, method: str | None, headers: Mapping[str, str] | None
) -> Event:
    """The event the mock server makes for a request (method GET without a body, the event id
    from its header)."""
    headers = dict(headers or {})
    return Event(
        body,
        id=headers.get(EVENT_ID_HEADER),
        headers=headers,
        method=method or ("GET" if body is None else "POST"),
        path=path,
    )


class StreamGraph:
    """A user's graph run as a stream consumer would run it: events are published to the
    ``input`` stream, the consumer runs the graph, answers are read from the output stream."""

    def __init__(self, graph: Graph, broker: MemoryBroker) -> None:
        spec = stream_triggered(graph.spec)
        self.runtime = StreamRuntime(
            spec,
            namespace=graph.namespace,
            context=Context(params=dict(spec.params)),
            broker=broker,
            options={"retry_delay_s": 0.0},
        )
        self.plan = self.runtime.compile(INPUT)
        self.consumer: SegmentConsumer = self.runtime.consumer(
            INPUT, consumer="driver", plan=self.plan
        )
        self.input = MemoryBackend(INPUT, broker=broker)
        self.output = MemoryBackend("output", broker=broker)
        self.dead_letters = MemoryBackend(f"{INPUT}-dead-letter", broker=broker)

    async def send(self, event: Event) -> Any:
        """Publish ``event``, run the consumer until idle and return its answer.

        Raises:
            StepError: the event was dead-lettered: the step it names, with the recorded
                error as a ``DeadLettered`` cause.
        """
        await self.input.publish(encode_event(event), event_id=event.id)
        while await self.consumer.poll(block_ms=0):
            pass
        await self.consumer.drain()
        for message in await self.output.consume("driver", "driver", count=1000, block_ms=0):
            await self.output.ack("driver", message)
            if message.event_id == event.id:
                return msgspec.json.decode(message.body, type=Envelope).body
        for message in await self.dead_letters.consume("driver", "driver", block_ms=0):
            await self.dead_letters.ack("driver", message)
            if message.event_id == event.id:
                dead = read_dead_letter(message.body)
                type_name, _, text = dead.error.partition(": ")
                cause = DeadLettered(type_name, text)
                error = StepError(dead.step or "(none)", event.id, cause)
                error.args = (f"step {error.step!r} failed: {dead.error}",)
                raise error from cause
        missing = f"event {event.id} was neither answered nor dead-lettered"
        raise AssertionError(missing)

    async def aclose(self) -> None:
        await await_all(close_steps(self.plan.instances))
        for backend in (self.input, self.output, self.dead_letters):
            await backend.aclose()
        await self.runtime.aclose()


class Driver:
    """Builds a mock server (or a stream consumer) for a graph in one mode and sends it events."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.engine = "sync" if mode == "sync" else "async"
        self.servers: list[MockServer] = []
        self.streams: list[StreamGraph] = []
        self.broker = MemoryBroker()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, graph: Graph) -> Send:
        if self.mode == "stream":
            return self._stream(graph)
        server = graph.mock_server(engine=self.engine)
        self.servers.append(server)

        def send(
            body: Any = None,
            path: str = "/",
            method: str | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Any:
            if self.mode == "async-await":
                return asyncio.run(server.atest(path, body, method=method, headers=headers))
            return server.test(path, body, method=method, headers=headers)

        return send

    def _stream(self, graph: Graph) -> Send:
        stream = StreamGraph(graph, self.broker)
        self.streams.append(stream)

        def send(
            body: Any = None,
            path: str = "/",
            method: str | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Any:
            event = request_event(body, path, method, headers)
            return self._loop_for_streams().run_until_complete(stream.send(event))

        return send

    def _loop_for_streams(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.streams:
            loop = self._loop_for_streams()
            for stream in self.streams:
                loop.run_until_complete(stream.aclose())
        if self._loop is not None:
            shutdown_loop(self._loop)
            self._loop = None


@pytest.fixture(params=MODES)
def drive(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A Driver for each mode; tests get identical expectations in all of them."""
    driver = Driver(request.param)
    yield driver
    driver.close()


@pytest.fixture(params=("async", "async-await", "stream"))
def drive_async(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A Driver for the modes that run async steps."""
    driver = Driver(request.param)
    yield driver
    driver.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true no test may skip: a missing service or extra is a failure there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("CI") != "true":
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; none may skip in CI")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
