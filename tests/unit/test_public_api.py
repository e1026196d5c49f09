"""The public surface: curated names, no optional imports, a small import cost."""

from __future__ import annotations

import subprocess
import sys

import servegraph

DOCUMENTED = {
    "BackendError",
    "Context",
    "EngineKind",
    "Event",
    "Graph",
    "GraphError",
    "GraphSpec",
    "MissingDependencyError",
    "MockServer",
    "ModelRouter",
    "ModelServer",
    "NotReadyError",
    "OverloadedError",
    "ParallelRun",
    "ProtocolError",
    "Response",
    "RoutingError",
    "ServegraphError",
    "StepError",
    "StepKind",
    "StepRef",
    "StepSpec",
    "StepTimeout",
    "Topology",
    "VotingEnsemble",
    "__version__",
}
OPTIONAL = (
    "uvicorn",
    "redis",
    "nats",
    "aiokafka",
    "httpx",
    "prometheus_client",
    "opentelemetry",
    "yaml",
)


def test_all_matches_the_documented_list() -> None:
    assert set(servegraph.__all__) == DOCUMENTED
    for name in servegraph.__all__:
        assert hasattr(servegraph, name)


def test_import_pulls_in_no_optional_dependency() -> None:
    code = (
        "import sys, servegraph, servegraph.compat.mlrun; "
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_import_time_stays_small() -> None:
    code = "import time; t = time.perf_counter(); import servegraph; print(time.perf_counter() - t)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert float(result.stdout) < 0.25
