"""The graph of the stream benchmark: W1 cut after ``scale`` by a queue.

``SERVEGRAPH_BENCH_STREAM`` names the queue's stream URL and ``SERVEGRAPH_BENCH_BATCH`` its
read batch; ``servegraph consume benchmarks.stream_targets:build --segment q`` runs the part
after the queue (gate -> linear -> post), the benchmark's producer runs ``main`` (parse ->
scale -> the queue).
"""

from __future__ import annotations

import os

from benchmarks.flow_bench import Linear, Parse, gate, post, scale
from servegraph import Graph

STREAM_VARIABLE = "SERVEGRAPH_BENCH_STREAM"
BATCH_VARIABLE = "SERVEGRAPH_BENCH_BATCH"


def build() -> Graph:
    """parse -> scale -> queue "q" -> gate -> linear -> post."""
    stream = os.environ[STREAM_VARIABLE]
    batch = int(os.environ.get(BATCH_VARIABLE, "100"))
    graph = Graph()
    (
        graph.to(Parse, name="parse")
        .to(scale)
        .to_queue("q", stream, batch=batch)
        .to(gate)
        .to(Linear, name="linear")
        .to(post)
    )
    return graph
