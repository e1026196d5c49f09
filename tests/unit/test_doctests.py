"""The examples in public docstrings run (STYLE §37)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "servegraph.event",
    "servegraph.context",
    "servegraph.graph.builder",
    "servegraph.graph.resolve",
    "servegraph.graph.plot",
    "servegraph.testing",
    "servegraph.expressions",
    "servegraph.protocol.metadata",
    "servegraph.compat.mlrun.model",
    "servegraph.state.tables",
    "servegraph.steps.transforms",
    "servegraph.monitoring.drift",
    "servegraph.monitoring.records_reader",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
