"""Import paths become objects without eval; failures say why."""

from __future__ import annotations

import json

import pytest

from servegraph.graph.resolve import ResolveError, reference_of, resolve
from tests.unit import sample_steps


def test_colon_and_dotted_paths() -> None:
    assert resolve("tests.unit.sample_steps:inc") is sample_steps.inc
    assert resolve("tests.unit.sample_steps.inc") is sample_steps.inc
    assert resolve("tests.unit.sample_steps:Multiply.do") is sample_steps.Multiply.do
    assert resolve("json.dumps") is json.dumps


def test_bare_names_come_from_the_namespace() -> None:
    assert resolve("inc", sample_steps) is sample_steps.inc
    assert resolve("f", {"f": len}) is len
    assert resolve("inc", [{"x": 1}, sample_steps]) is sample_steps.inc


def test_bare_name_without_namespace_explains_the_fix() -> None:
    with pytest.raises(ResolveError, match="bare names need a namespace, or use 'module:inc'"):
        resolve("inc")


def test_bare_name_missing_from_the_namespace() -> None:
    with pytest.raises(ResolveError, match="not found in the given namespace"):
        resolve("ghost", [sample_steps, None])  # type: ignore[list-item]


def test_dotted_name_falls_back_to_the_namespace() -> None:
    namespace = {"local.thing": 1}
    assert resolve("local.thing", namespace) == 1


def test_missing_module_and_attribute() -> None:
    with pytest.raises(ResolveError, match="no module named 'nowhere'"):
        resolve("nowhere.at.all")
    with pytest.raises(ResolveError, match="has no attribute 'ghost'"):
        resolve("tests.unit.sample_steps:ghost")
    with pytest.raises(ResolveError, match="importing 'nowhere' failed"):
        resolve("nowhere:thing")


def test_reference_of_module_level_objects_only() -> None:
    assert reference_of(sample_steps.Multiply) == "tests.unit.sample_steps:Multiply"
    assert reference_of(lambda x: x) is None
    assert reference_of(3) is None
