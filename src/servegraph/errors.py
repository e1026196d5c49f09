"""The one error hierarchy of servegraph. It knows nothing about HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ServegraphError(Exception):
    """Root of every error servegraph raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a graph: where it is (a step name, or None for the graph) and what."""

    step: str | None
    message: str

    def __str__(self) -> str:
        where = f"step {self.step!r}" if self.step is not None else "graph"
        return f"{where}: {self.message}"


class GraphError(ServegraphError):
    """An invalid graph, raised at build or compile time with every problem found."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        head = "invalid graph" if count == 1 else f"invalid graph ({count} problems)"
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{head}:\n{lines}")

    def __repr__(self) -> str:
        return f"GraphError(problems={self.problems!r})"


class StepError(ServegraphError):
    """A user step raised; the original exception is the ``__cause__``."""

    def __init__(self, step: str, event_id: str | None, cause: BaseException) -> None:
        self.step = step
        self.event_id = event_id
        self.cause = cause
        super().__init__(f"step {step!r} failed: {type(cause).__name__}: {cause}")

    def __repr__(self) -> str:
        return f"StepError(step={self.step!r}, event_id={self.event_id!r}, cause={self.cause!r})"


class StepTimeout(StepError, TimeoutError):
    """A step did not finish within its time limit."""


class RoutingError(ServegraphError, LookupError):
    """An event names a route (model, version) that the router does not have."""

    def __init__(self, router: str, route: str | None, known: Sequence[str]) -> None:
        self.router = router
        self.route = route
        self.known = tuple(known)
        wanted = "no route was selected" if route is None else f"no route named {route!r}"
        super().__init__(f"router {router!r}: {wanted}; known routes: {', '.join(self.known)}")


class ProtocolError(ServegraphError, ValueError):
    """A request payload that cannot be understood."""


class NotReadyError(ServegraphError):
    """A model or step cannot serve yet (still loading, or its loading failed: ``reason``)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name!r} is not ready: {reason}")


class OverloadedError(ServegraphError):
    """Too much work is queued; the caller may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BackendError(ServegraphError):
    """Broker or state I/O failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class MissingDependencyError(ServegraphError, ImportError):
    """An optional integration is used without its extra installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.extra = extra
        super().__init__(
            f"{module!r} is not installed; install it with: pip install 'servegraph[{extra}]'"
        )
