"""Edge cases found in review: each comment says what is expected and why."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from servegraph import Event, Graph, GraphError, GraphSpec, StepError, StepKind, StepSpec, Topology
from servegraph.compat import mlrun
from servegraph.graph.serde import spec_from_dict, spec_to_dict
from servegraph.graph.validate import check
from tests.compat.mlrun_cases import steps as mlrun_steps
from tests.conftest import Driver
from tests.unit.sample_steps import async_inc, boom, catch, double, inc


class Scaler:
    """A module-level class whose bound method is used as a step."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def times(self, x: int) -> int:
        return x * self.factor


SCALER = Scaler(10)


def tag_after(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "after_handler": True}


# -- engine / compiler -----------------------------------------------------------------------


def test_graph_error_handler_can_lead_to_more_steps(drive: Driver) -> None:
    # Steps after the graph-level handler run like steps after a step-level handler; the
    # graph-level handler does not cover its own chain (that would loop).
    graph = Graph()
    graph.to(boom, name="exploder")
    graph.error_handler(catch, full_event=True).to(tag_after)
    graph.validate()
    answer = drive(graph)(1)
    assert answer == {"caught": "exploder", "cause": "boom on 1", "body": 1, "after_handler": True}


def test_a_failing_error_handler_answers_with_its_own_handler(drive: Driver) -> None:
    # When an error handler fails and its own handler answers, that answer is the event's.
    graph = Graph()
    graph.to(boom, name="exploder")
    graph["exploder"].error_handler(boom, name="bad_handler")
    graph["bad_handler"].error_handler(catch, name="second", full_event=True)
    assert drive(graph)(1) == {"caught": "bad_handler", "cause": "boom on 1", "body": 1}


def test_route_on_error_does_not_make_its_handler_an_entry(drive: Driver) -> None:
    # A route cannot have its own error handler (the router's covers it): rejected at build
    # time, naming the route, rather than turning the handler into an entry step.
    seen: list[Any] = []

    def handler(event: Event) -> str:
        seen.append(event.body)
        return "handled"

    graph = Graph()
    graph.add_router("r", responder=True).add_route("m", inc, on_error="h")
    graph.to(handler, name="h", full_event=True)
    with pytest.raises(GraphError, match="a route cannot set on_error") as caught:
        drive(graph)
    assert [problem.step for problem in caught.value.problems] == ["m"]
    assert seen == []


def test_route_responder_is_honoured_or_rejected(drive: Driver) -> None:
    # A route cannot be the responder (the router is): rejected at build time, naming the route.
    graph = Graph()
    graph.add_router("r").add_route("m", inc, responder=True)
    graph.to(double, name="later", after="r")
    with pytest.raises(GraphError, match="a route cannot set responder; set it on the router 'r'"):
        drive(graph)


def test_base_exception_from_a_branch_is_not_wrapped(drive_async: Driver) -> None:
    # A BaseException from a branch comes out as itself, as it does from a chain, never wrapped
    # in a BaseExceptionGroup by the TaskGroup of a fan-out.
    class Abort(BaseException):
        pass

    def abort(x: Any) -> Any:
        raise Abort

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(abort, name="abort")
    start.to(async_inc, name="other")
    with pytest.raises(Abort):
        drive_async(graph)(1)


def test_cancelled_error_in_a_branch_is_not_swallowed(drive_async: Driver) -> None:
    # A step raising CancelledError in a fan-out propagates it, as in a chain; a TaskGroup alone
    # would drop that branch (and the responder's answer) silently.
    async def cancelled(x: Any) -> Any:
        raise asyncio.CancelledError

    graph = Graph()
    start = graph.to(inc, name="start")
    start.to(cancelled, name="cancelled").respond()
    start.to(async_inc, name="other")
    with pytest.raises((asyncio.CancelledError, StepError)):
        drive_async(graph)(1)


def test_async_generator_step_is_not_answered_unconsumed(drive_async: Driver) -> None:
    # Generator steps are rejected at build time; answering with an unconsumed generator would
    # be a silent bug.
    async def numbers(x: int) -> Any:
        yield x

    graph = Graph()
    graph.to(numbers).respond()
    with pytest.raises(GraphError, match="generator steps are not supported"):
        drive_async(graph)


# -- mock server -----------------------------------------------------------------------------


def test_close_cancels_tasks_left_on_the_servers_loop() -> None:
    # close() cancels what steps left on the server's loop, as asyncio.run does, so no task is
    # destroyed while pending.
    tasks: list[asyncio.Task[None]] = []

    async def spawn(x: int) -> int:
        tasks.append(asyncio.create_task(asyncio.sleep(60)))
        return x

    graph = Graph()
    graph.to(spawn).respond()
    server = graph.mock_server()
    assert server.test(body=1) == 1
    server.close()
    assert tasks[0].done()


class AsyncClosable:
    closed = False

    def do(self, x: Any) -> Any:
        return x

    async def close(self) -> None:
        AsyncClosable.closed = True


def test_close_awaits_async_close_hooks() -> None:
    # An async close() hook is awaited by close().
    graph = Graph()
    graph.to(AsyncClosable).respond()
    server = graph.mock_server(engine="async")
    server.test(body=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # today: "never awaited"
        server.close()
    assert AsyncClosable.closed


# -- builder / validation / serde ------------------------------------------------------------


def test_bound_method_step_is_not_written_as_its_unbound_function() -> None:
    # A bound method has no import path (it would name the unbound function): to_dict refuses
    # it, as it refuses lambdas, instead of writing a spec that loads wrong.
    graph = Graph()
    graph.to(SCALER.times, name="scale").respond()
    assert graph.test(2) == 20
    with pytest.raises(GraphError, match="has no import path"):
        graph.to_dict()


def test_handler_option_on_a_function_import_path_is_rejected() -> None:
    # handler= names a method of a class; on a function named by import path it is a build-time
    # problem, as it is (a TypeError) for a live function.
    graph = Graph()
    graph.to("tests.unit.sample_steps:inc", handler="run")
    with pytest.raises(GraphError):
        graph.validate()


@pytest.mark.parametrize(
    "options",
    [{"responder": "false"}, {"full_event": "no"}, {"input_path": 5}, {"after": 5}],
    ids=["responder-str", "full_event-str", "input_path-int", "after-int"],
)
def test_spec_with_wrongly_typed_fields_is_a_graph_error(options: dict[str, Any]) -> None:
    # Wrongly typed fields are GraphErrors when the spec is read ("false" is not True).
    data = {"steps": {"a": {"handler": "tests.unit.sample_steps:inc", **options}}}
    with pytest.raises(GraphError):
        check(spec_from_dict(data))


def test_router_graph_with_a_responder_round_trips() -> None:
    # A router graph's router options (responder, ...) round-trip through the top level.
    graph = Graph.router()
    graph.add_route("m", "tests.unit.sample_steps:inc")
    graph["router"].respond()
    assert Graph.from_dict(graph.to_dict()).spec == graph.spec


def test_router_graph_keeps_its_router_name() -> None:
    # A router graph keeps its router's name through a round trip.
    route = StepSpec(name="m", handler="tests.unit.sample_steps:inc")
    router = StepSpec(name="models", kind=StepKind.ROUTER, routes=(route,))
    spec = GraphSpec(topology=Topology.ROUTER, steps=(router,))
    check(spec)
    assert spec_from_dict(spec_to_dict(spec)) == spec


# -- MLRun compatibility ---------------------------------------------------------------------


class WithFunction:
    def __init__(self, fn: Any, context: Any = None, name: str | None = None) -> None:
        self.fn = fn

    def do(self, body: Any) -> Any:
        return self.fn(body)


def test_mlrun_callable_class_args_are_resolved() -> None:
    # MLRun turns class_args keys starting with "_" into functions: {"_fn": "pkg.f"} gives
    # fn=<function>.
    graph = {
        "steps": {
            "s": {
                "kind": "task",
                "class_name": "WithFunction",
                "class_args": {"_fn": "tests.unit.sample_steps.inc"},
            }
        },
        "engine": "sync",
    }
    server = mlrun.load(graph, namespace={"WithFunction": WithFunction}).mock_server()
    assert server.test(body=1) == 2


class ReadyCatcher:
    def __init__(self, context: Any = None, name: str | None = None) -> None:
        self.ready = False

    def post_init(self, mode: str = "sync") -> None:
        self.ready = True

    def do(self, body: Any) -> Any:
        return {"ready": self.ready}


def test_mlrun_error_step_class_gets_post_init() -> None:
    # MLRun error steps are task steps: their object's post_init(mode) runs at init.
    graph = {
        "steps": {
            "r": {"kind": "task", "handler": "raise_error", "on_error": "c"},
            "c": {"kind": "error_step", "class_name": "ReadyCatcher"},
        },
        "engine": "sync",
    }
    namespace = {"ReadyCatcher": ReadyCatcher, "raise_error": mlrun_steps.raise_error}
    server = mlrun.load(graph, namespace=namespace).mock_server()
    assert server.test(body=[1]) == {"ready": True}


def test_mlrun_missing_input_path_key_gives_none() -> None:
    # In MLRun graphs a missing input_path key gives None (MLRun's get_in); servegraph's own
    # graphs report it as an error naming the step and the key.
    graph = {
        "steps": {"t": {"kind": "task", "handler": "return_type", "input_path": "x"}},
        "engine": "sync",
    }
    server = mlrun.load(graph, namespace=mlrun_steps).mock_server()
    assert server.test(body={"y": 1}) == "NoneType"
