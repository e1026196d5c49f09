"""Micro benchmark of the windowed-aggregation engine (``servegraph.state.aggregations``).

Run: ``.venv/bin/python benchmarks/aggregation_engine.py [--events N] [--keys K] [--span-hours H]
[--profile]``. Not run by the tests.

The workload of the aggregation step's target: 1,000,000 events over 10,000 keys (uniformly
drawn), times increasing over ``--span-hours`` (default 24), one column aggregated with sum,
count, avg and max over sliding windows of 1h, 6h and 24h with a 10m period: 12 features.
Per event: ``add`` then ``features`` (what an aggregation step that emits every event does);
states live in a plain dict (no table). Prints events/s and us/event for that loop, and for
``add`` alone and ``features`` alone over the same events. ``--profile`` runs the loop under
pyinstrument instead and prints its report.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import time
from collections.abc import Callable

from servegraph.state.aggregations import Aggregation, AggregationState, Aggregator

OPERATIONS = ("sum", "count", "avg", "max")
WINDOWS = ("1h", "6h", "24h")
PERIOD = "10m"
START = 1_700_000_000.0


Events = tuple[list[str], list[float], list[float]]


def make_events(count: int, keys: int, span_s: float, seed: int) -> Events:
    """Keys, times (increasing over ``span_s``) and values of ``count`` events."""
    rng = random.Random(seed)
    names = [f"user-{i}" for i in range(keys)]
    step = span_s / count
    return (
        [names[rng.randrange(keys)] for _ in range(count)],
        [START + i * step for i in range(count)],
        [round(rng.uniform(0, 500), 2) for _ in range(count)],
    )


def aggregator() -> Aggregator:
    return Aggregator([Aggregation("amount", "amount", OPERATIONS, WINDOWS, PERIOD)])


def add_and_features(
    agg: Aggregator, keys: list[str], times: list[float], values: list[float]
) -> dict[str, AggregationState]:
    states: dict[str, AggregationState] = {}
    new_state = agg.new_state
    add = agg.add
    features = agg.features
    body = {"amount": 0.0}
    for key, t, value in zip(keys, times, values, strict=True):
        state = states.get(key)
        if state is None:
            state = states[key] = new_state()
        body["amount"] = value
        add(state, body, t)
        features(state, t)
    return states


def add_only(
    agg: Aggregator, keys: list[str], times: list[float], values: list[float]
) -> dict[str, AggregationState]:
    states: dict[str, AggregationState] = {}
    new_state = agg.new_state
    add = agg.add
    body = {"amount": 0.0}
    for key, t, value in zip(keys, times, values, strict=True):
        state = states.get(key)
        if state is None:
            state = states[key] = new_state()
        body["amount"] = value
        add(state, body, t)
    return states


def timed(label: str, count: int, run: Callable[[], object]) -> None:
    gc.collect()
    begin = time.perf_counter()
    run()
    elapsed = time.perf_counter() - begin
    print(f"{label:<34} {count / elapsed:>12,.0f} events/s  {elapsed / count * 1e6:>6.2f} us/event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--span-hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    args = parser.parse_args()

    keys, times, values = make_events(args.events, args.keys, args.span_hours * 3600, args.seed)
    agg = aggregator()
    print(
        f"python {platform.python_version()} on {platform.machine()}: {args.events:,} events, "
        f"{args.keys:,} keys, {args.span_hours:g}h of event time; {len(agg.feature_names)} "
        f"features ({', '.join(OPERATIONS)} x {', '.join(WINDOWS)}, period {PERIOD})"
    )
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
        add_and_features(agg, keys, times, values)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False))
        return

    both = lambda: add_and_features(agg, keys, times, values)  # noqa: E731
    timed("add + features per event", args.events, both)
    timed("add only", args.events, lambda: add_only(agg, keys, times, values))
    states = add_only(agg, keys, times, values)
    end = times[-1]

    def features_only() -> None:
        features = agg.features
        for key in keys:
            features(states[key], end)

    timed("features only (after the last event)", args.events, features_only)
    buckets = sum(len(s.series[0].index) for s in states.values()) / len(states)
    print(f"buckets kept per key at the end: {buckets:.1f} (of {24 * 6} in the 24h window)")


if __name__ == "__main__":
    main()
