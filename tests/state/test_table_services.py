"""The Redis and PostgreSQL tables against real local servers: the conformance suite plus what
is particular to each (layout, TTLs, unreachable servers, options).

The servers come from ``SERVEGRAPH_REDIS_URL`` (default ``redis://127.0.0.1:6379``) and
``SERVEGRAPH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``, trust
auth); ``scripts/services.sh`` starts them. There is no skip: without them these tests fail.
Each test uses its own key prefix or table names and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql
from redis import exceptions as redis_exceptions

from servegraph.state import postgres_table
from servegraph.state.postgres_table import PostgresTable
from servegraph.state.redis_table import RedisTable
from servegraph.state.table_conformance import CHECKS, TableFactory, run_check
from servegraph.state.tables import Table, TableError, TableURLError, open_table

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("SERVEGRAPH_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get(
    "SERVEGRAPH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_S = 5.0
"""How long an unreachable server may take to be reported."""

Check = Callable[[TableFactory], Awaitable[None]]


def _with_options(url: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _unique(what: str) -> str:
    return f"sg_test_{what}_{uuid.uuid4().hex[:12]}"


# Servers, and cleaning up after a test


@pytest.fixture(scope="module", autouse=True)
def _servers_are_up() -> None:
    """Fail (never skip) with a clear message when a server is not reachable."""

    async def ping_redis() -> None:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping_redis())
    except redis_exceptions.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with scripts/services.sh "
            "or point SERVEGRAPH_REDIS_URL at a server",
            pytrace=False,
        )
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); start it with "
            "scripts/services.sh or point SERVEGRAPH_POSTGRES_URL at a server",
            pytrace=False,
        )


async def _delete_redis_keys(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _drop_postgres_tables(names: list[str]) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        for name in names:
            table = sql.Identifier(*name.split("."))
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = _unique("redis")
    yield prefix
    asyncio.run(_delete_redis_keys(prefix))


@pytest.fixture
def postgres_tables() -> Iterator[list[str]]:
    """The names of the tables this test makes (it appends them); dropped afterwards."""
    names: list[str] = []
    yield names
    _drop_postgres_tables(names)


@asynccontextmanager
async def _closing(table: Table) -> AsyncIterator[Table]:
    try:
        yield table
    finally:
        await table.aclose()


def _redis_client() -> Any:
    return aioredis.Redis.from_url(REDIS_URL)


# Conformance


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_redis_conformance(check: Check, redis_prefix: str) -> None:
    def factory(name: str, *, ttl_s: float | None = None) -> Table:
        return open_table(_with_options(REDIS_URL, prefix=redis_prefix, table=name), ttl_s=ttl_s)

    run_check(check, factory)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_postgres_conformance(check: Check, postgres_tables: list[str]) -> None:
    def factory(name: str, *, ttl_s: float | None = None) -> Table:
        postgres_tables.append(name)
        return open_table(_with_options(POSTGRES_URL, table=name), ttl_s=ttl_s)

    run_check(check, factory)


# Unreachable servers


@pytest.mark.parametrize(
    ("url", "masked", "cause"),
    [
        (
            "redis://:s3cret@127.0.0.1:1/0",
            "redis://:***@127.0.0.1:1/0",
            "ConnectionError: Error 111 connecting to 127.0.0.1:1",
        ),
        (
            "postgresql://postgres:s3cret@127.0.0.1:1/t?table=t",
            "postgresql://postgres:***@127.0.0.1:1/t?table=t",
            "OperationalError: connection failed",
        ),
    ],
)
def test_unreachable_server_raises_table_error_naming_the_url(
    url: str, masked: str, cause: str
) -> None:
    async def run() -> list[TableError]:
        errors = []
        table = open_table(url)
        calls: list[Callable[[], Awaitable[object]]] = [
            table.ping,
            lambda: table.get("k"),
            lambda: table.set("k", {"v": 1}),
        ]
        try:
            for call in calls:
                try:
                    await call()
                except TableError as exc:
                    errors.append(exc)
        finally:
            await table.aclose()
        return errors

    started = time.monotonic()
    errors = asyncio.run(run())
    took = time.monotonic() - started
    assert took < UNREACHABLE_S, f"an unreachable server took {took:.1f} s to report"
    assert len(errors) == 3, "a call on an unreachable server did not raise TableError"
    for error in errors:
        message = str(error)
        name = "t" if "table=t" in url else "state"
        assert message.startswith(f"table '{name}' at {masked}: "), message
        assert "s3cret" not in message
        assert cause in message, f"the message does not say why: {message}"
        assert error.retryable is True


def test_unknown_redis_option_is_refused() -> None:
    with pytest.raises(TableURLError, match="unknown option\\(s\\) 'tabel'"):
        open_table(_with_options(REDIS_URL, tabel="x"))


def test_redis_client_options_pass_through() -> None:
    table = open_table(_with_options(REDIS_URL, socket_timeout="2", table="t"))
    assert isinstance(table, RedisTable)
    kwargs = table._client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.0
    asyncio.run(table.aclose())


# Redis: the layout


def test_redis_layout_a_hash_of_json_fields_under_prefix_name_key(redis_prefix: str) -> None:
    async def run() -> tuple[dict[bytes, bytes], int, bytes | None]:
        url = _with_options(REDIS_URL, prefix=redis_prefix, table="users")
        async with _closing(open_table(url)) as table:
            await table.set("u:1", {"name": "Ada", "tags": ["x"], "n": 1})
            await table.set("empty", {})
            client = _redis_client()
            try:
                fields = await client.hgetall(f"{redis_prefix}:users:u:1")
                ttl = await client.pttl(f"{redis_prefix}:users:u:1")
                marker = await client.hget(f"{redis_prefix}:users:empty", "")
            finally:
                await client.aclose()
            assert await table.get("empty") == {}
            return fields, ttl, marker

    fields, ttl, marker = asyncio.run(run())
    assert fields == {b"name": b'"Ada"', b"tags": b'["x"]', b"n": b"1"}
    assert ttl == -1, "a key written without a TTL has one"
    assert marker == b"", "an empty value is not kept by its marker field"


def test_redis_ttls_are_pexpire(redis_prefix: str) -> None:
    async def run() -> list[int]:
        url = _with_options(REDIS_URL, prefix=redis_prefix, table="t", ttl="30s")
        async with _closing(open_table(url)) as table:
            await table.set("default", {"v": 1})
            await table.set("call", {"v": 1}, ttl_s=5)
            await table.update("updated", {"v": 1}, ttl_s=7)
            client = _redis_client()
            try:
                return [
                    await client.pttl(f"{redis_prefix}:t:{key}")
                    for key in ("default", "call", "updated")
                ]
            finally:
                await client.aclose()

    default, call, updated = asyncio.run(run())
    assert 29_000 < default <= 30_000
    assert 4_000 < call <= 5_000
    assert 6_000 < updated <= 7_000


def test_redis_update_without_ttl_persists_the_key(redis_prefix: str) -> None:
    async def run() -> int:
        url = _with_options(REDIS_URL, prefix=redis_prefix, table="t")
        async with _closing(open_table(url)) as table:
            await table.set("k", {"v": 1}, ttl_s=30)
            await table.update("k", {"w": 2})
            client = _redis_client()
            try:
                return int(await client.pttl(f"{redis_prefix}:t:k"))
            finally:
                await client.aclose()

    assert asyncio.run(run()) == -1


def test_redis_user_field_named_empty_string_is_kept(redis_prefix: str) -> None:
    async def run() -> list[Any]:
        url = _with_options(REDIS_URL, prefix=redis_prefix, table="t")
        async with _closing(open_table(url)) as table:
            await table.set("k", {"": "", "x": 1})
            await table.update("e", {})
            merged = await table.update("e", {"": None})
            return [await table.get("k"), merged]

    assert asyncio.run(run()) == [{"": "", "x": 1}, {"": None}]


# PostgreSQL: the layout and options


def test_postgres_layout(postgres_tables: list[str]) -> None:
    name = _unique("layout")
    postgres_tables.append(name)

    async def run() -> None:
        async with _closing(open_table(_with_options(POSTGRES_URL, table=name))) as table:
            await table.set("k", {"v": [1, 2]}, ttl_s=60)

    asyncio.run(run())
    with psycopg.connect(POSTGRES_URL) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            (name,),
        ).fetchall()
        row = connection.execute(
            sql.SQL("SELECT value, expires_at > now() + interval '50 seconds' FROM {}").format(
                sql.Identifier(name)
            )
        ).fetchone()
    assert columns == [
        ("key", "text", "NO"),
        ("value", "jsonb", "NO"),
        ("expires_at", "timestamp with time zone", "YES"),
    ]
    assert row == ({"v": [1, 2]}, True)


def test_postgres_schema_qualified_table(postgres_tables: list[str]) -> None:
    name = _unique("schema")
    postgres_tables.append(f"public.{name}")

    async def run() -> dict[str, Any] | None:
        url = _with_options(POSTGRES_URL, table=f"public.{name}")
        async with _closing(open_table(url)) as table:
            await table.set("k", {"v": 1})
            return await table.get("k")

    assert asyncio.run(run()) == {"v": 1}


def test_postgres_cleanup_deletes_expired_rows(
    postgres_tables: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_table, "CLEANUP_INTERVAL_S", 0.0)
    name = _unique("cleanup")
    postgres_tables.append(name)

    async def run() -> None:
        async with _closing(open_table(_with_options(POSTGRES_URL, table=name))) as table:
            await table.set_many([(f"k{i}", {"i": i}) for i in range(20)], ttl_s=0.05)
            await asyncio.sleep(0.1)
            await table.set("trigger", {"v": 1})

    asyncio.run(run())
    with psycopg.connect(POSTGRES_URL) as connection:
        keys = connection.execute(
            sql.SQL("SELECT key FROM {}").format(sql.Identifier(name))
        ).fetchall()
    assert keys == [("trigger",)]


def test_postgres_refused_value_is_a_table_error(postgres_tables: list[str]) -> None:
    name = _unique("nul")
    postgres_tables.append(name)

    async def run() -> None:
        async with _closing(open_table(_with_options(POSTGRES_URL, table=name))) as table:
            await table.set("k", {"v": "nul \u0000 character"})

    with pytest.raises(TableError) as error:
        asyncio.run(run())
    assert f"table '{name}' at {_with_options(POSTGRES_URL, table=name)}: set failed" in str(
        error.value
    )
    assert error.value.retryable is False


def test_postgres_two_tables_create_one_table_concurrently(postgres_tables: list[str]) -> None:
    name = _unique("race")
    postgres_tables.append(name)

    async def run() -> list[dict[str, Any]]:
        tables = [PostgresTable(POSTGRES_URL, name=name) for _ in range(4)]
        try:
            return await asyncio.gather(
                *(table.update("k", {f"t{i}": i}) for i, table in enumerate(tables))
            )
        finally:
            for table in tables:
                await table.aclose()

    results = asyncio.run(run())
    assert max(len(result) for result in results) == 4


@pytest.mark.parametrize("server", ["redis", "postgresql"])
def test_calls_from_another_event_loop_are_refused(
    server: str, redis_prefix: str, postgres_tables: list[str]
) -> None:
    """Connections belong to the loop of the table's first call: another loop gets a clear
    TableError (not a RuntimeError from deep inside the client)."""
    name = _unique("loop")
    postgres_tables.append(name)
    if server == "redis":
        table = open_table(_with_options(REDIS_URL, table=name, prefix=redis_prefix))
    else:
        table = open_table(_with_options(POSTGRES_URL, table=name))
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(table.set("k", {"v": 1}))
        with pytest.raises(TableError) as error:
            asyncio.run(table.get("k"))
        assert str(error.value) == (
            f"table {name!r} at {table.url} is used from another event loop than its first "
            "call's, which its connections belong to: open one table per event loop"
        )
        assert first.run_until_complete(table.get("k")) == {"v": 1}
        first.run_until_complete(table.aclose())
    finally:
        first.close()


def test_more_concurrent_redis_calls_than_connections_wait_for_one(redis_prefix: str) -> None:
    from servegraph.state.redis_table import MAX_CONNECTIONS

    async def main() -> list[Any]:
        url = _with_options(REDIS_URL, prefix=redis_prefix, table="busy")
        async with _closing(open_table(url)) as table:
            await table.set("k", {"v": 1})
            return await asyncio.gather(*(table.get("k") for _ in range(MAX_CONNECTIONS * 10)))

    assert asyncio.run(main()) == [{"v": 1}] * 320
