"""The conformance suite that every :class:`~servegraph.state.tables.Table` must pass.

Each check is a plain coroutine function taking a :class:`TableFactory`. It opens tables on a
fresh name (``sg_conformance_<hex>``, a safe SQL identifier), closes every table it opens,
raises ``AssertionError`` with a clear message when the table misbehaves, and finishes within
10 seconds (a hang is reported as an ``AssertionError`` naming the step it was waiting on).
Removing what a check stored is the caller's job: the factory sees every name it is asked to
open, so a test can record them and drop the tables (or delete the keys) afterwards.

Run them from a test, for example parametrised over :data:`CHECKS`::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    def test_conformance(check: Callable[[TableFactory], Awaitable[None]]) -> None:
        run_check(check, factory)
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .tables import Table, TableError

__all__ = [
    "CHECKS",
    "TableFactory",
    "check_aclose_is_idempotent",
    "check_concurrent_updates",
    "check_delete",
    "check_get_missing",
    "check_large_batches",
    "check_reopen",
    "check_round_trip",
    "check_set_many_get_many",
    "check_ttl",
    "check_update",
    "run_check",
]


class TableFactory(Protocol):
    """Opens the table named ``name`` with the default TTL ``ttl_s``; opening a name again
    opens the same stored table (so what was written before a close is read after it)."""

    def __call__(self, name: str, *, ttl_s: float | None = None) -> Table: ...


_TIME_LIMIT_S = 10.0
_TTL_S = 0.5
"""The TTL of the expiry checks: long enough for the writes and reads that must see the keys
before it passes, short enough to keep the check quick."""


class _Progress:
    """What a check is doing, so that a timeout says where it hung."""

    def __init__(self) -> None:
        self.step = "starting"


@asynccontextmanager
async def _bounded(check: str) -> AsyncIterator[_Progress]:
    """Run a check's body within ``_TIME_LIMIT_S``, reporting a hang as an AssertionError."""
    progress = _Progress()
    try:
        async with asyncio.timeout(_TIME_LIMIT_S):
            yield progress
    except TimeoutError as exc:
        msg = f"{check}: timed out after {_TIME_LIMIT_S:g} s while {progress.step}"
        raise AssertionError(msg) from exc


@asynccontextmanager
async def _opened(
    factory: TableFactory, name: str, ttl_s: float | None = None
) -> AsyncIterator[Table]:
    table = factory(name, ttl_s=ttl_s)
    try:
        yield table
    finally:
        await table.aclose()


def _table_name() -> str:
    return f"sg_conformance_{uuid.uuid4().hex[:16]}"


SAMPLE: dict[str, Any] = {
    "int": 7,
    "big": 2**63 - 1,
    "negative": -(2**53) - 1,
    "float": 0.1,
    "tiny": 1e-300,
    "bool": True,
    "none": None,
    "text": "naïve café ✓ 日本語 😀",
    "empty_text": "",
    "list": [1, "two", 3.5, None, [4], {"five": 5}],
    "empty_list": [],
    "nested": {"a": {"b": {"c": [1, 2, {"d": "deep"}]}}, "e": {}},
    "clé unicode ü": "värde",
    "with:colon and space": 1,
}
"""A value with every JSON type, nesting, unicode and extreme numbers."""


async def check_get_missing(factory: TableFactory) -> None:
    """A missing key reads as None (alone and in a batch); deleting it says it did not exist."""
    async with _bounded("check_get_missing") as progress, _opened(factory, _table_name()) as t:
        progress.step = "getting a missing key"
        got = await t.get("missing")
        assert got is None, f"get of a missing key returned {got!r}, not None"
        many = await t.get_many(["missing-1", "missing-2"])
        assert many == [None, None], f"get_many of missing keys returned {many!r}"
        empty = await t.get_many([])
        assert empty == [], f"get_many([]) returned {empty!r}"
        existed = await t.delete("missing")
        assert existed is False, f"delete of a missing key returned {existed!r}, not False"


async def check_round_trip(factory: TableFactory) -> None:
    """What ``set`` stored, ``get`` returns equal: every JSON type, nesting, unicode, large
    numbers, the empty dict, keys with unicode, colons and spaces; a second ``set`` replaces."""
    async with _bounded("check_round_trip") as progress, _opened(factory, _table_name()) as t:
        keys = ("plain", "user:42/ü x", "日本", "")
        for key in keys:
            progress.step = f"setting key {key!r}"
            await t.set(key, SAMPLE)
        for key in keys:
            got = await t.get(key)
            assert got == SAMPLE, f"key {key!r}: get returned {got!r}, expected {SAMPLE!r}"
            assert type(got) is dict, f"key {key!r}: get returned a {type(got).__name__}"
        progress.step = "setting an empty value"
        await t.set("empty", {})
        got = await t.get("empty")
        assert got == {}, f"an empty value came back as {got!r}"
        progress.step = "replacing a value"
        await t.set("plain", {"only": "this"})
        got = await t.get("plain")
        assert got == {"only": "this"}, f"set replaces the value, but get returned {got!r}"
        await t.set("empty", {"now": 1})
        got = await t.get("empty")
        assert got == {"now": 1}, f"set over an empty value: get returned {got!r}"
        await t.set("plain", {})
        got = await t.get("plain")
        assert got == {}, f"set of {{}} over a value: get returned {got!r}"


async def check_set_many_get_many(factory: TableFactory) -> None:
    """``get_many`` answers in the order of its keys (repeats and missing keys included);
    ``set_many`` writes every item, the last value of a repeated key winning."""
    async with (
        _bounded("check_set_many_get_many") as progress,
        _opened(factory, _table_name()) as t,
    ):
        items = [(f"k{i}", {"i": i, "name": f"n{i}"}) for i in range(50)]
        progress.step = "set_many of 50 items"
        await t.set_many(items)
        expected = dict(items)
        keys = [key for key, _ in items] + ["missing-a", "k3", "missing-b", "k49"]
        random.Random(7).shuffle(keys)
        progress.step = "get_many of 54 keys"
        got = await t.get_many(keys)
        assert len(got) == len(keys), f"get_many of {len(keys)} keys returned {len(got)} values"
        for key, value in zip(keys, got, strict=True):
            assert value == expected.get(key), (
                f"get_many: key {key!r} came back as {value!r}, expected {expected.get(key)!r}"
            )
        progress.step = "set_many with a repeated key"
        await t.set_many([("dup", {"v": 1}), ("other", {"v": 0}), ("dup", {"v": 2})])
        got = await t.get_many(["dup", "other"])
        assert got == [{"v": 2}, {"v": 0}], f"set_many: the last value should win, got {got!r}"
        await t.set_many([])
        got = await t.get_many(["k0"])
        assert got == [expected["k0"]], f"set_many([]) changed something: {got!r}"


async def check_update(factory: TableFactory) -> None:
    """``update`` creates a missing key, merges fields (top level only) into an existing
    value, leaves other keys alone and returns the merged value."""
    async with _bounded("check_update") as progress, _opened(factory, _table_name()) as t:
        progress.step = "updating a missing key"
        merged = await t.update("u", {"a": 1, "n": {"x": 1}})
        assert merged == {"a": 1, "n": {"x": 1}}, f"update of a missing key returned {merged!r}"
        await t.set("other", {"a": "untouched"})
        progress.step = "updating an existing key"
        merged = await t.update("u", {"b": "two", "n": {"y": 2}})
        expected = {"a": 1, "b": "two", "n": {"y": 2}}
        assert merged == expected, f"update returned {merged!r}, expected {expected!r}"
        got = await t.get("u")
        assert got == expected, f"after update, get returned {got!r}, expected {expected!r}"
        merged = await t.update("u", {"a": None})
        assert merged == {**expected, "a": None}, f"update to None returned {merged!r}"
        merged = await t.update("u", {})
        assert merged == {**expected, "a": None}, f"update with no changes returned {merged!r}"
        other = await t.get("other")
        assert other == {"a": "untouched"}, f"update of 'u' changed 'other': {other!r}"
        progress.step = "updating a missing key with no changes"
        merged = await t.update("fresh", {})
        assert merged == {}, f"update of a missing key with {{}} returned {merged!r}"
        got = await t.get("fresh")
        assert got == {}, f"update of a missing key with {{}} stored {got!r}"
        merged = await t.update("fresh", {"z": [1]})
        assert merged == {"z": [1]}, f"update after an empty value returned {merged!r}"


async def check_delete(factory: TableFactory) -> None:
    """``delete`` says whether the key existed, and the key is gone."""
    async with _bounded("check_delete") as progress, _opened(factory, _table_name()) as t:
        await t.set("d", {"x": 1})
        await t.set("keep", {"x": 2})
        progress.step = "deleting"
        existed = await t.delete("d")
        assert existed is True, f"delete of an existing key returned {existed!r}, not True"
        got = await t.get("d")
        assert got is None, f"a deleted key reads as {got!r}"
        again = await t.delete("d")
        assert again is False, f"deleting twice returned {again!r} the second time, not False"
        kept = await t.get("keep")
        assert kept == {"x": 2}, f"deleting 'd' changed 'keep': {kept!r}"


async def check_ttl(factory: TableFactory) -> None:
    """Keys expire after the TTL of their write (the call's, else the table's default);
    a write without either leaves its key without one; expired keys read as missing
    everywhere and an update of one starts afresh."""
    loop = asyncio.get_running_loop()
    async with (
        _bounded("check_ttl") as progress,
        _opened(factory, _table_name(), ttl_s=_TTL_S) as short,
        _opened(factory, _table_name()) as plain,
    ):
        progress.step = "connecting"
        await short.ping()
        await plain.ping()
        progress.step = "writing keys with TTLs"
        started = loop.time()
        # the table's default TTL, on every kind of write
        await short.set("s-set", {"v": 1})
        await short.set_many([("s-many-1", {"v": 1}), ("s-many-2", {"v": 2})])
        await short.update("s-update", {"v": 1})
        await short.set("s-long", {"v": 1}, ttl_s=30)  # the call's TTL over the default
        # the call's TTL on a table without a default
        await plain.set("p-set", {"v": 1}, ttl_s=_TTL_S)
        await plain.set_many([("p-many", {"v": 1})], ttl_s=_TTL_S)
        await plain.update("p-update", {"old": True}, ttl_s=_TTL_S)
        await plain.set("p-cleared", {"v": 1}, ttl_s=_TTL_S)
        await plain.set("p-cleared", {"v": 2})  # a write without a TTL clears it
        await plain.set("p-forever", {"v": 1})
        expiring = {
            short: ["s-set", "s-many-1", "s-many-2", "s-update"],
            plain: ["p-set", "p-many", "p-update"],
        }
        before = [await table.get_many(keys) for table, keys in expiring.items()]
        elapsed = loop.time() - started
        assert elapsed < _TTL_S, f"the writes took {elapsed:.3f} s, longer than the TTL"
        for (table, keys), values in zip(expiring.items(), before, strict=True):
            assert None not in values, f"{table.name}: keys {keys} missing before the TTL: {values}"
        progress.step = "waiting for the keys to expire"
        await asyncio.sleep(started + _TTL_S + 0.3 - loop.time())
        for table, keys in expiring.items():
            for key in keys:
                got = await table.get(key)
                assert got is None, f"key {key!r} still reads as {got!r} after its TTL"
            many = await table.get_many(keys)
            assert many == [None] * len(keys), f"get_many after the TTL returned {many!r}"
        long = await short.get("s-long")
        assert long == {"v": 1}, f"a key written with ttl_s=30 expired with the default: {long!r}"
        cleared = await plain.get("p-cleared")
        assert cleared == {"v": 2}, f"a write without TTL kept the old TTL: read {cleared!r}"
        forever = await plain.get("p-forever")
        assert forever == {"v": 1}, f"a key written without TTL reads as {forever!r}"
        progress.step = "writing over expired keys"
        merged = await plain.update("p-update", {"new": True})
        assert merged == {"new": True}, f"update of an expired key merged old fields: {merged!r}"
        existed = await plain.delete("p-set")
        assert existed is False, f"delete of an expired key returned {existed!r}, not False"
        for bad in (0, -1.0, float("inf")):
            try:
                await plain.set("bad", {"v": 1}, ttl_s=bad)
            except ValueError:
                continue
            msg = f"set with ttl_s={bad!r} did not raise ValueError"
            raise AssertionError(msg)


async def check_concurrent_updates(factory: TableFactory) -> None:
    """100 concurrent updates of different fields of one key all land (updates are atomic)."""
    async with (
        _bounded("check_concurrent_updates") as progress,
        _opened(factory, _table_name()) as t,
    ):
        await t.ping()
        progress.step = "running 100 concurrent updates of one key"
        results = await asyncio.gather(*(t.update("hot", {f"f{i}": i}) for i in range(100)))
        for i, merged in enumerate(results):
            assert merged.get(f"f{i}") == i, f"update {i} returned {merged!r}, without f{i}={i}"
        got = await t.get("hot")
        expected = {f"f{i}": i for i in range(100)}
        assert got == expected, (
            f"after 100 concurrent updates, fields {sorted(set(expected) - set(got or {}))} "
            "are missing: updates are not atomic"
        )
        progress.step = "running 100 concurrent updates of different keys"
        await asyncio.gather(*(t.update(f"key-{i}", {"i": i}) for i in range(100)))
        many = await t.get_many([f"key-{i}" for i in range(100)])
        assert many == [{"i": i} for i in range(100)], f"concurrent updates of keys: {many!r}"


async def check_large_batches(factory: TableFactory) -> None:
    """Batches of 1,500 keys with fields of every size are written and read back whole."""
    async with _bounded("check_large_batches") as progress, _opened(factory, _table_name()) as t:
        items = [(f"row-{i}", {"i": i, "pad": "x" * (i % 50)}) for i in range(1500)]
        items.append(("wide", {f"field{i}": i for i in range(1200)}))
        progress.step = "set_many of 1,501 rows"
        await t.set_many(items)
        keys = [key for key, _ in items] + ["nothing"]
        progress.step = "get_many of 1,502 keys"
        got = await t.get_many(keys)
        expected = [*(value for _, value in items), None]
        assert got == expected, "get_many of 1,502 keys did not return what set_many wrote"
        merged = await t.update("wide", {f"more{i}": i for i in range(1200)})
        assert len(merged) == 2400, f"update of 1,200 fields into 1,200: {len(merged)} fields"


async def check_reopen(factory: TableFactory) -> None:
    """What was written before a table is closed is read by a table opened again on it."""
    name = _table_name()
    async with _bounded("check_reopen") as progress:
        async with _opened(factory, name) as first:
            progress.step = "writing before closing"
            await first.set("kept", {"v": "before close"})
            await first.update("merged", {"a": 1})
        async with _opened(factory, name) as second:
            progress.step = "reading after reopening"
            got = await second.get_many(["kept", "merged"])
            assert got == [{"v": "before close"}, {"a": 1}], f"after reopening, read {got!r}"


async def check_aclose_is_idempotent(factory: TableFactory) -> None:
    """``aclose()`` may be called twice; calls after it raise TableError; ``name`` and
    ``url`` are strings and ``ping`` succeeds on an open table."""
    async with _bounded("check_aclose_is_idempotent") as progress:
        table = factory(_table_name())
        assert isinstance(table.name, str), f"name is a {type(table.name).__name__}, not a str"
        assert isinstance(table.url, str), f"url is a {type(table.url).__name__}, not a str"
        progress.step = "pinging"
        await table.ping()
        await table.set("x", {"v": 1})
        progress.step = "closing twice"
        await table.aclose()
        await table.aclose()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: table.get("x"),
            "set": lambda: table.set("x", {"v": 2}),
            "update": lambda: table.update("x", {"v": 2}),
            "ping": table.ping,
        }
        for what, call in calls.items():
            try:
                await call()
            except TableError:
                continue
            msg = f"{what} after aclose did not raise TableError"
            raise AssertionError(msg)


CHECKS: tuple[Callable[[TableFactory], Awaitable[None]], ...] = (
    check_get_missing,
    check_round_trip,
    check_set_many_get_many,
    check_update,
    check_delete,
    check_ttl,
    check_concurrent_updates,
    check_large_batches,
    check_reopen,
    check_aclose_is_idempotent,
)
"""Every check, in a stable order (use ``check.__name__`` as the test id)."""


def run_check(check: Callable[[TableFactory], Awaitable[None]], factory: TableFactory) -> None:
    """Run one check to completion on a new event loop (what a test of a backend calls)."""

    async def checked() -> None:
        await check(factory)

    asyncio.run(checked())
