"""Prediction records: what tracking costs the request path (the target is at most 10%).

Run: ``.venv/bin/python benchmarks/records_overhead.py`` (not part of ``make test``).

Two router graphs run through the mock server's sync engine, each twice in the same process:
without tracking, and with a ``PredictionRecorder`` writing every prediction to Parquet files
(default settings: batches of 5,000, a flush at least every 5 s) in a temporary directory.

- ``iris``: a scikit-learn ``LogisticRegression`` on iris, one row per request (a small real
  model: tens of microseconds per prediction);
- ``trivial``: a predict that returns ``[sum(row) for row in inputs]`` (the worst case: the
  request itself costs almost nothing, so the record's share is the largest).

A third server has a no-op hook (``lambda record: None``): what the ``ModelServer`` itself
spends making a ``PredictionRecord`` (timing ``predict``, the UTC timestamp, the record), the
part of the cost that is not the recorder's.

Rounds alternate off, no-op hook and recorder; each recorder round ends with
``recorder.flush()`` inside the timed window, so the writer thread's encoding and Parquet
writes (which share the GIL with the request thread) are all paid for. The figure is the
median over rounds of each round's time ratio (recorder / off). The writer thread wants a
core of its own: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from servegraph import Graph
from servegraph.models.server import ModelServer
from servegraph.monitoring.records import PredictionRecorder, install_recorder
from servegraph.testing import MockServer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


class Trivial(ModelServer):
    """Sums each row: next to no work per request."""

    def predict(self, request: dict[str, Any]) -> list[float]:
        return [sum(row) for row in request["inputs"]]


def iris_graph() -> Graph:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    graph = Graph.router()
    graph.add_route("iris", ModelServer, class_args={"model": model, "version": "1"})
    return graph


def trivial_graph() -> Graph:
    graph = Graph.router()
    graph.add_route("trivial", Trivial)
    return graph


def run_round(server: MockServer, path: str, requests: int, after: Callable[[], None]) -> float:
    body = {"inputs": [IRIS_ROW]}
    test = server.test
    gc.collect()
    start = time.perf_counter()
    for _ in range(requests):
        test(path, body)
    after()
    return time.perf_counter() - start


def measure(name: str, graph: Graph, requests: int, rounds: int) -> float:
    """Median round times off / with a no-op hook / with the recorder; return on/off."""
    path = f"/v2/models/{name}/infer"
    with tempfile.TemporaryDirectory() as root:
        off, hooked, on = graph.mock_server(), graph.mock_server(), graph.mock_server()
        hooked.context.hooks.record_prediction = lambda record: None
        recorder = install_recorder(on.context, {"sink": f"parquet://{root}"})
        assert isinstance(recorder, PredictionRecorder)
        recorder.start()
        try:
            run_round(off, path, requests // 5, lambda: None)  # warm up all three
            run_round(hooked, path, requests // 5, lambda: None)
            run_round(on, path, requests // 5, recorder.flush)
            times: dict[str, list[float]] = {"off": [], "hook": [], "on": []}
            for _ in range(rounds):
                times["off"].append(run_round(off, path, requests, lambda: None))
                times["hook"].append(run_round(hooked, path, requests, lambda: None))
                times["on"].append(run_round(on, path, requests, recorder.flush))
        finally:
            recorder.close()
            for server in (off, hooked, on):
                server.close()
        counters = recorder.statistics()
    expected = requests // 5 + rounds * requests
    assert counters.written == expected, f"{counters} (expected {expected} written)"
    off_s, hook_s, on_s = (statistics.median(times[key]) for key in ("off", "hook", "on"))
    per = 1e6 / requests
    # Each round's three runs are back to back: their ratios drift less than the medians.
    hook_ratio = statistics.median(h / o for h, o in zip(times["hook"], times["off"], strict=True))
    ratio = statistics.median(n / o for n, o in zip(times["on"], times["off"], strict=True))
    print(
        f"{name:8s} off {off_s * per:6.1f} µs/request | no-op hook {hook_s * per:6.1f} "
        f"({(hook_ratio - 1) * 100:+5.1f}%) | recorder {on_s * per:6.1f} "
        f"({(ratio - 1) * 100:+5.1f}%, ratio {ratio:.3f}) | "
        f"{counters.written} written, {counters.dropped} dropped"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each (off, on)")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, sync engine")
    ratios = {
        "iris": measure("iris", iris_graph(), args.requests, args.rounds),
        "trivial": measure("trivial", trivial_graph(), args.requests, args.rounds),
    }
    for name, ratio in ratios.items():
        verdict = "within" if ratio <= 1.10 else "over"
        print(f"{name}: ratio {ratio:.3f}, {verdict} the 10% target")


if __name__ == "__main__":
    main()
