"""storey's and MLRun's built-in step classes, as servegraph's own built-in steps.

An MLRun graph dict names a storey step by its class (``"class_name": "storey.Map"``) and writes
its functions as class_args whose key starts with ``_``: ``"_fn": "(event['x'] * 2)"`` is an
expression (MLRun evals ``lambda event: <it>``), ``"_fn": "double"`` or ``"_fn": "pkg.mod.double"``
a function. ``builtin_step`` turns such a step into the servegraph step with the same semantics
(``servegraph.steps``): expressions run through servegraph's safe evaluator, function names are
looked up in the namespace or imported. Whatever servegraph cannot honour (a callable argument
it has no place for, an option it does not have, a class it has no step for) is a load-time
problem naming the step, never a silent change of behaviour.

Each class has a translation below; ``CLASSES`` maps every accepted class name to it, and
docs/migrating-from-mlrun.md lists them with their differences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...context import Context
from ...errors import GraphError
from ...graph.resolve import Namespace, ResolveError, reference_of, resolve
from ...graph.spec import StepSpec
from ...steps.flow import Choice
from ...steps.functions import as_function
from .errors import MLRunInvalidArgumentError, MLRunRuntimeError

PREFIXES = ("storey.", "mlrun.", "$")
"""Class names that name storey's or MLRun's own classes (``$remote`` is MLRun's shortcut)."""

FUNCTION_PREFIX = "_"
"""MLRun's mark of a class argument holding a function (``mlrun.serving.states``)."""

EVENT = ("event",)


def is_builtin(class_name: str) -> bool:
    """Whether ``class_name`` names a storey or MLRun class (translated or refused here)."""
    return class_name.startswith(PREFIXES)


class ChoiceByField(Choice):
    """MLRun's ``mlrun.serving.steps.ChoiceByField``: the event goes to the outlet(s) named by
    the body's field ``field_name`` (a step name or a list of them), with MLRun's errors."""

    default_name = "choice_by_field"

    def __init__(
        self, field_name: str, *, name: str | None = None, context: Context | None = None
    ) -> None:
        super().__init__(name=name, context=context)
        self.arguments = {"field_name": field_name}
        self.field_name = field_name

    def select_outlets(self, body: Any) -> Sequence[str]:
        """The outlets named by ``body[field_name]``."""
        field = self.field_name
        if field not in body:
            message = f"Field '{field}' is not contained in the event keys {list(body.keys())}."
            raise MLRunRuntimeError(message)
        outlet = body[field]
        if outlet is None:
            message = f"Field '{field}' exists but its value is None."
            raise MLRunInvalidArgumentError(message)
        if not isinstance(outlet, str | list | tuple):
            message = (
                f"Field '{field}' must be a string or list of strings "
                f"but is instead of type '{type(outlet).__name__}'."
            )
            raise TypeError(message)
        outlets = [outlet] if isinstance(outlet, str) else list(outlet)
        if not outlets:
            message = f"The value of the key '{field}' cannot be an empty {type(outlet).__name__}."
            raise MLRunRuntimeError(message)
        return outlets


class _Arguments:
    """One step's class_args being translated: what is taken, what is left, what is wrong."""

    def __init__(self, class_name: str, class_args: Mapping[str, Any], namespace: Namespace):
        self.class_name = class_name
        self.left = dict(class_args)
        self.namespace = namespace
        self.problems: list[str] = []
        self.blocking: bool | None = None

    def take(self, key: str, default: Any = None) -> Any:
        """A plain (non-function) argument."""
        return self.left.pop(key, default)

    def refuse(self, message: str) -> None:
        self.problems.append(message)

    def no_function(self, key: str, why: str) -> Any:
        """A plain argument that storey also takes as a function (``_key``): the function is
        refused with ``why``."""
        if FUNCTION_PREFIX + key in self.left:
            del self.left[FUNCTION_PREFIX + key]
            self.refuse(f"{FUNCTION_PREFIX}{key}: {why}")
        return self.take(key)

    def function(self, key: str, names: tuple[str, ...] = EVENT) -> Any:
        """The function argument ``key``, written ``_key``: an expression (checked now by the
        safe evaluator, binding ``names``) or a function; None when missing or wrong."""
        written = FUNCTION_PREFIX + key
        if key in self.left:
            value = self.left.pop(key)
            self.refuse(
                f"{key}={value!r}: MLRun passes class_args as they are and storey wants a "
                f"function here; write it as {written!r} (MLRun's prefix for functions), e.g. "
                f'"{written}": "(event[\'x\'] * 2)"'
            )
            return None
        if written not in self.left:
            self.refuse(
                f"{self.class_name} needs its function {written!r}: an expression such as "
                f"\"(event['x'] * 2)\" or a function name"
            )
            return None
        return self._function(written, self.left.pop(written), names)

    def _function(self, written: str, value: Any, names: tuple[str, ...]) -> Any:
        if callable(value):  # a dict built in Python may hold the function itself
            return value
        if not isinstance(value, str):
            self.refuse(f"{written} must be a function name or an expression, not {value!r}")
            return None
        text = value.strip()
        if text.startswith("("):
            if not text.endswith(")"):
                self.refuse(f'{written}: function expression must start with "(" and end with ")"')
                return None
            try:
                as_function(text, step=None, argument=written, names=names)
            except GraphError as exc:
                self.problems.extend(problem.message for problem in exc.problems)
                return None
            return text
        try:
            target = resolve(text, self.namespace)
        except ResolveError as exc:
            self.refuse(f"{written}: {exc} (MLRun reads a function name or a '(expression)' here)")
            return None
        if not callable(target):
            self.refuse(f"{written}: {text!r} names a {type(target).__name__}, not a function")
            return None
        return reference_of(target) or target

    def long_running(self) -> None:
        """storey's ``long_running`` (run the function in a thread): the step is blocking."""
        if self.take("long_running"):
            self.blocking = True

    def no_context(self) -> None:
        if self.take("pass_context"):
            self.refuse(
                "pass_context=True is not supported: servegraph calls the function with the "
                "body only (a step class gets the context in its constructor)"
            )
        if FUNCTION_PREFIX + "fn_select_outlets" in self.left or "fn_select_outlets" in self.left:
            self.left.pop(FUNCTION_PREFIX + "fn_select_outlets", None)
            self.left.pop("fn_select_outlets", None)
            self.refuse(
                "fn_select_outlets is not supported; follow the step with "
                "mlrun.serving.steps.ChoiceByField or a Choice"
            )


Build = Callable[[_Arguments], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Translation:
    """How one storey/MLRun class becomes a servegraph step.

    ``target`` is the servegraph class; ``arguments`` what it understands of the storey
    class's (for messages); ``paths`` the step keys among full_event, input_path and
    result_path that keep their meaning, ``ignored`` those storey ignores too; ``own_paths``
    passes input_path and result_path to the servegraph class, which applies them; ``check``
    builds the step at load time, so that its own checks (positive sizes...) fail the load.
    """

    target: str
    build: Build
    arguments: tuple[str, ...]
    paths: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()
    own_paths: bool = False
    check: bool = False


def _map(args: _Arguments) -> dict[str, Any]:
    args.long_running()
    args.no_context()
    return {"fn": args.function("fn")}


def _flatten(_: _Arguments) -> dict[str, Any]:
    return {"fn": "event"}


def _sample_window(args: _Arguments) -> dict[str, Any]:
    size = args.take("window_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 1:
        args.refuse(f"window_size must be an integer above 1 (storey's rule), not {size!r}")
    if args.take("emit_period") is not None:
        args.refuse("emit_period is not supported: servegraph's Sample keeps the first event")
    if args.take("emit_before_termination"):
        args.refuse("emit_before_termination=True is not supported")
    if args.no_function("key", "sampling by a function is not supported") is not None:
        args.refuse("key is not supported: servegraph's Sample counts all events together")
    return {"every": size}


def _batch(args: _Arguments) -> dict[str, Any]:
    key = args.no_function("key_field", "batches are grouped by a body field or '$key' only")
    if isinstance(key, str) and key.startswith("$") and key != "$key":
        args.refuse(f"key_field {key!r}: batches are grouped by a body field or '$key' only")
    if args.take("drop_key_field"):
        args.refuse("drop_key_field=True is not supported: the key field stays in the bodies")
    if "key" in args.left:
        args.left.pop("key")
        args.refuse(
            "storey's Batch ignores 'key' (its grouping argument is key_field); write key_field "
            "to group the batches, or drop key"
        )
    return {
        "max_events": args.take("max_events"),
        "flush_after_s": args.take("flush_after_seconds"),
        "key": key,
    }


def _reduce(args: _Arguments) -> dict[str, Any]:
    if "initial_value" not in args.left:
        args.refuse("storey's Reduce needs initial_value")
    return {
        "fn": args.function("fn", ("accumulator", "event")),
        "initial": args.take("initial_value"),
    }


def _map_with_state(args: _Arguments) -> dict[str, Any]:
    fn = args.function("fn", ("event", "state"))
    state = args.take("initial_state")
    if not args.take("group_by_key"):
        return {"fn": fn, "initial_state": state}
    if not isinstance(state, str):
        args.refuse(
            "with group_by_key, storey keeps each key's state in a table: initial_state must "
            "name it (a table URL such as 'redis://host:6379/0' or a table of the context), "
            f"not {type(state).__name__}"
        )
    # storey's per-key state is the key's row of attributes, {} for a new key.
    return {"fn": fn, "initial_state": {}, "table": state, "key": "$key"}


def _join_with_table(args: _Arguments) -> dict[str, Any]:
    key = args.no_function("key_extractor", "rows are looked up by body fields only")
    if key is None and not args.problems:
        args.refuse("key_extractor must name the body field that holds the row's key")
    if args.left.pop(FUNCTION_PREFIX + "join_function", None) is not None:
        args.refuse(
            "_join_function is not supported: servegraph merges the row into the body "
            "(storey's default join)"
        )
    attributes = args.take("attributes")
    return {
        "table": args.take("table"),
        "key": key,
        "attributes": None if attributes in (None, "*") else attributes,
        "on_missing": "drop" if args.take("inner_join") else "pass",
    }


AGGREGATE_KEYS = ("name", "column", "operations", "windows", "period")


def _aggregate_by_key(args: _Arguments) -> dict[str, Any]:
    aggregations = []
    for aggregate in args.take("aggregates") or ():
        if not isinstance(aggregate, Mapping):
            args.refuse(f"aggregates are dicts ({', '.join(AGGREGATE_KEYS)}), not {aggregate!r}")
            continue
        extra = sorted(set(aggregate) - set(AGGREGATE_KEYS))
        if extra:
            args.refuse(
                f"aggregate {aggregate.get('name')!r}: {', '.join(extra)} not supported; an "
                f"aggregate has {', '.join(AGGREGATE_KEYS)}"
            )
        # storey's dict form: sliding windows with a period, fixed windows without one.
        kind = "sliding" if "period" in aggregate else "fixed"
        fields = {key: aggregate[key] for key in AGGREGATE_KEYS if key in aggregate}
        aggregations.append({**fields, "kind": kind})
    if not aggregations and not args.problems:
        args.refuse("aggregates must list at least one aggregate")
    key = args.no_function("key_field", "events are keyed by body fields or '$key' only")
    time = args.no_function("time_field", "the time is a body field or the event's time")
    policy = args.take("emit_policy")
    if policy is not None and policy != {"mode": "everyEvent"}:
        args.refuse(f"emit_policy {policy!r} is not supported: servegraph emits every event")
    if args.left.pop(FUNCTION_PREFIX + "augmentation_fn", None) is not None:
        args.refuse("_augmentation_fn is not supported: the features are added to the body")
    for option in ("enrich_with", "aliases", "use_windows_from_schema", "time_format"):
        if args.take(option):
            args.refuse(f"{option} is not supported")
    return {
        "aggregations": aggregations,
        "key": "$key" if key is None else key,
        "table": args.take("table"),
        "time": time,
    }


def _choice_by_field(args: _Arguments) -> dict[str, Any]:
    field = args.take("field_name")
    if not isinstance(field, str):
        args.refuse(f"field_name must be a field name, not {field!r}")
    return {"field_name": field}


REMOTE_ARGUMENTS = (
    "url",
    "subpath",
    "method",
    "headers",
    "url_expression",
    "body_expression",
    "return_json",
    "max_in_flight",
    "retries",
    "backoff_factor",
    "timeout",
)


def _remote(args: _Arguments) -> dict[str, Any]:
    if args.take("headers_expression") is not None:
        args.refuse("headers_expression is not supported; give fixed headers")
    return {key: args.take(key) for key in REMOTE_ARGUMENTS}


TRANSFORMS = "servegraph.steps.transforms"
FLOW = "servegraph.steps.flow"
STATE = "servegraph.steps.state"
REMOTE = "servegraph.steps.remote"
FULL_EVENT = "full_event"
PATHS = frozenset({FULL_EVENT, "input_path", "result_path"})

MAP = Translation(f"{TRANSFORMS}:Map", _map, ("_fn", "long_running"), paths=PATHS, check=True)
FILTER = Translation(
    f"{TRANSFORMS}:Filter", _map, ("_fn", "long_running"), paths=frozenset({FULL_EVENT}), check=True
)
EXTEND = Translation(f"{TRANSFORMS}:Extend", _map, ("_fn", "long_running"), check=True)
FLAT_MAP = Translation(f"{FLOW}:FlatMap", _map, ("_fn", "long_running"), check=True)
FLATTEN = Translation(f"{FLOW}:FlatMap", _flatten, (), check=True)
SAMPLE_WINDOW = Translation(
    f"{TRANSFORMS}:Sample", _sample_window, ("window_size",), ignored=PATHS, check=True
)
BATCH = Translation(
    f"{FLOW}:Batch", _batch, ("max_events", "flush_after_seconds", "key_field"), check=True
)
REDUCE = Translation(f"{FLOW}:Reduce", _reduce, ("initial_value", "_fn"), check=True)
MAP_WITH_STATE = Translation(
    f"{STATE}:MapWithState", _map_with_state, ("initial_state", "_fn", "group_by_key")
)
JOIN_WITH_TABLE = Translation(
    f"{STATE}:JoinWithTable",
    _join_with_table,
    ("table", "key_extractor", "attributes", "inner_join"),
    ignored=frozenset({FULL_EVENT}),
)
AGGREGATE_BY_KEY = Translation(
    f"{STATE}:AggregateByKey",
    _aggregate_by_key,
    ("aggregates", "table", "key_field", "time_field", "emit_policy"),
)
REMOTE_STEP = Translation(
    f"{REMOTE}:RemoteStep", _remote, REMOTE_ARGUMENTS, own_paths=True, check=True
)
BATCH_HTTP_REQUESTS = Translation(
    f"{REMOTE}:BatchHttpRequests",
    _remote,
    REMOTE_ARGUMENTS,
    own_paths=True,
    check=True,
)
CHOICE_BY_FIELD = Translation(
    f"{__name__}:ChoiceByField", _choice_by_field, ("field_name",), check=True
)


def _names(translation: Translation, *names: str) -> dict[str, Translation]:
    return dict.fromkeys(names, translation)


CLASSES: dict[str, Translation] = {
    **_names(MAP, "storey.Map", "storey.flow.Map"),
    **_names(FILTER, "storey.Filter", "storey.flow.Filter"),
    **_names(EXTEND, "storey.Extend", "storey.flow.Extend"),
    **_names(FLAT_MAP, "storey.FlatMap", "storey.flow.FlatMap"),
    **_names(FLATTEN, "storey.Flatten", "storey.steps.Flatten", "storey.steps.flatten.Flatten"),
    **_names(
        SAMPLE_WINDOW,
        "storey.SampleWindow",
        "storey.steps.SampleWindow",
        "storey.steps.sample.SampleWindow",
    ),
    **_names(BATCH, "storey.Batch", "storey.flow.Batch"),
    **_names(REDUCE, "storey.Reduce", "storey.flow.Reduce"),
    **_names(MAP_WITH_STATE, "storey.MapWithState", "storey.flow.MapWithState"),
    **_names(JOIN_WITH_TABLE, "storey.JoinWithTable", "storey.flow.JoinWithTable"),
    **_names(AGGREGATE_BY_KEY, "storey.AggregateByKey", "storey.aggregations.AggregateByKey"),
    **_names(CHOICE_BY_FIELD, "mlrun.serving.steps.ChoiceByField"),
    **_names(REMOTE_STEP, "$remote", "mlrun.serving.remote.RemoteStep"),
    **_names(BATCH_HTTP_REQUESTS, "mlrun.serving.remote.BatchHttpRequests"),
}
"""Every storey/MLRun class name servegraph runs, with its translation."""

HINTS = {
    "storey.Choice": (
        "storey.Choice routes through the select_outlets method of a subclass; use "
        "mlrun.serving.steps.ChoiceByField, or your own class with select_outlets"
    ),
    "storey.SendToHttp": (
        "its request_builder and join_from_response are Python functions; use MLRun's "
        "RemoteStep ('$remote')"
    ),
    "storey.MapClass": "write a step class with a do(body) method instead (see section 3)",
    "storey.ForEach": "use a handler step that returns its input",
}
"""Why some classes are refused, and what to use instead."""


def builtin_step(
    step: StepSpec,
    class_name: str,
    class_args: Mapping[str, Any],
    *,
    full_event: bool,
    handler: str | None,
    namespace: Namespace,
) -> tuple[StepSpec, list[str]]:
    """The servegraph step for the storey/MLRun class step ``step`` (``after``, ``responder``,
    ``on_error``, ``input_path`` and ``result_path`` already set), and what is wrong with it.

    Returns:
        The translated step (a placeholder when the class is refused) and the problems found,
        as messages for the step.
    """
    translation = CLASSES.get(class_name)
    if translation is None:
        placeholder = dataclasses.replace(step, class_name="builtins:dict", class_args={})
        return placeholder, [_refusal(class_name)]
    args = _Arguments(class_name, class_args, namespace)
    class_args = translation.build(args)
    if args.left:
        unknown = ", ".join(sorted(args.left))
        understood = ", ".join(translation.arguments) or "none"
        args.refuse(
            f"{class_name} argument(s) {unknown} not supported by servegraph "
            f"(it understands: {understood})"
        )
    if handler is not None:
        args.refuse(f"handler {handler!r} is not used with {class_name}; remove it")
    used = {FULL_EVENT: full_event, "input_path": step.input_path, "result_path": step.result_path}
    paths = translation.paths
    allowed = paths | translation.ignored
    if translation.own_paths:
        class_args.update(input_path=step.input_path, result_path=step.result_path)
        allowed |= {"input_path", "result_path"}
    for key, value in used.items():
        if value and key not in allowed:
            args.refuse(f"{key} is not supported on {class_name} by servegraph")
    translated = dataclasses.replace(
        step,
        class_name=translation.target,
        class_args={key: value for key, value in class_args.items() if value is not None},
        full_event=full_event and FULL_EVENT in paths,
        input_path=step.input_path if "input_path" in paths else None,
        result_path=step.result_path if "result_path" in paths else None,
        blocking=args.blocking,
    )
    if translation.check and not args.problems:
        args.problems.extend(_construction_problems(translated))
    return translated, args.problems


def _construction_problems(step: StepSpec) -> Iterable[str]:
    """What the servegraph step's constructor finds wrong with its arguments."""
    cls = resolve(step.class_name or "")
    try:
        cls(**step.class_args, name=step.name)
    except GraphError as exc:
        return [problem.message for problem in exc.problems]
    except (TypeError, ValueError) as exc:
        return [f"{type(exc).__name__}: {exc}"]
    return []


def _refusal(class_name: str) -> str:
    hint = HINTS.get(class_name) or HINTS.get(class_name.replace(".flow.", "."))
    if hint is None:
        supported = sorted(n for n in CLASSES if n.count(".") == 1 or not n.startswith("storey."))
        hint = f"servegraph runs {', '.join(supported)}"
    return f"{class_name} is not available in servegraph.compat.mlrun yet: {hint}"
