"""The exception names MLRun code catches, as subclasses of servegraph's own errors."""

from __future__ import annotations

from ... import errors


class GraphError(errors.GraphError):
    """MLRun's ``mlrun.serving.states.GraphError``: an invalid graph, raised at load time."""


class MLRunInvalidArgumentError(errors.ServegraphError, ValueError):
    """MLRun's ``mlrun.errors.MLRunInvalidArgumentError``."""


class MLRunRuntimeError(errors.ServegraphError, RuntimeError):
    """MLRun's ``mlrun.errors.MLRunRuntimeError``; also what a failed ``server.test`` raises."""

    def __init__(self, message: str, *, status_code: int = 500, body: object = None) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(message)
