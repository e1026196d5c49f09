"""MLRun's mock server surface: ``server.test(...)`` answers and fails the way MLRun's does."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ... import errors
from ...event import Event
from ...graph.resolve import Namespace
from ...graph.spec import GraphSpec, StepKind, StepSpec, Topology
from ...testing import MockServer, decode_body
from .errors import GraphError, MLRunRuntimeError

PASS_THROUGH = "servegraph.compat.mlrun.queues:pass_through"

EVENT_ID_HEADERS = ("mlrun_event_id", "mlrun-event-id")
EVENT_PATH_HEADERS = ("mlrun_event_path", "mlrun-event-path")


@dataclass(frozen=True, slots=True)
class MockResponse:
    """What ``server.test(..., silent=True)`` returns for a failed event (MLRun's Response)."""

    status_code: int
    body: Any
    content_type: str = "text/plain"


class MLRunMockServer(MockServer):
    """A mock server with MLRun's ``test`` signature, answers and errors.

    Queue steps run as MLRun's mock runs them: a queue followed by steps passes the event on
    in-process (the steps after it run on the same event, and a responder among them answers);
    a queue that ends the flow writes to its stream, on a memory broker of the server's own.

    Differences from MLRun, on purpose: graph problems (including sync-engine branches) are
    reported when the server is built, not on the first event; a responder that is followed by
    other steps answers with its own result (MLRun's async engine answers ``{"id": ...}``).
    """

    def __init__(
        self,
        spec: GraphSpec,
        *,
        namespace: Namespace = None,
        params: Mapping[str, Any] | None = None,
        mlrun_engine: str = "async",
    ) -> None:
        try:
            super().__init__(in_process(spec), namespace=namespace, params=params)
        except errors.GraphError as exc:
            raise GraphError(exc.problems) from None
        # MLRun's async flows with no responder answer with the event id (router graphs answer).
        self._answers_id = (
            mlrun_engine != "sync"
            and spec.topology is Topology.FLOW
            and not self.plan.has_responder
        )

    def test(  # type: ignore[override]
        self,
        path: str = "/",
        body: Any = None,
        method: str | None = "",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        silent: bool = False,
        get_body: bool = True,
        event_id: str | None = None,
        trigger: Any = None,
        offset: Any = None,
        time: Any = None,
    ) -> Any:
        """Send one event the way MLRun's ``GraphServer.test`` does.

        Returns:
            The answer body; a MockResponse for a failure with ``silent=True`` (instead of
            raising) and for every answer with ``get_body=False``.

        Raises:
            MLRunRuntimeError: ``"failed (<status>): <body>"`` when the event failed (a
                RuntimeError, as in MLRun).
        """
        response = self._respond(path, body, method, headers, content_type, event_id)
        if response.status_code >= 300:
            if silent:
                return response
            message = f"failed ({response.status_code}): {response.body}"
            raise MLRunRuntimeError(message, status_code=response.status_code, body=response.body)
        return response.body if get_body else response

    def _respond(
        self,
        path: str,
        body: Any,
        method: str | None,
        headers: Mapping[str, str] | None,
        content_type: str | None,
        event_id: str | None,
    ) -> MockResponse:
        headers = dict(headers or {})
        lowered = {key.lower(): value for key, value in headers.items()}
        event_id = event_id or next((lowered[h] for h in EVENT_ID_HEADERS if h in lowered), None)
        path = next((lowered[h] for h in EVENT_PATH_HEADERS if h in lowered), path)
        if isinstance(body, str | bytes):
            try:
                body = decode_body(body, content_type)
            except errors.ProtocolError as exc:
                return MockResponse(400, f"failed to json decode event, {exc.__cause__}")
        event = Event(
            body,
            id=event_id,
            headers=headers,
            method=method or ("POST" if body else "GET"),
            path=path,
            content_type=content_type,
        )
        try:
            answer = self.run_event(event)
        except errors.StepError as exc:
            return MockResponse(400, _describe(exc.cause))
        except errors.ServegraphError as exc:
            return MockResponse(400, _describe(exc))
        if self._answers_id:
            return MockResponse(200, {"id": event.id}, "application/json")
        return MockResponse(200, answer, "application/json")


def in_process(spec: GraphSpec) -> GraphSpec:
    """``spec`` with each queue that has steps after it turned into a pass-through step.

    MLRun's mock server does not write to the stream of a queue that has steps after it (its
    ``context.is_mock`` branch): it runs them in the same process, as if the queue were not
    there. A queue with nothing after it still writes to its stream.
    """
    parents = {parent for step in spec.steps for parent in step.after}
    steps = tuple(
        StepSpec(
            name=step.name,
            handler=PASS_THROUGH,
            after=step.after,
            on_error=step.on_error,
            blocking=False,
        )
        if step.kind is StepKind.QUEUE and step.name in parents
        else step
        for step in spec.steps
    )
    return dataclasses.replace(spec, steps=steps)


def _describe(exc: BaseException) -> str:
    """``"<Class>: <message>"`` with the chain of causes, like MLRun's ``err_to_str``."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, errors.StepError):
            current = current.cause
            continue
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return ", caused by: ".join(parts)
