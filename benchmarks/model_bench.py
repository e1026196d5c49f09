"""Model serving: (a) W1-router through the mock server; (b) adaptive batching under load.

Run: ``make bench-models`` (or ``.venv/bin/python benchmarks/model_bench.py``).

(a) A router over two models whose predict returns ``[sum(row) for row in inputs]``, called
    through the mock server with ``{"inputs": [[1, 2, 3, 4]]}``; the baseline is the same
    predict called directly.
(b) A model whose predict costs 2 ms + 20 µs per row of real numpy work (calibrated on this
    machine at start-up), 64 concurrent callers in one process for a fixed time, without and
    with batching; each caller sends one row at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import time
from typing import Any

import numpy

from servegraph import Graph
from servegraph.models.server import ModelServer
from servegraph.testing import MockServer

WARM_UP_S = 1.0


class Summer(ModelServer):
    """The W1-router model."""

    def predict(self, request: dict[str, Any]) -> list[float]:
        return [sum(row) for row in request["inputs"]]


class Costly(ModelServer):
    """2 ms of fixed work plus 20 µs per row (numpy matrix products, sized at start-up)."""

    fixed: numpy.ndarray[Any, Any] = numpy.eye(2)
    per_row: numpy.ndarray[Any, Any] = numpy.eye(2)

    def predict(self, request: dict[str, Any]) -> list[float]:
        self.fixed @ self.fixed
        outputs = []
        for row in request["inputs"]:
            self.per_row @ self.per_row
            outputs.append(float(sum(row)))
        return outputs


def matrix_costing(seconds: float) -> numpy.ndarray[Any, Any]:
    """A square matrix whose self-product takes about ``seconds`` here (best of 7 timings)."""

    def cost(size: int) -> float:
        matrix = numpy.random.default_rng(0).random((size, size))
        timings = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(5):
                matrix @ matrix
            timings.append((time.perf_counter() - start) / 5)
        return min(timings)

    low, high = 2, 8
    while cost(high) < seconds:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if cost(middle) < seconds else (low, middle)
    return numpy.random.default_rng(0).random((high, high))


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def router_bench(calls: int) -> None:
    graph = Graph.router()
    graph.add_route("m1", Summer).add_route("m2", Summer)
    server = graph.mock_server()
    body = {"inputs": [[1, 2, 3, 4]]}
    path = "/v2/models/m1/infer"
    assert server.test(path, body)["outputs"] == [10]
    model = Summer(name="direct")

    def direct() -> Any:
        return model.predict(body)

    def routed() -> Any:
        return server.test(path, body)

    print(f"(a) W1-router, {calls} calls per mode (python {platform.python_version()})")
    print(f"{'mode':<44} {'calls/s':>10} {'p50 us':>8} {'p99 us':>8} {'x baseline':>10}")
    base = 0.0
    for name, call in (
        ("baseline: predict called directly", direct),
        ("router, mock test()", routed),
    ):
        for _ in range(2000):
            call()
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        rate = calls / (time.perf_counter() - start)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            call()
            samples.append((clock() - t0) / 1000)
        p50, p99 = quantiles(samples)
        base = base or rate
        print(f"{name:<44} {rate:>10,.0f} {p50:>8.2f} {p99:>8.2f} {base / rate:>10.2f}")
    server.close()


async def drive(server: MockServer, callers: int, seconds: float) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    warm_until = time.perf_counter() + WARM_UP_S
    deadline = warm_until + seconds

    async def caller(index: int) -> None:
        nonlocal errors
        row = [float(index), 1.0, 2.0, 3.0]
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await server.arequest("POST", "/v2/models/costly/infer", {"inputs": [row]})
            if start >= warm_until:
                latencies.append((time.perf_counter() - start) * 1000)
            if response.status != 200 or response.body["outputs"] != [sum(row)]:
                errors += 1

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return len(latencies), latencies, errors


def batching_bench(callers: int, seconds: float, max_latency_ms: float) -> None:
    Costly.fixed = matrix_costing(0.002)
    Costly.per_row = matrix_costing(0.00002)
    model = Costly(name="calibration")
    start = time.perf_counter()
    for _ in range(20):
        model.predict({"inputs": [[0.0]]})
    one = (time.perf_counter() - start) / 20 * 1000
    start = time.perf_counter()
    for _ in range(10):
        model.predict({"inputs": [[0.0]] * 64})
    sixty_four = (time.perf_counter() - start) / 10 * 1000
    print()
    print(
        f"(b) batching: predict costs {one:.2f} ms for 1 row, {sixty_four:.2f} ms for 64 rows; "
        f"{callers} callers, {seconds:.0f} s per mode"
    )
    print(
        f"{'mode':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'x unbatched':>11}"
    )
    modes = (
        ("without batching (1 predict thread)", {"threads": 1}),
        (
            f"batching, max 64 rows, max_latency {max_latency_ms:g} ms",
            {"batching": {"max_batch_size": 64, "max_latency_ms": max_latency_ms}},
        ),
    )
    base = 0.0
    for name, class_args in modes:
        graph = Graph.router()
        graph.add_route("costly", Costly, class_args=class_args)
        server = graph.mock_server()
        count, latencies, errors = asyncio.run(drive(server, callers, seconds))
        rate = count / seconds
        p50, p99 = quantiles(latencies)
        base = base or rate
        print(f"{name:<44} {rate:>10,.0f} {p50:>8.2f} {p99:>8.2f} {errors:>7} {rate / base:>11.1f}")
        server.close()
    bound = max_latency_ms + sixty_four
    print(f"p99 bound for batching: max_latency_ms + the 64-row batch = {bound:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-latency-ms", type=float, default=5.0)
    args = parser.parse_args()
    router_bench(args.calls)
    batching_bench(args.callers, args.seconds, args.max_latency_ms)


if __name__ == "__main__":
    main()
