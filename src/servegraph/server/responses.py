"""Answers with a status: the one place where errors map to HTTP statuses, and the
server-level Open Inference Protocol routes (health, server metadata, the model list).

The mock server's ``request`` and the HTTP server both answer through this module, so a
status seen in a test is the status a client gets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .._version import __version__
from ..errors import (
    NotReadyError,
    OverloadedError,
    ProtocolError,
    RoutingError,
    StepError,
    StepTimeout,
)
from ..event import Response as Response
from ..models.server import ModelServer
from ..protocol.metadata import server_metadata

SERVER_NAME = "servegraph"
HEALTH_LIVE = "/v2/health/live"
HEALTH_READY = "/v2/health/ready"
SERVER_METADATA = "/v2"
MODEL_LIST = "/v2/models"
SERVER_PATHS = frozenset({HEALTH_LIVE, HEALTH_READY, SERVER_METADATA, MODEL_LIST})


def as_response(answer: Any) -> Response:
    """A graph's answer as a Response: 200, unless a step returned a Response of its own."""
    return answer if isinstance(answer, Response) else Response(200, answer)


def error_response(exc: BaseException) -> Response:
    """The answer for an error: ``{"error": ..., "step": ...}`` with its status.

    400 bad input, 404 unknown model or route, 501 not implemented, 503 not ready or
    overloaded (with Retry-After), 504 timed out, 500 otherwise. Never a stack trace.
    """
    step: str | None = None
    cause: BaseException = exc
    while isinstance(cause, StepError) and not isinstance(cause, StepTimeout):
        step = cause.step
        cause = cause.cause
    status, headers = _status_of(cause)
    message = str(cause) if status != 500 else f"{type(cause).__name__}: {cause}"
    body: dict[str, Any] = {"error": message}
    if step is not None:
        body["step"] = step
    return Response(status, body, headers)


def _status_of(cause: BaseException) -> tuple[int, tuple[tuple[str, str], ...]]:
    if isinstance(cause, ProtocolError):
        return 400, ()
    if isinstance(cause, RoutingError):
        return 404, ()
    if isinstance(cause, NotImplementedError):
        return 501, ()
    if isinstance(cause, NotReadyError):
        return 503, ()
    if isinstance(cause, OverloadedError):
        return 503, (("retry-after", str(max(1, math.ceil(cause.retry_after)))),)
    if isinstance(cause, StepTimeout | TimeoutError):
        return 504, ()
    return 500, ()


def server_response(path: str, steps: Iterable[object]) -> Response | None:
    """The answer to a server-level route (health, metadata, model list), else None.

    Ready means every model has loaded; a model that failed says why in the 503's ``error``.
    """
    if path not in SERVER_PATHS:
        return None
    if path == HEALTH_LIVE:
        return Response(200, {"live": True})
    models = [step for step in steps if isinstance(step, ModelServer)]
    if path == HEALTH_READY:
        problems = [
            str(NotReadyError(model.name, model.error or "the model is still loading"))
            for model in models
            if not model.ready
        ]
        if problems:
            return Response(503, {"ready": False, "error": "; ".join(problems)})
        return Response(200, {"ready": True})
    if path == SERVER_METADATA:
        return Response(200, server_metadata(SERVER_NAME, __version__, []))
    return Response(200, {"models": sorted({model.name for model in models})})
