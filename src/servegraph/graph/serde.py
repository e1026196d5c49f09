"""Spec <-> plain dict / JSON / YAML. Lossless: ``spec_from_dict(spec_to_dict(s)) == s``.

The dict format (``version`` 1)::

    {"version": 1, "kind": "flow", "engine": "auto", "on_error": "catch", "params": {...},
     "steps": {"<name>": {"kind": "task", "class_name": "pkg.mod:Class", "handler": "do",
                          "class_args": {...}, "after": ["<name>", ...], "responder": true,
                          "full_event": false, "input_path": "a.b", "result_path": "c",
                          "on_error": "<name>"},
               "<router>": {"kind": "router", "default_route": "m1",
                            "routes": {"<route>": {...step keys...}}},
               "<queue>": {"kind": "queue", "stream": "redis://host:6379/events",
                           "options": {"max_deliveries": 5}, "after": ["<name>"]}}}

A router graph is ``{"version": 1, "kind": "router", "routes": {...}, "default_route": ...}``.
Keys with their default value are left out; unknown keys are errors that list the allowed ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import GraphError, MissingDependencyError, Problem
from .spec import SPEC_VERSION, EngineKind, GraphSpec, StepKind, StepSpec, Topology

STEP_KEYS = frozenset(
    {
        "kind",
        "class_name",
        "handler",
        "class_args",
        "full_event",
        "input_path",
        "result_path",
        "after",
        "responder",
        "on_error",
        "routes",
        "default_route",
        "blocking",
        "stream",
        "options",
    }
)
GRAPH_KEYS = frozenset(
    {"version", "kind", "engine", "on_error", "params", "steps", "stop_on_none", "tracking"}
)
# A router graph is its router: the router's own keys sit at the top level, beside the graph's.
ROUTER_GRAPH_KEYS = (
    (GRAPH_KEYS - {"steps", "on_error"}) | (STEP_KEYS - {"kind", "after"}) | {"name"}
)
ROUTER_NAME = "router"


def spec_to_dict(spec: GraphSpec) -> dict[str, Any]:
    """Return ``spec`` as a plain dict of JSON-compatible values.

    Raises:
        GraphError: a step was built from an object that has no import path (a lambda or a
            function defined inside another function); every such step is listed.
    """
    problems: list[Problem] = []
    data: dict[str, Any] = {"version": SPEC_VERSION, "kind": spec.topology.value}
    if spec.engine is not EngineKind.AUTO:
        data["engine"] = spec.engine.value
    if spec.params:
        data["params"] = dict(spec.params)
    if not spec.stop_on_none:
        data["stop_on_none"] = False
    if spec.tracking is not None:
        data["tracking"] = dict(spec.tracking)
    if spec.topology is Topology.ROUTER:
        router = spec.steps[0]
        fields = _step_to_dict(router, problems)
        fields.pop("kind")
        if router.name != ROUTER_NAME:
            data["name"] = router.name
        data.update(fields)
    else:
        if spec.on_error is not None:
            data["on_error"] = spec.on_error
        data["steps"] = {step.name: _step_to_dict(step, problems) for step in spec.steps}
    if problems:
        raise GraphError(problems)
    return data


def spec_from_dict(data: Mapping[str, Any]) -> GraphSpec:
    """Return the GraphSpec that ``data`` (a ``spec_to_dict`` dict) describes.

    Raises:
        GraphError: unknown keys, wrong types or an unsupported version, every one listed.
    """
    problems: list[Problem] = []
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        problems.append(
            Problem(None, f"unsupported spec version {version!r} (this is {SPEC_VERSION})")
        )
    kind = _enum(Topology, data.get("kind", "flow"), "kind", None, problems)
    allowed = ROUTER_GRAPH_KEYS if kind is Topology.ROUTER else GRAPH_KEYS
    _check_keys(data, allowed, None, problems)
    engine = _enum(EngineKind, data.get("engine", "auto"), "engine", None, problems)
    params = _typed(data, "params", Mapping, None, problems) or {}
    if kind is Topology.ROUTER:
        fields = {key: data[key] for key in STEP_KEYS - {"kind", "after"} if key in data}
        name = _typed(data, "name", str, None, problems) or ROUTER_NAME
        steps: tuple[StepSpec, ...] = (
            _step_from_dict(name, {"kind": "router", **fields}, problems),
        )
    else:
        steps = _steps_from(data.get("steps"), "steps", problems)
    on_error = _typed(data, "on_error", str, None, problems)
    stop_on_none = _typed(data, "stop_on_none", bool, None, problems)
    tracking = _tracking(data.get("tracking"), problems)
    if problems:
        raise GraphError(problems)
    return GraphSpec(
        topology=kind or Topology.FLOW,
        steps=steps,
        on_error=on_error,
        engine=engine or EngineKind.AUTO,
        params=dict(params),
        stop_on_none=True if stop_on_none is None else stop_on_none,
        tracking=tracking,
    )


def _tracking(data: Any, problems: list[Problem]) -> dict[str, Any] | None:
    """The graph's tracking settings, checked (their module loads only when a graph has some)."""
    if data is None:
        return None
    from ..monitoring.records import TrackingSettings

    try:
        return TrackingSettings.parse(data).to_dict()
    except GraphError as exc:
        problems.extend(exc.problems)
        return None


def dumps(spec: GraphSpec, format: str = "json") -> str:  # noqa: A002 - the natural word
    """Return ``spec`` as JSON or YAML text."""
    data = spec_to_dict(spec)
    if format == "json":
        return json.dumps(data, indent=2) + "\n"
    if format == "yaml":
        return str(_yaml().safe_dump(data, sort_keys=False))
    message = f"unknown spec format {format!r}; use 'json' or 'yaml'"
    raise ValueError(message)


def loads(text: str, format: str = "json") -> GraphSpec:  # noqa: A002 - the natural word
    """Return the spec in JSON or YAML ``text``."""
    if format == "json":
        data = json.loads(text)
    elif format == "yaml":
        data = _yaml().safe_load(text)
    else:
        message = f"unknown spec format {format!r}; use 'json' or 'yaml'"
        raise ValueError(message)
    if not isinstance(data, Mapping):
        message = f"a spec is a mapping at the top level, got {type(data).__name__}"
        raise GraphError(message)
    return spec_from_dict(data)


def save_spec(spec: GraphSpec, path: Path) -> None:
    """Write ``spec`` to ``path``; the suffix (.json, .yaml, .yml) picks the format."""
    path.write_text(dumps(spec, _format_of(path)), encoding="utf-8")


def load_spec(path: Path) -> GraphSpec:
    """Read a spec file; the suffix (.json, .yaml, .yml) picks the format."""
    format = _format_of(path)  # noqa: A001 - checked before the file is read
    return loads(path.read_text(encoding="utf-8"), format)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    message = f"cannot tell the spec format of {str(path)!r}: use a .json, .yaml or .yml file"
    raise ValueError(message)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - the yaml extra is installed in CI
        module = "pyyaml"
        raise MissingDependencyError(module, "yaml") from exc
    return yaml


def _step_to_dict(step: StepSpec, problems: list[Problem]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if step.kind is not StepKind.TASK:
        data["kind"] = step.kind.value
    class_name, handler = step.class_name, step.handler
    if step.kind is StepKind.TASK and step.reference is None:
        problems.append(_unserialisable(step))
    if class_name is not None:
        data["class_name"] = class_name
    if handler is not None:
        data["handler"] = handler
    if step.class_args:
        data["class_args"] = dict(step.class_args)
    if step.options:
        data["options"] = dict(step.options)
    for key in ("full_event", "responder"):
        if getattr(step, key):
            data[key] = True
    if step.blocking is not None:
        data["blocking"] = step.blocking
    for key in ("input_path", "result_path", "on_error", "default_route", "stream"):
        value = getattr(step, key)
        if value is not None:
            data[key] = value
    if step.after:
        data["after"] = list(step.after)
    if step.routes:
        data["routes"] = {route.name: _step_to_dict(route, problems) for route in step.routes}
    return data


def _unserialisable(step: StepSpec) -> Problem:
    what = getattr(step.target, "__qualname__", repr(step.target))
    message = (
        f"{what} has no import path, so the step cannot be written to a spec; "
        "define it at module level (not a lambda or a nested function)"
    )
    return Problem(step.name, message)


def _steps_from(raw: Any, field: str, problems: list[Problem]) -> tuple[StepSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problems.append(Problem(None, f"{field!r} must map step names to step dicts"))
        return ()
    steps = []
    for name, body in raw.items():
        if not isinstance(body, Mapping):
            problems.append(Problem(str(name), "a step must be a mapping of its options"))
            continue
        steps.append(_step_from_dict(str(name), body, problems))
    return tuple(steps)


def _step_from_dict(name: str, data: Mapping[str, Any], problems: list[Problem]) -> StepSpec:
    _check_keys(data, STEP_KEYS, name, problems)
    kind = _enum(StepKind, data.get("kind", "task"), "kind", name, problems) or StepKind.TASK
    after = data.get("after") or ()
    if isinstance(after, str):
        after = (after,)
    if not isinstance(after, list | tuple) or not all(isinstance(p, str) for p in after):
        problems.append(Problem(name, "after must be a step name or a list of step names"))
        after = ()

    def text(key: str) -> str | None:
        value: str | None = _typed(data, key, str, name, problems)
        return value

    def flag(key: str) -> bool:
        return bool(_typed(data, key, bool, name, problems))

    return StepSpec(
        name=name,
        kind=kind,
        class_name=text("class_name"),
        handler=text("handler"),
        class_args=dict(_typed(data, "class_args", Mapping, name, problems) or {}),
        full_event=flag("full_event"),
        input_path=text("input_path"),
        result_path=text("result_path"),
        after=tuple(after),
        responder=flag("responder"),
        on_error=text("on_error"),
        routes=_steps_from(data.get("routes"), "routes", problems),
        default_route=text("default_route"),
        blocking=_typed(data, "blocking", bool, name, problems),
        stream=text("stream"),
        options=dict(_typed(data, "options", Mapping, name, problems) or {}),
    )


def _typed(
    data: Mapping[str, Any], key: str, kind: type, step: str | None, problems: list[Problem]
) -> Any:
    """``data[key]`` when absent, None or of type ``kind``; else a problem and None."""
    value = data.get(key)
    if value is None or isinstance(value, kind):
        return value
    message = f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}"
    problems.append(Problem(step, message))
    return None


_TYPE_NAMES = {str: "a string", bool: "true or false", Mapping: "a mapping"}


def _check_keys(
    data: Mapping[str, Any], allowed: frozenset[str], step: str | None, problems: list[Problem]
) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        message = f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        problems.append(Problem(step, message))


def _enum(enum: Any, value: Any, field: str, step: str | None, problems: list[Problem]) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        problems.append(Problem(step, f"{field} {value!r} is not one of: {choices}"))
        return None
