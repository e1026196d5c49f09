"""Built-in steps: one module per family (transforms, flow, state, targets, remote).

Every built-in step class is importable from here (``from servegraph.steps import Map``) and
known in specs by its bare class name (``class_name: Map``), as well as by its import path
(``servegraph.steps.transforms:Map``). Modules load on first use, so importing this package
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

BUILTINS: dict[str, str] = {
    "Map": "servegraph.steps.transforms:Map",
    "Filter": "servegraph.steps.transforms:Filter",
    "Extend": "servegraph.steps.transforms:Extend",
    "Sample": "servegraph.steps.transforms:Sample",
    "FlatMap": "servegraph.steps.flow:FlatMap",
    "Choice": "servegraph.steps.flow:Choice",
    "Merge": "servegraph.steps.flow:Merge",
    "Batch": "servegraph.steps.flow:Batch",
    "Reduce": "servegraph.steps.flow:Reduce",
    "MapWithState": "servegraph.steps.state:MapWithState",
    "JoinWithTable": "servegraph.steps.state:JoinWithTable",
    "AggregateByKey": "servegraph.steps.state:AggregateByKey",
    "ToStream": "servegraph.steps.targets:ToStream",
    "ToTable": "servegraph.steps.targets:ToTable",
    "ToFile": "servegraph.steps.targets:ToFile",
    "RemoteStep": "servegraph.steps.remote:RemoteStep",
    "BatchHttpRequests": "servegraph.steps.remote:BatchHttpRequests",
}
"""Bare class name -> import path of every built-in step."""

__all__ = ["BUILTINS", *BUILTINS]


def __getattr__(name: str) -> Any:
    path = BUILTINS.get(name)
    if path is None:
        message = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(message)
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
