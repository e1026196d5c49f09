"""W1: a five-step flow (parse -> scale -> gate -> linear -> post) on the engines and a baseline.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/flow_bench.py [--events N]``).
Prints events/s and p50/p99 per call for each mode, and each mode's per-event time as a ratio
of the direct baseline measured in the same run (these machines are noisy; ratios travel).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servegraph import Graph
from servegraph.testing import MockServer

WEIGHTS = (0.5, -0.25, 1.0, 2.0)
BIAS = 0.1


class Parse:
    """Returns the body plus ``n``, the length of ``x``."""

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        body["n"] = len(body["x"])
        return body


def scale(body: dict[str, Any]) -> dict[str, Any]:
    body["x"] = [v * 2 for v in body["x"]]
    return body


def gate(body: dict[str, Any]) -> dict[str, Any] | None:
    return body if body["id"] >= 0 else None


class Linear:
    """y = sum(w_i * x_i) + b."""

    def __init__(self, weights: tuple[float, ...] = WEIGHTS, bias: float = BIAS) -> None:
        self.weights = weights
        self.bias = bias

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        body["y"] = sum(w * x for w, x in zip(self.weights, body["x"], strict=True)) + self.bias
        return body


def post(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": body["id"], "y": round(body["y"], 6)}


class AsyncParse(Parse):
    """Parse with ``async def do``, for the all-async variant."""

    async def do(self, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return Parse.do(self, body)


async def ascale(body: dict[str, Any]) -> dict[str, Any]:
    return scale(body)


async def agate(body: dict[str, Any]) -> dict[str, Any] | None:
    return gate(body)


class AsyncLinear(Linear):
    """Linear with ``async def do``."""

    async def do(self, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return Linear.do(self, body)


async def apost(body: dict[str, Any]) -> dict[str, Any]:
    return post(body)


def w1_graph(*, asynchronous: bool = False) -> Graph:
    """The W1 graph; with ``asynchronous`` every step is ``async def``."""
    graph = Graph()
    if asynchronous:
        graph.to(AsyncParse, name="parse").to(ascale, name="scale").to(agate, name="gate").to(
            AsyncLinear, name="linear"
        ).to(apost, name="post").respond()
    else:
        graph.to(Parse, name="parse").to(scale, name="scale").to(gate, name="gate").to(
            Linear, name="linear"
        ).to(post, name="post").respond()
    return graph


def body(i: int) -> dict[str, Any]:
    return {"id": i, "x": [0.1, 0.2, 0.3, 0.4]}


def direct() -> Callable[[dict[str, Any]], Any]:
    parse, linear = Parse(), Linear()

    def call(event: dict[str, Any]) -> Any:
        event = parse.do(event)
        event = scale(event)
        gated = gate(event)
        if gated is None:
            return None
        return post(linear.do(gated))

    return call


@dataclass
class Result:
    mode: str
    events_per_s: float
    p50_us: float
    p99_us: float


def measure(mode: str, call: Callable[[dict[str, Any]], Any], events: int) -> Result:
    bodies = [body(i) for i in range(events)]
    for warm in bodies[:1000]:
        call(dict(warm))
    bodies = [body(i) for i in range(events)]
    gc.collect()
    start = time.perf_counter()
    for item in bodies:
        call(item)
    elapsed = time.perf_counter() - start
    bodies = [body(i) for i in range(events)]
    samples = []
    clock = time.perf_counter_ns
    for item in bodies:
        t0 = clock()
        call(item)
        samples.append(clock() - t0)
    cuts = statistics.quantiles(samples, n=100)
    return Result(mode, events / elapsed, cuts[49] / 1000, cuts[98] / 1000)


def measure_awaited(mode: str, server: MockServer, events: int) -> Result:
    async def main() -> Result:
        for warm in range(1000):
            await server.atest(body=body(warm))
        bodies = [body(i) for i in range(events)]
        gc.collect()
        start = time.perf_counter()
        for item in bodies:
            await server.atest(body=item)
        elapsed = time.perf_counter() - start
        bodies = [body(i) for i in range(events)]
        samples = []
        clock = time.perf_counter_ns
        for item in bodies:
            t0 = clock()
            await server.atest(body=item)
            samples.append(clock() - t0)
        cuts = statistics.quantiles(samples, n=100)
        return Result(mode, events / elapsed, cuts[49] / 1000, cuts[98] / 1000)

    return asyncio.run(main())


def check_answers(servers: dict[str, MockServer]) -> None:
    expected = direct()(body(7))
    for name, server in servers.items():
        answer = server.test(body=body(7))
        if answer != expected:
            message = f"{name} answered {answer!r}, expected {expected!r}"
            raise SystemExit(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    events: int = args.events

    sync_server = w1_graph().mock_server(engine="sync")
    metered_server = w1_graph().mock_server(engine="sync", metrics=True)
    async_server = w1_graph().mock_server(engine="async")
    all_async_server = w1_graph(asynchronous=True).mock_server()
    check_answers(
        {
            "sync": sync_server,
            "sync with metrics": metered_server,
            "async": async_server,
            "async-def steps": all_async_server,
        }
    )

    def sync_call(item: dict[str, Any]) -> Any:
        return sync_server.test(body=item)

    def metered_call(item: dict[str, Any]) -> Any:
        return metered_server.test(body=item)

    def async_call(item: dict[str, Any]) -> Any:
        return async_server.test(body=item)

    def all_async_call(item: dict[str, Any]) -> Any:
        return all_async_server.test(body=item)

    results = [
        measure("baseline: the five functions called directly", direct(), events),
        measure("sync engine, mock server test()", sync_call, events),
        measure("sync engine, metrics on, mock server test()", metered_call, events),
        measure("async engine, mock server test()", async_call, events),
        measure_awaited("async engine, await atest() in a running loop", async_server, events),
        measure(
            "async engine, async-def steps, mock server test()",
            all_async_call,
            max(events // 10, 2000),
        ),
        measure_awaited("async engine, async-def steps, await atest()", all_async_server, events),
    ]
    base = 1 / results[0].events_per_s
    print(f"W1, {events} events per mode (python {platform.python_version()})")
    print(f"{'mode':<52} {'events/s':>10} {'p50 us':>8} {'p99 us':>8} {'x baseline':>10}")
    for result in results:
        ratio = (1 / result.events_per_s) / base
        print(
            f"{result.mode:<52} {result.events_per_s:>10,.0f} {result.p50_us:>8.2f} "
            f"{result.p99_us:>8.2f} {ratio:>10.2f}"
        )
    # The overhead of metrics is a few tenths of a microsecond: alternate the two modes and
    # keep the best of each, so that the machine's noise does not decide it.
    plain = metered = 0.0
    for _ in range(5):
        plain = max(plain, measure("", sync_call, events).events_per_s)
        metered = max(metered, measure("", metered_call, events).events_per_s)
    print(
        f"metrics overhead on the sync engine (best of runs): {plain:,.0f} -> {metered:,.0f} "
        f"events/s, {100 * (plain / metered - 1):+.1f}% time per event"
    )
    for server in (sync_server, metered_server, async_server, all_async_server):
        server.close()


if __name__ == "__main__":
    main()
