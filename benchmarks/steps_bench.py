"""The built-in steps against storey, MLRun's engine, on the same flows in the same run.

Run: ``make bench-steps`` (or ``.venv/bin/python -m benchmarks.steps_bench [--events N]
[--flows a,b] [--runs R] [--no-storey] [--profile]``). Not run by the tests.

- (a) map -> filter -> map -> batch(100) -> reduce over ``--events`` events in-process (the
  workload is in ``benchmarks/steps_storey.py``, shared by both sides). servegraph: a ``Graph``
  of ``servegraph.steps`` objects on the mock server's sync engine, one ``server.test(body=...)``
  per event and ``close()`` at the end (which sends the reduced count on), once with Python
  functions and once with expression strings (the spec way).
- (b) aggregate-by-key over 10,000 keys (sum, count, avg, max; sliding windows 1h, 6h, 24h every
  10m) on the memory table and on Redis. servegraph: ``servegraph.steps.state:AggregateByKey`` on
  the async engine, ``CONCURRENCY`` coroutines each awaiting ``server.atest(body=...)`` in turn,
  then ``aclose()``; on Redis once writing through (the step's default: each event waits for its
  group commit) and once with ``flush_interval_s=300`` (storey's table default: written every
  300 s and at close). Skipped with a message while the step does not import.

storey runs in its own virtual environment, ``.venv-storey/`` (made here, with pip, the first
time; reused while it holds the pinned version), through ``benchmarks/steps_storey.py``; if it
cannot be installed, only servegraph is measured. Each variant reports its best of ``--runs``
runs (a variant whose run took over 10 s is not run again; storey's SyncEmitSource, at a flat
~11,000 events/s, runs the first 200,000 events only), and every servegraph row its ratio to
storey. Both sides must produce the same thing: 90% of the events counted in (a), the same
final features for sample keys in (b). The default run takes about ten minutes, half of it
storey on Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.steps_storey import (
    BATCH_SIZE,
    OPERATIONS,
    PERIOD,
    STOREY_REQUIREMENTS,
    STOREY_VERSION,
    WINDOWS,
    Body,
    a_bodies,
    a_expected,
    add_y,
    b_bodies,
    best_of,
    count_items,
    keep,
    last_per_key,
    project,
    sample,
)
from servegraph import Graph
from servegraph.steps.flow import Batch, Reduce
from servegraph.steps.transforms import Filter, Map

ROOT = Path(__file__).parents[1]
STOREY_VENV = ROOT / ".venv-storey"
STOREY_SCRIPT = Path(__file__).with_name("steps_storey.py")
REDIS_URL = os.environ.get("SERVEGRAPH_REDIS_URL", "redis://127.0.0.1:6379")
CONCURRENCY = 64
"""Events in flight in (b): enough for Redis round trips to overlap and group commits to fill
(16: -20% on Redis; past 100, redis-py's default pool raises "Too many connections")."""
INSTALL_TIMEOUT_S = 900

EXPRESSIONS = (
    "{**event, 'y': event['x'] * 2}",
    "event['id'] % 10 != 0",
    "{'id': event['id'], 'y': event['y']}",
    "accumulator + len(event)",
)
"""(a) as a spec writes it: ``add_y``, ``keep``, ``project`` and ``count_items`` as expressions."""


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    events_per_s: float
    runs: int


# -- servegraph (a) ---------------------------------------------------------------------------


def a_graph(variant: str, counted: list[int]) -> Graph:
    """The (a) graph; ``counted`` receives the reduced count when the graph closes."""
    if variant == "callables":
        fns: Sequence[Callable[..., Any] | str] = (add_y, keep, project, count_items)
    else:
        fns = EXPRESSIONS
    graph = Graph()
    graph.to(Map(fns[0])).to(Filter(fns[1])).to(Map(fns[2])).to(Batch(BATCH_SIZE)).to(
        Reduce(fns[3], 0)
    ).to(counted.append, name="sink")
    return graph


def run_a(variant: str, bodies: list[Body]) -> tuple[float, int]:
    counted: list[int] = []
    server = a_graph(variant, counted).mock_server(engine="sync")
    test = server.test
    start = time.perf_counter()
    for body in bodies:
        test(body=body)
    server.close()
    elapsed = time.perf_counter() - start
    return elapsed, sum(counted)


def profile_a(events: int) -> None:
    """Print where the time of servegraph's (a) goes, per variant, under pyinstrument."""
    from pyinstrument import Profiler

    bodies = a_bodies(events)
    for variant in ("callables", "expressions"):
        profiler = Profiler(interval=0.0001)
        profiler.start()
        run_a(variant, bodies)
        profiler.stop()
        print(f"\n== profile: (a) {variant}, {events:,} events ==")
        print(profiler.output_text(unicode=True, color=False, show_all=False))


# -- servegraph (b) ---------------------------------------------------------------------------


def aggregate_by_key_class() -> type | None:
    """The step of (b), or None (said) while servegraph does not have it yet."""
    try:
        # Imported by name: the benchmark type-checks and runs (a) without the step.
        step_class: type = importlib.import_module("servegraph.steps.state").AggregateByKey
    except (ImportError, AttributeError) as exc:
        print(f"(b) servegraph: skipped, servegraph.steps.state:AggregateByKey is missing ({exc})")
        return None
    return step_class


def run_b(
    step_class: type, table_kind: str, events: int, flush_interval_s: float | None
) -> tuple[float, Any]:
    prefix = f"steps-bench-{uuid.uuid4().hex}"
    table = "memory://agg" if table_kind == "memory" else f"{REDIS_URL}/0?prefix={prefix}"
    options: dict[str, Any] = {}
    if flush_interval_s is not None:
        options["flush_interval_s"] = flush_interval_s
    step = step_class(
        aggregations=[
            {
                "name": "amount",
                "column": "amount",
                "operations": list(OPERATIONS),
                "windows": list(WINDOWS),
                "period": PERIOD,
            }
        ],
        table=table,
        key="key",
        time="time",
        **options,
    )
    bodies = b_bodies(events)  # afresh: the step adds the features to the bodies
    last: dict[str, Body] = {}
    graph = Graph()
    graph.to(step).to(partial(last_per_key, last), name="sink")

    async def main() -> float:
        server = graph.mock_server()
        pending = iter(bodies)

        async def worker() -> None:
            for body in pending:
                await server.atest(body=body)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        await server.aclose()
        return time.perf_counter() - start

    try:
        elapsed = asyncio.run(main())
    finally:
        if table_kind == "redis":
            delete_keys(f"{prefix}:*")
    return elapsed, {"keys": len(last), "sample": sample(last)}


def delete_keys(pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for index in range(0, len(keys), 1000):
            client.delete(*keys[index : index + 1000])
    finally:
        client.close()


# -- storey -----------------------------------------------------------------------------------


def storey_python() -> Path | None:
    """The storey venv's python, made (or repaired) if needed; None if storey cannot be had."""
    python = STOREY_VENV / "bin" / "python"
    if installed_storey(python) == STOREY_VERSION:
        return python
    print(f"installing storey=={STOREY_VERSION} into {STOREY_VENV} ...", flush=True)
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(STOREY_VENV)],
                check=True,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *STOREY_REQUIREMENTS],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or [str(exc)]
        print(f"storey: skipped, it could not be installed into {STOREY_VENV}: {reason[0]}")
        return None
    except (subprocess.TimeoutExpired, OSError) as exc:
        print(f"storey: skipped, it could not be installed into {STOREY_VENV}: {exc}")
        return None
    found = installed_storey(python)
    if found != STOREY_VERSION:
        print(f"storey: skipped, {STOREY_VENV} has storey {found}, not {STOREY_VERSION}")
        return None
    return python


def installed_storey(python: Path) -> str | None:
    """The version of the storey that ``python`` imports (with what the Redis driver needs)."""
    if not python.exists():
        return None
    check = "import importlib.metadata, storey, storey.redis_driver; "
    check += "print(importlib.metadata.version('storey'))"
    done = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def run_storey(python: Path, flows: Sequence[str], events: int, runs: int) -> dict[str, Any]:
    command = [str(python), str(STOREY_SCRIPT), "--flows", ",".join(flows)]
    command += ["--events", str(events), "--runs", str(runs), "--redis-url", REDIS_URL]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"storey: the benchmark failed (exit {done.returncode}):\n{tail}")
        return {}
    results: dict[str, Any] = json.loads(lines[-1])
    return results


# -- report -----------------------------------------------------------------------------------


def row(label: str, measured: dict[str, Any]) -> Row:
    events = measured["events"]
    return Row(label, events / measured["seconds"], measured["runs"])


def table(title: str, rows: Sequence[Row], baselines: Sequence[Row]) -> None:
    print(f"\n{title}\n")
    header = "| variant | events/s | runs |" + "".join(f" x {b.label} |" for b in baselines)
    print(header)
    print("|---|---:|---:|" + "---:|" * len(baselines))
    for each in rows:
        ratios = "".join(f" {each.events_per_s / b.events_per_s:.2f} |" for b in baselines)
        print(f"| {each.label} | {each.events_per_s:,.0f} | {each.runs} |{ratios}")


def same_features(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """Whether both sides ended with the same features for the sample keys, in words."""
    mismatched = [
        f"{key}.{name}: servegraph {value!r}, storey {theirs.get(key, {}).get(name)!r}"
        for key, features in ours.items()
        for name, value in features.items()
        if not math.isclose(value, theirs.get(key, {}).get(name, math.nan), rel_tol=1e-9)
    ]
    if set(ours) != set(theirs):
        mismatched.append(f"sample keys differ: {sorted(set(ours) ^ set(theirs))}")
    if not mismatched:
        return f"the same final features for all {len(ours)} sample keys on both sides"
    return "DIFFERENT features: " + "; ".join(mismatched[:5])


def target(name: str, ours: Row, theirs: Row, factor: float) -> None:
    ratio = ours.events_per_s / theirs.events_per_s
    verdict = "met" if ratio >= factor else "NOT met"
    print(f"target {name}: at least {factor:g}x {theirs.label}: {ratio:.2f}x ({verdict})")


def bench_a(events: int, runs: int, storey: dict[str, Any] | None) -> None:
    bodies = a_bodies(events)
    expected = a_expected(events)
    rows = []
    for variant, label in (
        ("callables", "servegraph, functions, sync engine test()"),
        ("expressions", "servegraph, expressions, sync engine test()"),
    ):
        measured = best_of(runs, events, partial(run_a, variant, bodies))
        check_count(label, measured["produced"], expected)
        rows.append(row(label, measured))
    baselines = []
    for source, measured in (storey or {}).items():
        label = f"storey {source}"
        if measured["events"] != events:
            label += f" (first {measured['events']:,} events)"
        check_count(label, measured["produced"], a_expected(measured["events"]))
        baselines.append(row(label, measured))
    title = f"(a) map -> filter -> map -> batch({BATCH_SIZE}) -> reduce, {events:,} events, "
    title += f"{expected:,} items counted by every variant"
    table(title, rows + baselines, baselines)
    if baselines:
        fastest = max(baselines, key=lambda b: b.events_per_s)
        target("(a)", rows[0], fastest, 10)


def check_count(label: str, counted: int, expected: int) -> None:
    if counted != expected:
        message = f"{label} counted {counted:,} items, not {expected:,}: the flows differ"
        raise SystemExit(message)


def bench_b(events: int, runs: int, storey: dict[str, Any] | None) -> None:
    step_class = aggregate_by_key_class()
    for kind in ("memory", "redis"):
        rows = []
        samples = []
        if step_class is not None:
            variants: list[tuple[str, float | None]] = [("servegraph", None)]
            if kind == "redis":
                variants = [
                    ("servegraph, write-through", None),
                    ("servegraph, flush_interval_s=300", 300.0),
                ]
            for label, flush in variants:
                try:
                    measured = best_of(
                        runs, events, partial(run_b, step_class, kind, events, flush)
                    )
                except Exception as exc:  # noqa: BLE001 - reported; the rest still runs
                    print(f"(b) {label} on {kind}: failed: {type(exc).__name__}: {exc}")
                    continue
                rows.append(row(label, measured))
                samples.append((label, measured["produced"]))
        baselines = []
        theirs = (storey or {}).get(kind)
        if theirs is not None and "error" in theirs:
            print(f"(b) storey on {kind}: failed: {theirs['error']}")
        elif theirs is not None:
            baselines.append(row(f"storey ({kind})", theirs))
        if not rows and not baselines:
            continue
        title = f"(b) aggregate-by-key, {events:,} events over 10,000 keys, {kind} table"
        table(title, rows + baselines, baselines)
        for label, produced in samples:
            if theirs is not None and baselines:
                verdict = same_features(produced["sample"], theirs["produced"]["sample"])
                print(f"{label}: {verdict}")
        if rows and baselines:
            target(f"(b) {kind}", rows[-1], baselines[0], 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--flows", default="a,b", help="a, b or a,b")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--no-storey", action="store_true", help="measure servegraph only")
    parser.add_argument(
        "--profile", action="store_true", help="profile servegraph's (a) with pyinstrument instead"
    )
    args = parser.parse_args()
    if args.profile:
        profile_a(args.events)
        return
    flows = [flow for flow in ("a", "b") if flow in args.flows.split(",")]
    print(f"steps benchmark: {args.events:,} events, best of {args.runs}, flows {flows}")
    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} cores; Redis at {REDIS_URL}")
    started = time.perf_counter()
    storey: dict[str, Any] = {}
    python = None if args.no_storey else storey_python()
    if python is not None:
        print(f"storey {STOREY_VERSION}: measuring (in {STOREY_VENV.name}) ...", flush=True)
        storey = run_storey(python, flows, args.events, args.runs)
        print(f"storey took {time.perf_counter() - started:.0f} s", flush=True)
    gc.collect()
    if "a" in flows:
        bench_a(args.events, args.runs, storey.get("a"))
    if "b" in flows:
        bench_b(args.events, args.runs, storey.get("b"))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
