"""Tables without a server: the memory and SQLite backends (conformance suite and their own
behaviour), ``open_table`` URLs, ``mask_url`` and ``key_of``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from servegraph.errors import GraphError
from servegraph.state import memory_table, sqlite_table
from servegraph.state.memory_table import MemoryTable
from servegraph.state.sqlite_table import SqliteTable
from servegraph.state.table_conformance import CHECKS, TableFactory, run_check
from servegraph.state.tables import (
    DEFAULT_NAME,
    KeyFieldError,
    Table,
    TableError,
    TableURLError,
    key_of,
    mask_url,
    open_table,
)

Check = Callable[[TableFactory], Awaitable[None]]


def _message(error: pytest.ExceptionInfo[TableURLError]) -> str:
    (problem,) = error.value.problems
    return problem.message


# The conformance suite


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_memory_conformance(check: Check) -> None:
    def factory(name: str, *, ttl_s: float | None = None) -> Table:
        return open_table(f"memory://{name}", ttl_s=ttl_s)

    run_check(check, factory)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_sqlite_conformance(check: Check, tmp_path: Path) -> None:
    def factory(name: str, *, ttl_s: float | None = None) -> Table:
        return open_table(f"sqlite://{tmp_path}/state.db?table={name}", ttl_s=ttl_s)

    run_check(check, factory)


# open_table: URLs and options


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(TableURLError) as error:
        open_table("mongodb://host/db")
    assert _message(error) == (
        "table URL 'mongodb://host/db': unknown scheme 'mongodb'; known schemes: memory://, "
        "sqlite://, redis://, rediss://, postgresql://, postgres://"
    )
    assert isinstance(error.value, GraphError)
    assert isinstance(error.value, ValueError)


def test_unknown_scheme_message_masks_the_password() -> None:
    with pytest.raises(TableURLError) as error:
        open_table("mysql://root:hunter2@db/app")
    assert "hunter2" not in str(error.value)
    assert "mysql://root:***@db/app" in str(error.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "memory://x?table=y",
            "unknown option(s) 'table'; known: ttl",
        ),
        (
            "sqlite:///tmp/x.db?tabel=y",
            "unknown option(s) 'tabel'; known: table, ttl",
        ),
        ("sqlite:///tmp/x.db?table=a&table=b", "option 'table' is given twice"),
        (
            "sqlite://",
            "it names no database file: use sqlite:///absolute/path.db or "
            "sqlite://relative/path.db",
        ),
        ("memory://x/y", "a memory table URL is memory:// or memory://name, without a path"),
        ("sqlite:///tmp/x.db?table=", "the table name is empty"),
        ("memory://?ttl=0", "ttl must be positive, got '0'"),
        ("memory://?ttl=-5", "ttl must be positive, got '-5'"),
        (
            "memory://?ttl=1%20hour",
            "ttl '1 hour' does not parse: use a number and a unit (ms, s, m, h, d, w), "
            "e.g. '10m' or '1h' (or a number of seconds)",
        ),
    ],
)
def test_bad_urls(url: str, problem: str) -> None:
    with pytest.raises(TableURLError) as error:
        open_table(url)
    assert _message(error) == f"table URL {url!r}: {problem}"


@pytest.mark.parametrize(
    "name",
    ["users; DROP TABLE x", "1users", "user-name", 'q"uote', "a" * 56, "schema.table"],
)
def test_unsafe_sqlite_table_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(TableURLError, match="is not a safe SQL identifier"):
        open_table(f"sqlite://{tmp_path}/x.db", name=name)
    with pytest.raises(TableURLError, match="is not a safe SQL identifier"):
        SqliteTable(tmp_path / "x.db", name=name)


@pytest.mark.parametrize(
    "name", ["users; DROP TABLE x", "1users", "user-name", "a.b.c", "a" * 56, "public."]
)
def test_unsafe_postgres_table_names_are_refused(name: str) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    with pytest.raises(TableURLError) as error:
        open_table(url, name=name)
    assert _message(error) == (
        f"table URL {url!r}: table name {name!r} is not a safe SQL identifier: use letters, "
        "digits and underscores, not starting with a digit, at most 55 characters "
        "(or 'schema.table' of two such names)"
    )


def test_unknown_client_options_are_refused() -> None:
    with pytest.raises(TableURLError, match="unknown option\\(s\\) 'bogus'; known: table"):
        open_table("redis://127.0.0.1:6379/0?bogus=1")
    with pytest.raises(TableURLError, match='invalid URI query parameter: "bogus"'):
        open_table("postgresql://postgres@127.0.0.1/test?bogus=1")


@pytest.mark.parametrize(
    ("query", "seconds"),
    [("ttl=30s", 30.0), ("ttl=250ms", 0.25), ("ttl=1h30m", 5400.0), ("ttl=1.5", 1.5), ("", None)],
)
def test_ttl_option(query: str, seconds: float | None, tmp_path: Path) -> None:
    for url in (f"memory://?{query}", f"sqlite://{tmp_path}/x.db?{query}"):
        table = open_table(url)
        assert isinstance(table, MemoryTable | SqliteTable)
        assert table.ttl_s == seconds, url
        asyncio.run(table.aclose())


def test_ttl_argument_wins_over_the_url() -> None:
    table = open_table("memory://?ttl=30s", ttl_s=2)
    assert isinstance(table, MemoryTable)
    assert table.ttl_s == 2.0
    with pytest.raises(TableURLError, match="ttl_s must be a positive number of seconds"):
        open_table("memory://", ttl_s=0)


def test_names(tmp_path: Path) -> None:
    assert open_table("memory://").name == DEFAULT_NAME
    assert open_table("memory://users").name == "users"
    assert open_table("memory://", name="private").name == "private"
    assert open_table(f"sqlite://{tmp_path}/x.db").name == DEFAULT_NAME
    assert open_table(f"sqlite://{tmp_path}/x.db?table=users").name == "users"
    assert open_table(f"sqlite://{tmp_path}/x.db?table=users", name="other").name == "other"
    with pytest.raises(TableURLError, match="names the store 'a' but name='b' was given"):
        open_table("memory://a", name="b")


def test_urls_are_kept_with_the_password_masked(tmp_path: Path) -> None:
    assert open_table("memory://users").url == "memory://users"
    assert open_table(f"sqlite://{tmp_path}/x.db").url == f"sqlite://{tmp_path}/x.db"
    redis = open_table("redis://:s3cret@127.0.0.1:6379/0?prefix=p")
    assert redis.url == "redis://:***@127.0.0.1:6379/0?prefix=p"
    asyncio.run(redis.aclose())
    postgres = open_table("postgresql://me:s3cret@127.0.0.1/test?table=t")
    assert postgres.url == "postgresql://me:***@127.0.0.1/test?table=t"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("memory://", "memory://"),
        ("sqlite:///a/b.db", "sqlite:///a/b.db"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:pw@h:1/0", "redis://user:***@h:1/0"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://u:p%40ss@h/db?password=zz&sslmode=disable",
            "postgresql://u:***@h/db?password=***&sslmode=disable",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# key_of


def test_key_of() -> None:
    assert key_of({"user": 7}, ["user"], step="s") == "7"
    assert key_of({"user": "u-1", "region": "eu"}, ["region", "user"], step="s") == "eu:u-1"
    assert key_of({"a": None, "b": 1.5}, ("a", "b"), step="s") == "None:1.5"


def test_key_of_a_missing_field_names_the_step_the_field_and_the_fields() -> None:
    with pytest.raises(KeyFieldError) as error:
        key_of({"user": 1, "amount": 2}, ["user", "region"], step="enrich")
    assert isinstance(error.value, KeyError)
    assert str(error.value) == (
        "step 'enrich': the event has no key field 'region' (its fields: 'user', 'amount')"
    )
    with pytest.raises(KeyFieldError, match=r"no key field 'user' \(its fields: none\)"):
        key_of({}, ["user"], step="enrich")


def test_key_of_a_body_that_is_not_a_dict() -> None:
    with pytest.raises(KeyFieldError) as error:
        key_of([1, 2], ["user"], step="enrich")
    assert str(error.value) == (
        "step 'enrich': the table key comes from fields ['user'] of a dict body, but the body "
        "is a list"
    )


# The memory table


def test_memory_private_tables_do_not_share_and_named_ones_do() -> None:
    async def run() -> None:
        first, second = open_table("memory://"), open_table("memory://")
        await first.set("k", {"v": 1})
        assert await second.get("k") is None
        name = f"shared-{time.monotonic_ns()}"
        writer, reader = open_table(f"memory://{name}"), open_table(f"memory://{name}")
        await writer.set("k", {"v": 1})
        assert await reader.get("k") == {"v": 1}
        await writer.aclose()
        assert await reader.get("k") == {"v": 1}, "closing a table cleared its named store"

    asyncio.run(run())


def test_memory_get_returns_the_stored_dict_and_update_builds_a_new_one() -> None:
    async def run() -> None:
        table = MemoryTable()
        value = {"v": 1}
        await table.set("k", value)
        read = await table.get("k")
        assert read is value, "the memory table copies on set or get (it should not, for speed)"
        merged = await table.update("k", {"w": 2})
        assert read == {"v": 1}, "update mutated a value read before it"
        assert merged == {"v": 1, "w": 2}
        assert await table.get("k") is merged

    asyncio.run(run())


def test_memory_copies_mappings_that_are_not_dicts() -> None:
    async def run() -> None:
        table = MemoryTable()
        await table.set("k", _Row(v=1))
        read = await table.get("k")
        assert type(read) is dict
        assert read == {"v": 1}

    asyncio.run(run())


class _Row(dict[str, int]):
    """A dict subclass (a Mapping that is not exactly a dict)."""


def test_memory_purges_expired_keys_that_are_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(memory_table, "_monotonic", lambda: now[0])

    async def run() -> MemoryTable:
        table = MemoryTable()
        await table.set_many([(f"old-{i}", {"i": i}) for i in range(1000)], ttl_s=1)
        await table.set("forever", {"v": 1})
        now[0] += 2  # every old key expired, none was read
        for i in range(10):
            await table.set(f"new-{i}", {"i": i}, ttl_s=60)
        return table

    table = asyncio.run(run())
    store = table._store  # the purge is invisible through the interface: look inside
    assert len(store.values) == 11, f"{len(store.values) - 11} expired keys were not purged"
    assert set(store.deadlines) == {f"new-{i}" for i in range(10)}


def test_memory_heap_stays_bounded_when_keys_are_written_again() -> None:
    async def run() -> MemoryTable:
        table = MemoryTable(ttl_s=3600)
        for i in range(20_000):
            await table.set(f"k{i % 10}", {"i": i})
        return table

    table = asyncio.run(run())
    assert len(table._store.heap) <= 2 * 10 + 1024 + 1, len(table._store.heap)
    assert len(table._store.deadlines) == 10


# The SQLite table


def test_sqlite_relative_path_and_created_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def run() -> None:
        table = open_table("sqlite://data/sub/state.db?table=users")
        try:
            await table.set("k", {"v": 1})
        finally:
            await table.aclose()

    asyncio.run(run())
    with sqlite3.connect(tmp_path / "data" / "sub" / "state.db") as db:
        rows = db.execute("SELECT key, value, expires_at FROM users").fetchall()
        mode = db.execute("PRAGMA journal_mode").fetchone()
    assert rows == [("k", '{"v":1}', None)]
    assert mode == ("wal",)


def test_sqlite_runs_every_call_on_one_worker_thread(tmp_path: Path) -> None:
    threads: set[int] = set()

    class Traced(SqliteTable):
        def _db(self) -> sqlite3.Connection:
            threads.add(threading.get_ident())
            return super()._db()

    async def run() -> None:
        table = Traced(tmp_path / "x.db")
        try:
            await asyncio.gather(*(table.update(f"k{i % 7}", {str(i): i}) for i in range(50)))
            await table.get_many(["k1", "k2"])
        finally:
            await table.aclose()

    asyncio.run(run())
    assert len(threads) == 1
    assert threading.get_ident() not in threads, "sqlite ran on the event loop's thread"


def test_sqlite_updates_are_atomic_across_connections(tmp_path: Path) -> None:
    """Two tables on one file (two connections, as two processes would have) update one key
    concurrently: no update is lost (BEGIN IMMEDIATE)."""

    async def run() -> dict[str, object] | None:
        first = SqliteTable(tmp_path / "x.db")
        second = SqliteTable(tmp_path / "x.db")
        try:
            await first.ping()
            await second.ping()
            await asyncio.gather(
                *(first.update("hot", {f"a{i}": i}) for i in range(50)),
                *(second.update("hot", {f"b{i}": i}) for i in range(50)),
            )
            return await first.get("hot")
        finally:
            await first.aclose()
            await second.aclose()

    got = asyncio.run(run())
    assert got is not None
    assert len(got) == 100, f"lost updates: {sorted({f'a{i}' for i in range(50)} - set(got))}"


def test_sqlite_cleanup_deletes_expired_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_table, "CLEANUP_INTERVAL_S", 0.0)

    async def run() -> None:
        table = SqliteTable(tmp_path / "x.db")
        try:
            await table.set_many([(f"k{i}", {"i": i}) for i in range(20)], ttl_s=0.05)
            await asyncio.sleep(0.1)
            await table.set("trigger", {"v": 1})
        finally:
            await table.aclose()

    asyncio.run(run())
    with sqlite3.connect(tmp_path / "x.db") as db:
        keys = db.execute(f'SELECT key FROM "{DEFAULT_NAME}"').fetchall()
    assert keys == [("trigger",)]


def test_sqlite_unopenable_file_raises_table_error_naming_the_url(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    url = f"sqlite://{tmp_path}/file/state.db"

    async def run() -> None:
        table = open_table(url)
        try:
            await table.ping()
        finally:
            await table.aclose()

    with pytest.raises(TableError) as error:
        asyncio.run(run())
    assert str(error.value).startswith(f"table 'state' at {url}: opening the database failed: ")
    assert error.value.retryable is False


def test_sqlite_values_that_are_not_json_raise_type_error(tmp_path: Path) -> None:
    async def run() -> None:
        table = SqliteTable(tmp_path / "x.db")
        try:
            with pytest.raises(TypeError):
                await table.set("k", {"v": object()})
            with pytest.raises(TypeError):
                await table.update("k", {"v": object()})
            assert await table.get("k") is None
        finally:
            await table.aclose()

    asyncio.run(run())
