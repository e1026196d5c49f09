"""storey's and MLRun's built-in step classes in MLRun graph dicts, run by servegraph's own steps.

Each graph is written the way MLRun writes it (``graph.to("storey.Map", _fn="(...)")`` becomes
``{"class_name": "storey.Map", "class_args": {"_fn": "(...)"}}``) and run through the MLRun mock
server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from servegraph.compat import mlrun
from servegraph.event import Event
from servegraph.state.tables import open_table


def flow(engine: str = "async", **steps: dict[str, Any]) -> dict[str, Any]:
    """An MLRun graph dict with these steps (each keyed by its name, in order)."""
    return {"kind": "flow", "engine": engine, "steps": steps}


def storey(class_name: str, after: str | None = None, **keys: Any) -> dict[str, Any]:
    """One MLRun task step of a storey/MLRun class; ``keys`` are class_args, except the step
    keys responder, full_event, input_path, result_path and handler."""
    step_keys = {"responder", "full_event", "input_path", "result_path", "handler"}
    step: dict[str, Any] = {
        "kind": "task",
        "class_name": class_name,
        "class_args": {k: v for k, v in keys.items() if k not in step_keys},
        **{k: v for k, v in keys.items() if k in step_keys},
    }
    if after is not None:
        step["after"] = [after]
    return step


def answers(graph: dict[str, Any], *bodies: Any, namespace: Any = None) -> list[Any]:
    """What the MLRun mock server answers to each body, sent one after the other."""
    server = mlrun.load(graph, namespace=namespace).mock_server()
    try:
        return [server.test(body=body) for body in bodies]
    finally:
        server.close()


def load_problems(graph: dict[str, Any], namespace: Any = None) -> str:
    """The message of the GraphError that loading ``graph`` raises."""
    with pytest.raises(mlrun.GraphError) as caught:
        mlrun.load(graph, namespace=namespace)
    return str(caught.value)


def add_one(body: int) -> int:
    return body + 1


def square(body: int) -> int:
    return body * body


def event_path(event: Event) -> str:
    return event.path


# -- one event in, at most one out ---------------------------------------------------------


@pytest.mark.parametrize("engine", ["async", "sync"])
def test_map_runs_expressions_namespace_functions_and_import_paths(engine: str) -> None:
    graph = flow(
        engine,
        double=storey("storey.Map", _fn="(event * 2)"),
        inc=storey("storey.Map", "double", _fn="add_one"),
        sq=storey("storey.flow.Map", "inc", _fn=f"{__name__}.square", responder=True),
    )
    assert answers(graph, 3, 0, namespace={"add_one": add_one}) == [49, 1]


def test_map_honours_input_path_result_path_and_full_event() -> None:
    graph = flow(
        total=storey(
            "storey.Map",
            _fn="(event['a'] + event['b'])",
            input_path="numbers",
            result_path="total",
        ),
        path=storey("storey.Map", "total", _fn="event_path", full_event=True, responder=True),
    )
    server = mlrun.load(graph, namespace={"event_path": event_path}).mock_server()
    assert server.test("/here", body={"numbers": {"a": 1, "b": 2}}) == "/here"
    server.close()
    graph["steps"]["total"]["responder"] = True
    del graph["steps"]["path"]
    assert answers(graph, {"numbers": {"a": 1, "b": 2}}) == [
        {"numbers": {"a": 1, "b": 2}, "total": 3}
    ]


def test_long_running_makes_the_step_blocking() -> None:
    graph = flow(m=storey("storey.Map", _fn="(event)", long_running=True))
    assert mlrun.load(graph).spec.step("m").blocking is True


@pytest.mark.parametrize("engine", ["async", "sync"])
def test_filter_stops_the_events_its_function_rejects(engine: str) -> None:
    graph = flow(
        engine,
        keep=storey("storey.Filter", _fn="(event['x'] > 0)"),
        x=storey("storey.Map", "keep", _fn="(event['x'])", responder=True),
    )
    assert answers(graph, {"x": 2}, {"x": -1}, {"x": 5}) == [2, None, 5]


def test_extend_adds_the_fields_of_its_function() -> None:
    # MLRun's own documentation example (docs/serving/serving-graph.md).
    graph = flow(
        enrich=storey("storey.Extend", _fn='({"tag": "something"})'),
        keys=storey("storey.Map", "enrich", _fn="(sorted(event.keys()))", responder=True),
    )
    assert answers(graph, {"x": 1}) == [["tag", "x"]]


def test_sample_window_keeps_the_first_event_of_every_window() -> None:
    seen: list[Any] = []
    graph = flow(
        sample=storey("storey.SampleWindow", window_size=3),
        record={"handler": "record", "after": ["sample"]},
    )
    answers(graph, *range(7), namespace={"record": seen.append})
    assert seen == [0, 3, 6]


# -- one event in, several out; several in, one out -------------------------------------------


def test_flat_map_and_flatten_send_each_item_on() -> None:
    seen: list[Any] = []
    graph = flow(
        items=storey("storey.FlatMap", _fn="(event['items'])"),
        flat=storey("storey.steps.Flatten", "items"),
        record={"handler": "record", "after": ["flat"]},
    )
    answers(graph, {"items": [[1, 2], [3]]}, {"items": []}, namespace={"record": seen.append})
    assert seen == [1, 2, 3]


def test_batch_sends_lists_of_max_events_bodies() -> None:
    graph = flow(
        batch=storey("storey.Batch", max_events=2, flush_after_seconds=5),
        sizes=storey("storey.Map", "batch", _fn="(event)", responder=True),
    )

    async def send() -> list[Any]:
        server = mlrun.load(graph).mock_server()
        try:
            return list(await asyncio.gather(*(server.atest(body=n) for n in range(4))))
        finally:
            await server.aclose()

    # Each event answers what its batch answered.
    assert asyncio.run(send()) == [[0, 1], [0, 1], [2, 3], [2, 3]]


def test_batch_groups_by_key_field() -> None:
    seen: list[Any] = []
    graph = flow(
        "sync",
        batch=storey("storey.Batch", max_events=2, key_field="user"),
        record={"handler": "record", "after": ["batch"]},
    )
    bodies = [{"user": u, "n": n} for n, u in enumerate("abba")]
    answers(graph, *bodies, namespace={"record": seen.append})
    assert seen == [
        [{"user": "b", "n": 1}, {"user": "b", "n": 2}],
        [{"user": "a", "n": 0}, {"user": "a", "n": 3}],
    ]


@pytest.mark.parametrize("engine", ["async", "sync"])
def test_reduce_sends_its_value_on_when_the_graph_closes(engine: str) -> None:
    seen: list[Any] = []
    graph = flow(
        engine,
        total=storey("storey.Reduce", initial_value=10, _fn="(accumulator + event)"),
        record={"handler": "record", "after": ["total"]},
    )
    answers(graph, 1, 2, 3, namespace={"record": seen.append})
    assert seen == [16]


def test_choice_by_field_routes_to_the_named_steps() -> None:
    seen: dict[str, list[Any]] = {"a": [], "b": []}
    graph = flow(
        choose=storey("mlrun.serving.steps.ChoiceByField", field_name="to"),
        a={"handler": "record_a", "after": ["choose"]},
        b={"handler": "record_b", "after": ["choose"]},
    )
    namespace = {"record_a": seen["a"].append, "record_b": seen["b"].append}
    server = mlrun.load(graph, namespace=namespace).mock_server()
    for body in ({"to": "a"}, {"to": ["a", "b"]}, {"to": "b"}):
        server.test(body=body)
    assert seen == {"a": [{"to": "a"}, {"to": ["a", "b"]}], "b": [{"to": ["a", "b"]}, {"to": "b"}]}
    failure = server.test(body={"x": 1}, silent=True)
    assert failure.body == "MLRunRuntimeError: Field 'to' is not contained in the event keys ['x']."
    failure = server.test(body={"to": "c"}, silent=True)
    assert "selected outlet 'c' does not follow this step ('a', 'b')" in failure.body
    server.close()


# -- state in tables ------------------------------------------------------------------------


def unique_table(kind: str) -> str:
    """A memory table of this process no other test uses."""
    return f"memory://{kind}-{uuid.uuid4().hex}"


def test_join_with_table_merges_the_row_of_the_key_field() -> None:
    users = unique_table("users")

    async def fill() -> None:
        table = open_table(users)
        await table.set("u1", {"name": "ann", "age": 3, "secret": "x"})
        await table.aclose()

    asyncio.run(fill())
    join = storey(
        "storey.JoinWithTable",
        table=users,
        key_extractor="user",
        attributes=["name", "age"],
        responder=True,
    )
    bodies = ({"user": "u1"}, {"user": "u2"})
    assert answers(flow(join=join), *bodies) == [{"user": "u1", "name": "ann", "age": 3}, bodies[1]]
    join["class_args"]["inner_join"] = True  # events whose key has no row stop
    assert answers(flow(join=join), *bodies) == [{"user": "u1", "name": "ann", "age": 3}, None]


def test_map_with_state_keeps_one_state_without_group_by_key() -> None:
    running = storey(
        "storey.MapWithState",
        initial_state=0,
        _fn="((event, state + event), state + event)",
        responder=True,
    )
    assert answers(flow(total=running), 1, 2, 3) == [(1, 1), (2, 3), (3, 6)]


def test_map_with_state_by_key_keeps_each_keys_state_in_the_table(tmp_path: Path) -> None:
    counts = f"sqlite:///{tmp_path}/state.db?table=counts"
    count = storey(
        "storey.MapWithState",
        initial_state=counts,
        group_by_key=True,
        _fn="({**event, 'n': state.get('n', 0) + 1}, {'n': state.get('n', 0) + 1})",
        responder=True,
    )
    for expected in ([1, 1, 2], [3, 2, 4]):  # a second server continues from the table
        server = mlrun.load(flow(count=count)).mock_server()
        seen = [server.run_event(Event({"k": k}, key=k))["n"] for k in "aba"]
        server.close()
        assert seen == expected


def test_aggregate_by_key_adds_windowed_features() -> None:
    amounts = {"name": "amount", "column": "amount", "operations": ["sum", "count"]}
    aggregate = storey(
        "storey.AggregateByKey",
        table=unique_table("aggregates"),
        key_field="user",
        time_field="t",
        aggregates=[{**amounts, "windows": ["1h"], "period": "10m"}],
        responder=True,
    )
    bodies = [{"user": "u", "t": 3600.0 + 1200 * n, "amount": n + 1} for n in range(4)]
    features = [
        (answer["amount_sum_1h"], answer["amount_count_1h"])
        for answer in answers(flow(aggregate=aggregate), *bodies)
    ]
    # The last event's hour (sliding, 10-minute buckets) no longer holds the first event.
    assert features == [(1, 1), (3, 2), (6, 3), (9, 3)]


def test_aggregates_without_a_period_use_fixed_windows() -> None:
    amounts = {"name": "amount", "column": "amount", "operations": ["sum"], "windows": ["1h"]}
    aggregate = storey(
        "storey.AggregateByKey",
        table=unique_table("aggregates"),
        aggregates=[amounts],
        time_field="t",
        responder=True,
    )
    server = mlrun.load(flow(aggregate=aggregate)).mock_server()
    sums = [
        server.run_event(Event({"t": t, "amount": 1}, key="k"))["amount_sum_1h"]
        for t in (0.0, 1800.0, 3599.0, 3600.0)
    ]
    server.close()
    assert sums == [1, 2, 3, 1]  # the hour starting at 3600 starts afresh


# -- remote calls (a real HTTP server on 127.0.0.1) ---------------------------------------------


class Echo(BaseHTTPRequestHandler):
    """Answers every POST with what it got: its path, its JSON body and the event id header."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        got = {
            "path": self.path,
            "body": json.loads(self.rfile.read(length) or b"null"),
            "id": self.headers.get("servegraph-event-id"),
        }
        answer = json.dumps(got).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_remote_step_posts_the_body_and_stores_the_answer(echo_url: str) -> None:
    remote = storey(
        "$remote",
        url=echo_url,
        subpath="score",
        body_expression="event['features']",
        input_path="request",
        result_path="response",
        responder=True,
    )
    server = mlrun.load(flow(remote=remote)).mock_server()
    answer = server.test(body={"request": {"features": [1, 2]}}, event_id="e-1")
    server.close()
    expected = {"path": "/score", "body": [1, 2], "id": "e-1"}
    assert answer == {"request": {"features": [1, 2]}, "response": expected}


def test_batch_http_requests_calls_once_per_item(echo_url: str) -> None:
    batch = storey(
        "mlrun.serving.remote.BatchHttpRequests",
        url_expression=f"'{echo_url}/item/' + str(event['n'])",
        method="POST",
        responder=True,
    )
    answer = answers(flow(batch=batch), [{"n": 1}, {"n": 2}])[0]
    assert [(item["path"], item["body"]) for item in answer] == [
        ("/item/1", {"n": 1}),
        ("/item/2", {"n": 2}),
    ]


# -- what servegraph refuses, at load time ----------------------------------------------------


def test_an_expression_the_evaluator_refuses_is_a_load_error_naming_the_step() -> None:
    text = load_problems(flow(peek=storey("storey.Map", _fn="(event.__class__)")))
    assert "step 'peek': _fn: expression '(event.__class__)': attribute '__class__'" in text


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (storey("storey.Map", fn="(event)"), "fn='(event)': MLRun passes class_args as they are"),
        (storey("storey.Map"), "storey.Map needs its function '_fn'"),
        (storey("storey.Map", _fn="nowhere"), "_fn: cannot resolve 'nowhere'"),
        (storey("storey.Map", _fn="(event"), 'must start with "(" and end with ")"'),
        (storey("storey.Map", _fn="(event)", pass_context=True), "pass_context=True"),
        (storey("storey.Map", _fn="(event)", colour=1), "argument(s) colour not supported"),
        (storey("storey.Map", _fn="(event)", handler="do"), "handler 'do' is not used"),
        (storey("storey.Filter", _fn="(event)", input_path="a"), "input_path is not supported"),
        (storey("storey.Extend", _fn="(event)", full_event=True), "full_event is not supported"),
        (storey("storey.SampleWindow", window_size=1), "window_size must be an integer above 1"),
        (storey("storey.SampleWindow", window_size=2, key="$key"), "key is not supported"),
        (storey("storey.Batch", max_events=0), "batch: max_events must be a positive integer"),
        (storey("storey.Batch", max_events=2, key="u"), "storey's Batch ignores 'key'"),
        (storey("storey.Batch", max_events=2, key_field="$path"), "grouped by a body field"),
        (storey("storey.Batch", max_events=2, _key_field="(event)"), "_key_field: batches"),
        (storey("storey.Batch", max_events=2, full_event=True), "full_event is not supported"),
        (storey("storey.Reduce", _fn="(accumulator)"), "storey's Reduce needs initial_value"),
        (storey("storey.MapWithState", _fn="(event, state)", group_by_key=True), "must name it"),
        (storey("storey.JoinWithTable", table="t", _key_extractor="(1)"), "_key_extractor:"),
        (
            storey("storey.JoinWithTable", table="t", key_extractor="k", _join_function="f"),
            "_join_function is not supported",
        ),
        (
            storey("storey.AggregateByKey", table="t", aggregates=[{"name": "a", "x": 1}]),
            "aggregate 'a': x not supported",
        ),
        (
            storey(
                "storey.AggregateByKey",
                table="t",
                aggregates=[{"name": "a", "column": "a", "operations": ["sum"], "windows": ["1h"]}],
                emit_policy={"mode": "maxEvents", "maxEvents": 3},
            ),
            "emit_policy {'mode': 'maxEvents', 'maxEvents': 3} is not supported",
        ),
        (storey("storey.Choice"), "storey.Choice is not available in servegraph.compat.mlrun yet"),
        (storey("storey.SendToHttp"), "use MLRun's RemoteStep ('$remote')"),
        (storey("storey.Rename", mapping={"a": "b"}), "servegraph runs $remote, mlrun."),
        (storey("$remote", url="http://x", headers_expression="event"), "headers_expression"),
        (storey("$remote", url="shop/scorer"), "url must be an http:// or https:// URL"),
        (storey("$remote", url="http://x", full_event=True), "full_event is not supported"),
    ],
)
def test_what_servegraph_cannot_honour_is_a_load_error_naming_the_step(
    step: dict[str, Any], expected: str
) -> None:
    text = load_problems(flow(s=step))
    assert "step 's': " in text
    assert expected in text


def test_every_problem_is_reported_at_once() -> None:
    graph = flow(
        one=storey("storey.Map", _fn="(event.x)"),
        two=storey("storey.Filter", "one", fn="(event)"),
        three=storey("storey.Rename", "two"),
    )
    text = load_problems(graph)
    assert text.startswith("invalid graph (3 problems):")
    assert all(f"step '{name}'" in text for name in ("one", "two", "three"))
