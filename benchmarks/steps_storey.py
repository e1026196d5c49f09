"""The storey side of ``benchmarks/steps_bench.py``, and the workload both sides share.

Run by the storey virtual environment's python (``steps_bench.py`` makes it):
``.venv-storey/bin/python benchmarks/steps_storey.py --flows a,b --events N --runs R``. It never
imports servegraph and prints one JSON line: the storey version and, per flow and variant, the
best events/s, the number of runs, and what the flow produced (for the driver to check against
servegraph's). ``steps_bench.py`` imports the workload from here (bodies and functions), so that
both sides run exactly the same code; storey is imported with ``importlib`` only when this runs as
a script, so that .venv (without storey) type-checks and imports this module as it is.

- (a) ``{"id": i, "x": float(i % 100), "label": "a"}`` -> map ``y = x * 2`` -> filter
  ``id % 10 != 0`` -> map to ``{"id", "y"}`` -> batch(100) -> reduce counting the batches' items.
- (b) ``{"key": "user-K", "time": epoch s, "amount": A}`` over ``KEYS`` keys, times spread over
  a day -> aggregate-by-key (sum, count, avg, max of ``amount`` over sliding windows of 1h, 6h and
  24h every 10m) -> reduce keeping each key's last body (its features).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

STOREY_VERSION = "1.14.1"
"""The pinned storey (the version this benchmark was written against)."""
STOREY_REQUIREMENTS = (f"storey[redis]=={STOREY_VERSION}", "packaging")
"""What the storey venv installs: storey 1.14.1 imports ``packaging`` without declaring it."""

BATCH_SIZE = 100
KEYS = 10_000
START = 1_700_000_000.0
"""Epoch seconds of the first (b) event."""
SPAN_S = 86_400.0
"""(b) event times increase evenly over a day."""
OPERATIONS = ("sum", "count", "avg", "max")
WINDOWS = ("1h", "6h", "24h")
PERIOD = "10m"
FEATURES = tuple(f"amount_{op}_{window}" for window in WINDOWS for op in OPERATIONS)
SAMPLE_KEYS = tuple(f"user-{k}" for k in range(0, KEYS, 500))
"""The keys whose final features both sides report, to check they compute the same."""
REPEAT_LIMIT_S = 10.0
"""A variant whose run took longer than this is not run again (the default command stays near
ten minutes with storey's slow variants; their spread is small next to the ratios)."""
SYNC_SOURCE_EVENTS = 200_000
"""storey's SyncEmitSource runs at most this many events of (a): its rate is flat (12,700/s over
1,000,000 events, 13,100/s over 20,000) and a full run would take 80 s of the ten minutes."""

Body = dict[str, Any]


# -- the workload ----------------------------------------------------------------------------


def a_bodies(events: int) -> list[Body]:
    return [{"id": i, "x": float(i % 100), "label": "a"} for i in range(events)]


def add_y(body: Body) -> Body:
    return {**body, "y": body["x"] * 2}


def keep(body: Body) -> bool:
    return bool(body["id"] % 10 != 0)


def project(body: Body) -> Body:
    return {"id": body["id"], "y": body["y"]}


def count_items(total: int, batch: list[Body]) -> int:
    return total + len(batch)


def a_expected(events: int) -> int:
    """How many items the batches of (a) hold: the ids that are not multiples of 10."""
    return events - (events + 9) // 10


def b_bodies(events: int, seed: int = 7) -> list[Body]:
    rng = random.Random(seed)
    names = [f"user-{k}" for k in range(KEYS)]
    step = SPAN_S / events
    return [
        {
            "key": names[rng.randrange(KEYS)],
            "time": START + i * step,
            "amount": round(rng.uniform(0, 500), 2),
        }
        for i in range(events)
    ]


def last_per_key(last: dict[str, Body], body: Body) -> dict[str, Body]:
    last[body["key"]] = body
    return last


def sample(last: dict[str, Body]) -> dict[str, dict[str, float]]:
    """The features of ``SAMPLE_KEYS`` in ``last`` (each key's last body)."""
    return {
        key: {name: float(last[key][name]) for name in FEATURES}
        for key in SAMPLE_KEYS
        if key in last
    }


def best_of(runs: int, events: int, once: Callable[[], tuple[float, Any]]) -> dict[str, Any]:
    """Run ``once`` over ``events`` events (it returns its seconds and what it produced) up to
    ``runs`` times."""
    times: list[float] = []
    produced: Any = None
    for _ in range(runs):
        gc.collect()
        elapsed, produced = once()
        times.append(elapsed)
        if elapsed > REPEAT_LIMIT_S:
            break
    return {"seconds": min(times), "runs": len(times), "events": events, "produced": produced}


# -- storey ----------------------------------------------------------------------------------


def a_steps(storey: Any) -> list[Any]:
    return [
        storey.Map(add_y),
        storey.Filter(keep),
        storey.Map(project),
        # storey >= 1.11 batches whole Events unless told otherwise (and warns).
        storey.Batch(BATCH_SIZE, full_event=False),
        storey.Reduce(0, count_items),
    ]


def run_a_sync(storey: Any, bodies: list[Body]) -> tuple[float, Any]:
    """SyncEmitSource: ``emit`` from this thread; the flow runs on a loop in its own thread."""
    controller = storey.build_flow([storey.SyncEmitSource(), *a_steps(storey)]).run()
    emit = controller.emit
    start = time.perf_counter()
    for body in bodies:
        emit(body)
    controller.terminate()
    items = controller.await_termination()
    return time.perf_counter() - start, items


def run_a_async(storey: Any, bodies: list[Body]) -> tuple[float, Any]:
    """AsyncEmitSource: ``await emit`` inside the loop that runs the flow."""

    async def main() -> tuple[float, Any]:
        controller = storey.build_flow([storey.AsyncEmitSource(), *a_steps(storey)]).run()
        emit = controller.emit
        start = time.perf_counter()
        for body in bodies:
            await emit(body)
        await controller.terminate()
        items = await controller.await_termination()
        return time.perf_counter() - start, items

    return asyncio.run(main())


def event_time_ms(event: Any) -> float:
    # storey reads a number in the time field as epoch milliseconds; the bodies hold seconds.
    return float(event.body["time"]) * 1000


def run_b(storey: Any, events: int, table_kind: str, redis_url: str) -> tuple[float, Any]:
    """AggregateByKey over a memory table (``NoopDriver``) or Redis (``RedisDriver``); on Redis
    a ``NoSqlTarget`` follows, as MLRun's feature sets do, so that the aggregates are written (at
    the table's flush interval, 300 s by default, and when the flow terminates)."""
    prefix = f"storey-bench-{uuid.uuid4().hex}:"
    driver: Any = None
    if table_kind == "memory":
        table = storey.Table("", storey.NoopDriver())
        writers: list[Any] = []
    else:
        redis_driver = importlib.import_module("storey.redis_driver")
        driver = redis_driver.RedisDriver(redis_url=redis_url, key_prefix=prefix)
        table = storey.Table("bench/agg", driver)
        writers = [storey.NoSqlTarget(table, columns=["amount"])]
    aggregate = storey.AggregateByKey(
        [
            storey.FieldAggregator(
                "amount",
                "amount",
                list(OPERATIONS),
                storey.SlidingWindows(list(WINDOWS), PERIOD),
            )
        ],
        table,
        key_field="key",
        time_field=event_time_ms,
    )

    bodies = b_bodies(events)

    async def main() -> tuple[float, Any]:
        last: dict[str, Body] = {}
        steps = [storey.AsyncEmitSource(), aggregate, *writers, storey.Reduce(last, last_per_key)]
        controller = storey.build_flow(steps).run()
        emit = controller.emit
        start = time.perf_counter()
        for body in bodies:
            await emit(body)
        await controller.terminate()
        await controller.await_termination()
        return time.perf_counter() - start, {"keys": len(last), "sample": sample(last)}

    try:
        return asyncio.run(main())
    finally:
        if driver is not None:
            delete_keys(driver.redis, "{" + prefix + "*")


def delete_keys(client: Any, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for index in range(0, len(keys), 1000):
        client.delete(*keys[index : index + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flows", default="a,b")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    flows = set(args.flows.split(","))
    try:
        storey = importlib.import_module("storey")
    except ImportError as exc:
        print(json.dumps({"error": f"storey does not import: {exc}"}))
        sys.exit(1)
    version = importlib.import_module("importlib.metadata").version("storey")
    results: dict[str, Any] = {"storey": version}
    if "a" in flows:
        bodies = a_bodies(args.events)
        first = bodies[:SYNC_SOURCE_EVENTS]
        results["a"] = {
            "SyncEmitSource": best_of(args.runs, len(first), lambda: run_a_sync(storey, first)),
            "AsyncEmitSource": best_of(args.runs, len(bodies), lambda: run_a_async(storey, bodies)),
        }
        del bodies
    if "b" in flows:
        results["b"] = {}
        for kind in ("memory", "redis"):
            try:
                results["b"][kind] = best_of(
                    args.runs,
                    args.events,
                    partial(run_b, storey, args.events, kind, args.redis_url),
                )
            except Exception as exc:  # noqa: BLE001 - reported, and the other table still runs
                results["b"][kind] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
