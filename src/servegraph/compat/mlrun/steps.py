"""Step classes that carry MLRun behaviour into a servegraph plan (named in translated specs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...event import Event
from ...expressions import compile_expression
from ...graph.resolve import resolve
from ...graph.validate import constructor_arguments

MODELS_PREFIX = "/v2/models"


class Lambda:
    """An MLRun lambda-string handler such as ``"(event + 1)"``, run by the safe evaluator."""

    def __init__(self, expression: str) -> None:
        self.expression = compile_expression(expression, names=("event",))

    def do(self, body: Any) -> Any:
        """Evaluate the expression with ``event`` bound to the body."""
        return self.expression(body)


class MLRunEvent(Event):
    """The event an MLRun error handler sees: ``error`` is the original exception (as storey
    gives it) and ``origin_state`` the name of the step that failed."""

    __slots__ = ("origin_state",)
    origin_state: str

    @classmethod
    def of_failure(cls, event: Event) -> MLRunEvent:
        """Return the MLRun view of an event that failed in a step."""
        view = cls(event.body, id=event.id, key=event.key, headers=event.headers)
        view.method, view.path, view.query = event.method, event.path, event.query
        view.content_type, view.trigger, view.time = event.content_type, event.trigger, event.time
        failure = event.error
        view.origin_state = failure.step if failure is not None else ""
        view.error = failure.cause if failure is not None else None  # type: ignore[assignment]
        return view


def mlrun_callable(value: Any) -> Any:
    """A function named the MLRun way: ``"(expression)"`` or an import path."""
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        return Lambda(value).do
    return resolve(value) if isinstance(value, str) else value


def build_callable(
    target: str,
    *,
    context: Any,
    name: str | None,
    class_args: dict[str, Any] | None,
    method: str | None,
    full_event: bool,
) -> tuple[Any, bool]:
    """Build an MLRun step's object the way MLRun does; return its call and whether the call
    takes the whole event.

    ``class_args`` keys starting with ``_`` name functions, passed without the ``_``; the
    constructor gets ``context`` and ``name`` when it takes them; ``post_init(mode)`` runs.
    """
    obj = resolve(target)
    if not isinstance(obj, type):
        return obj, full_event
    arguments = {
        key[1:] if key.startswith("_") else key: mlrun_callable(value)
        if key.startswith("_")
        else value
        for key, value in (class_args or {}).items()
    }
    extras = constructor_arguments(obj, arguments)
    if "context" in extras:
        arguments.setdefault("context", context)
    if "name" in extras:
        arguments.setdefault("name", name)
    instance = obj(**arguments)
    post_init = getattr(instance, "post_init", None)
    if callable(post_init):
        post_init(mode="sync")
    chosen = method or ("do_event" if hasattr(instance, "do_event") else "do")
    return getattr(instance, chosen), full_event or chosen == "do_event"


class MLRunStep:
    """An MLRun step that needs MLRun's rules to be built or called: functions in class_args
    (``"_fn"``), or an ``input_path`` whose missing keys give None (MLRun's ``get_in``)."""

    def __init__(
        self,
        context: Any = None,
        name: str | None = None,
        *,
        target: str,
        method: str | None = None,
        class_args: dict[str, Any] | None = None,
        full_event: bool = False,
        input_path: str | None = None,
    ) -> None:
        self.call, self.full_event = build_callable(
            target,
            context=context,
            name=name,
            class_args=class_args,
            method=method,
            full_event=full_event,
        )
        self.input_keys = tuple(input_path.split(".")) if input_path else ()

    def do_event(self, event: Event) -> Any:
        """Call the step with the event, or with the body (at ``input_path``)."""
        if self.full_event:
            return self.call(event)
        if not self.input_keys:
            return self.call(event.body)
        value = event.body
        if not isinstance(value, Mapping):
            message = "input_path parameter supports only dict-like event bodies"
            raise TypeError(message)
        for key in self.input_keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return self.call(value)


class ErrorHandler(MLRunStep):
    """Runs an MLRun error step (a function or a class) on the MLRun view of the failed event."""

    def do_event(self, event: Event) -> Any:
        """Call the handler with the MLRun view of ``event`` (or its body)."""
        return super().do_event(MLRunEvent.of_failure(event))


class ModelRouter:
    """MLRun's ``ModelRouter`` route selection.

    Paths start with ``/v2/models`` (``<model>[/versions/<v>]/<operation>``; a version's route is
    ``model:v``); the path ``/`` takes the body's ``"model"`` or else the first route.
    """

    def __init__(self, url_prefix: str = MODELS_PREFIX, **_: Any) -> None:
        self.url_prefix = url_prefix

    def select(self, event: Event, routes: Sequence[str]) -> str:
        """Return the route name for ``event``; raise ValueError as MLRun words it."""
        path = event.path.rstrip("/")
        if path in ("", "/"):
            body = event.body
            if isinstance(body, dict) and body.get("model"):
                wanted = str(body["model"])
            else:
                return routes[0]
        elif not path.startswith(self.url_prefix):
            message = f"illegal path prefix {event.path}, must start with {self.url_prefix}"
            raise ValueError(message)
        else:
            parts = path[len(self.url_prefix) :].strip("/").split("/")
            wanted = parts[0]
            if len(parts) >= 3 and parts[1] == "versions":
                wanted = f"{parts[0]}:{parts[2]}"
        if wanted not in routes:
            message = f"model {wanted} doesnt exist, available models: {' | '.join(routes)}"
            raise ValueError(message)
        return wanted
