"""OpenTelemetry tracing: a span per event and per step, one trace across HTTP and queues.

With tracing on (``servegraph serve --tracing``, ``servegraph consume --tracing``,
``graph.mock_server(tracing=True)``, or a ``Tracing`` given to a ``Context``), every event runs
in a ``servegraph.event`` span (attributes ``servegraph.event_id`` and ``servegraph.path``) and
every step in a child span named after the step. The event span continues the trace of the
event's ``traceparent`` header (W3C Trace Context): an HTTP caller's, or the one a queue step
wrote into the message it published, so that a trace crosses queue hops with one trace id.

Spans go wherever the OpenTelemetry SDK is configured to send them (``OTEL_*`` environment
variables, or a ``TracerProvider`` given to ``Tracing``). The ``tracing`` extra installs the API
and the SDK; without tracing on, nothing of OpenTelemetry is imported or run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..event import Event

TRACEPARENT = "traceparent"
EVENT_SPAN = "servegraph.event"


class Tracing:
    """Creates the spans of events and steps, and carries trace context in headers."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            from ..errors import MissingDependencyError

            module = "opentelemetry-api"
            raise MissingDependencyError(module, "tracing") from exc
        self.trace = trace
        self.tracer = trace.get_tracer("servegraph", tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()

    def step(self, name: str, call: Callable[[Any], Any], is_async: bool) -> Callable[[Any], Any]:
        """``call`` in a span named ``name`` (a child of the event's span)."""
        tracer = self.tracer
        attributes = {"servegraph.step": name}
        if is_async:
            awaitable: Callable[[Any], Awaitable[Any]] = call

            async def traced_async(argument: Any) -> Any:
                with tracer.start_as_current_span(name, attributes=attributes):
                    return await awaitable(argument)

            return traced_async

        def traced_sync(argument: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attributes):
                return call(argument)

        return traced_sync

    def _event_span(self, event: Event) -> Any:
        parent = self.propagator.extract(event.headers) if event.headers else None
        attributes = {"servegraph.event_id": event.id, "servegraph.path": event.path}
        return self.tracer.start_as_current_span(EVENT_SPAN, context=parent, attributes=attributes)

    def run(self, run: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """A synchronous runner's ``run`` in an event span."""

        def traced_run(event: Event) -> Any:
            with self._event_span(event):
                return run(event)

        return traced_run

    def run_async(self, run: Callable[[Event], Awaitable[Any]]) -> Callable[[Event], Any]:
        """An async runner's ``run`` in an event span."""

        async def traced_run(event: Event) -> Any:
            with self._event_span(event):
                return await run(event)

        return traced_run

    def inject(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` with the current trace context (``traceparent``) added."""
        carrier = dict(headers)
        carrier.pop(TRACEPARENT, None)
        self.propagator.inject(carrier)
        return carrier
