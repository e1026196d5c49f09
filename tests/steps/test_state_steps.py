"""Map-with-state, join-with-table and aggregate-by-key, on memory and SQLite tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from servegraph import Graph
from servegraph.errors import GraphError, StepError
from servegraph.state.tables import TableError, open_table
from servegraph.steps.state import AggregateByKey, JoinWithTable, MapWithState
from servegraph.steps.targets import ToTable
from tests.conftest import Driver

AMOUNT_1H = {
    "name": "amount",
    "column": "amount",
    "operations": ["sum", "count"],
    "windows": ["1h"],
}


def sqlite_url(tmp_path: Path, table: str = "state") -> str:
    return f"sqlite:///{tmp_path / 'state.db'}?table={table}"


def run(graph: Graph, bodies: list[Any]) -> list[Any]:
    """Send ``bodies`` one after the other through a fresh mock server, then close it."""

    async def main() -> list[Any]:
        server = graph.mock_server()
        try:
            return [await server.atest(body=body) for body in bodies]
        finally:
            await server.aclose()

    return asyncio.run(main())


# -- map-with-state -----------------------------------------------------------------------------


def test_map_with_state_keeps_a_state_per_key(drive_async: Driver) -> None:
    graph = Graph()
    graph.to(MapWithState("({**event, 'seen': state + 1}, state + 1)", initial_state=0, key="user"))
    send = drive_async(graph)
    answers = [send({"user": user}) for user in "abab"]
    assert [answer["seen"] for answer in answers] == [1, 1, 2, 2]


def test_map_with_state_without_a_key_has_one_state_and_copies_the_initial_one() -> None:
    graph = Graph()
    graph.to(MapWithState("(len(state) + 1, state + [event])", initial_state=[]))
    assert run(graph, ["a", "b", "c"]) == [1, 2, 3]
    again = MapWithState("(event, state)", initial_state=[])
    assert again.initial == []  # the initial state is copied per key, never shared


def test_map_with_state_survives_a_restart_on_sqlite(tmp_path: Path) -> None:
    def graph() -> Graph:
        built = Graph()
        built.to(
            MapWithState(
                "(state + event, state + event)", initial_state=0, table=sqlite_url(tmp_path)
            )
        )
        return built

    assert run(graph(), [1, 2]) == [1, 3]
    assert run(graph(), [10]) == [13]  # a new process would continue from the table


def test_map_with_state_write_behind_writes_at_close(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    graph = Graph()
    graph.to(
        MapWithState("(event, state + 1)", initial_state=0, table=url, key="k", flush_interval_s=60)
    )
    run(graph, [{"k": "x"}, {"k": "x"}, {"k": "y"}])

    async def read() -> list[Any]:
        table = open_table(url)
        try:
            return await table.get_many(["x", "y"])
        finally:
            await table.aclose()

    assert asyncio.run(read()) == [{"state": 2}, {"state": 1}]


def test_map_with_state_fn_must_return_a_pair() -> None:
    graph = Graph()
    graph.to(MapWithState("event", initial_state=0), name="counter")
    with pytest.raises(StepError, match="step 'counter': fn must return \\(body, state\\)"):
        run(graph, [1])


def test_a_missing_key_field_is_an_error_or_skipped_and_counted() -> None:
    graph = Graph()
    graph.to(MapWithState("(event, state)", key="user"), name="counter")
    with pytest.raises(StepError, match="the event has no key field 'user' \\(its fields: 'x'\\)"):
        run(graph, [{"x": 1}])

    async def skipping() -> tuple[Any, int]:
        graph = Graph()
        graph.to(MapWithState("(event, state)", key="user", on_missing_key="skip"))
        server = graph.mock_server()
        answer = await server.atest(body={"x": 1})
        step = server.plan.instances[0]
        await server.aclose()
        assert isinstance(step, MapWithState)
        return answer, step.skipped

    assert asyncio.run(skipping()) == ({"x": 1}, 1)


def test_the_event_key_can_be_the_state_key() -> None:
    async def main() -> list[Any]:
        graph = Graph()
        graph.to(MapWithState("(state + 1, state + 1)", initial_state=0, key="$key"))
        server = graph.mock_server()
        answers = []
        for key in ("a", "a", "b"):
            event = server._event("/", 0, None, None, None, None)
            event.key = key
            answers.append(await server._run(event))
        await server.aclose()
        return answers

    assert asyncio.run(main()) == [1, 2, 1]


# -- join-with-table ----------------------------------------------------------------------------


def fill(url: str, rows: dict[str, dict[str, Any]]) -> None:
    async def main() -> None:
        table = open_table(url)
        try:
            await table.set_many(list(rows.items()))
        finally:
            await table.aclose()

    asyncio.run(main())


def test_join_merges_the_row_and_handles_missing_rows(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path, "users")
    fill(url, {"u1": {"age": 30, "country": "fr"}})
    for on_missing, expected in (
        ("pass", {"user": "u9"}),
        ("drop", None),
    ):
        graph = Graph()
        graph.to(JoinWithTable(url, key="user", on_missing=on_missing))
        assert run(graph, [{"user": "u1"}, {"user": "u9"}]) == [
            {"user": "u1", "age": 30, "country": "fr"},
            expected,
        ]
    graph = Graph()
    graph.to(JoinWithTable(url, key="user", on_missing="error"), name="users")
    with pytest.raises(StepError, match="step 'users': no row for key 'u9' in table sqlite"):
        run(graph, [{"user": "u9"}])


def test_join_attributes_and_result_path(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path, "users")
    fill(url, {"u1": {"age": 30, "country": "fr"}})
    graph = Graph()
    graph.to(JoinWithTable(url, key="user", attributes=["age"], result_path="profile"))
    assert run(graph, [{"user": "u1"}]) == [{"user": "u1", "profile": {"age": 30}}]


def test_join_cache_is_bounded_and_expires(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path, "users")
    fill(url, {"u1": {"v": 1}})

    async def main() -> list[Any]:
        graph = Graph()
        graph.to(JoinWithTable(url, key="user", cache_size=1, cache_ttl_s=0.2))
        server = graph.mock_server()
        table = open_table(url)
        try:
            first = await server.atest(body={"user": "u1"})
            await table.set("u1", {"v": 2})
            cached = await server.atest(body={"user": "u1"})
            await asyncio.sleep(0.25)
            fresh = await server.atest(body={"user": "u1"})
            await server.atest(body={"user": "u2"})
            step = server.plan.instances[0]
            assert isinstance(step, JoinWithTable)
            assert list(step.cache) == ["u2"]  # one entry at most
            return [first["v"], cached["v"], fresh["v"]]
        finally:
            await table.aclose()
            await server.aclose()

    assert asyncio.run(main()) == [1, 1, 2]


def test_a_table_in_the_context_is_found_by_name() -> None:
    graph = Graph()
    graph.to(JoinWithTable("profiles", key="user"), name="join")
    with pytest.raises(GraphError, match="step 'join': no table named 'profiles'"):
        graph.mock_server()


def test_an_unreachable_table_fails_at_startup_naming_its_url() -> None:
    graph = Graph()
    graph.to(JoinWithTable("redis://127.0.0.1:1/0", key="user"))
    with pytest.raises(TableError, match=r"redis://127\.0\.0\.1:1"):
        run(graph, [{"user": "u1"}])


# -- aggregate-by-key ---------------------------------------------------------------------------


def test_aggregate_by_key_adds_features_per_key(drive_async: Driver) -> None:
    graph = Graph()
    graph.to(AggregateByKey([AMOUNT_1H], key="user", time="t"))
    send = drive_async(graph)
    answers = [
        send({"user": user, "amount": amount, "t": 1000.0 + n})
        for n, (user, amount) in enumerate([("a", 1), ("b", 5), ("a", 2)])
    ]
    assert [(a["amount_sum_1h"], a["amount_count_1h"]) for a in answers] == [
        (1, 1),
        (5, 1),
        (3, 2),
    ]


def test_aggregate_times_from_iso_strings_datetimes_and_the_event() -> None:
    graph = Graph()
    graph.to(AggregateByKey([AMOUNT_1H], key="user", time="t", result_path="features"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    answers = run(
        graph,
        [
            {"user": "a", "amount": 1, "t": start.isoformat()},
            {"user": "a", "amount": 2, "t": start.replace(minute=30)},
            {"user": "a", "amount": 4, "t": start.replace(hour=2).timestamp()},
        ],
    )
    assert [a["features"]["amount_sum_1h"] for a in answers] == [1, 3, 4]
    graph = Graph()
    graph.to(AggregateByKey([AMOUNT_1H], key="user"))
    assert run(graph, [{"user": "a", "amount": 7}])[0]["amount_sum_1h"] == 7


def test_aggregates_continue_after_a_restart_on_sqlite(tmp_path: Path) -> None:
    def graph() -> Graph:
        built = Graph()
        built.to(AggregateByKey([AMOUNT_1H], key="user", time="t", table=sqlite_url(tmp_path)))
        return built

    run(graph(), [{"user": "a", "amount": 1, "t": 100.0}, {"user": "a", "amount": 2, "t": 200.0}])
    answer = run(graph(), [{"user": "a", "amount": 4, "t": 300.0}])[0]
    assert (answer["amount_sum_1h"], answer["amount_count_1h"]) == (7, 3)


def test_events_older_than_every_window_are_ignored_and_counted() -> None:
    async def main() -> tuple[list[Any], int]:
        graph = Graph()
        graph.to(AggregateByKey([AMOUNT_1H], key="user", time="t"))
        server = graph.mock_server()
        answers = [
            await server.atest(body={"user": "a", "amount": amount, "t": t})
            for amount, t in ((1, 10_000.0), (2, 10.0))
        ]
        step = server.plan.instances[0]
        await server.aclose()
        assert isinstance(step, AggregateByKey)
        return [a["amount_sum_1h"] for a in answers], step.ignored

    assert asyncio.run(main()) == ([1, 0], 1)


def test_bad_aggregations_fail_when_the_graph_is_built() -> None:
    with pytest.raises(GraphError, match="window '1 hour' does not parse"):
        AggregateByKey([{**AMOUNT_1H, "windows": ["1 hour"]}], key="user")
    with pytest.raises(GraphError, match="unknown operation 'median'"):
        AggregateByKey([{**AMOUNT_1H, "operations": ["median"]}], key="user")


def test_state_steps_save_and_load(tmp_path: Path) -> None:
    graph = Graph()
    graph.to(AggregateByKey([AMOUNT_1H], key="user", time="t")).to(
        ToTable(sqlite_url(tmp_path), key="user")
    )
    path = tmp_path / "graph.yaml"
    graph.save(path)
    loaded = Graph.load(path)
    assert loaded.to_dict() == graph.to_dict()
    assert run(loaded, [{"user": "a", "amount": 3, "t": 5.0}])[0]["amount_sum_1h"] == 3


def test_a_table_url_with_an_unknown_scheme_fails_when_the_step_is_made() -> None:
    with pytest.raises(GraphError, match="unknown scheme; use one of memory, sqlite"):
        JoinWithTable("mongodb://127.0.0.1/users", key="user")


def test_aggregates_emitted_per_period_once_it_is_over() -> None:
    emitted: list[tuple[str, Any]] = []

    def sink(event: Any) -> Any:
        emitted.append((event.id, event.body))
        return event

    graph = Graph()
    graph.to(AggregateByKey([AMOUNT_1H], key="user", time="t", emit="10m"), name="agg").to(
        sink, full_event=True
    )
    answers = run(
        graph,
        [
            {"user": "a", "amount": 1, "t": 0.0},
            {"user": "b", "amount": 2, "t": 60.0},
            {"user": "a", "amount": 3, "t": 120.0},
            {"user": "a", "amount": 4, "t": 600.0},  # the first period is over
        ],
    )
    assert answers == [None, None, None, None]
    assert emitted == [
        ("a@600", {"user": "a", "amount_count_1h": 2, "amount_sum_1h": 4.0}),
        ("b@600", {"user": "b", "amount_count_1h": 1, "amount_sum_1h": 2.0}),
        ("a@1200", {"user": "a", "amount_count_1h": 3, "amount_sum_1h": 8.0}),  # at close
    ]


def test_emit_must_be_event_or_a_duration() -> None:
    with pytest.raises(GraphError, match="emit is 'event' or a duration such as '10m'"):
        AggregateByKey([AMOUNT_1H], key="user", emit="hourly")
