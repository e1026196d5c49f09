"""Route selection for model routers: by name and version, by weighted split, by condition."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine.routing import PathSelector
from ..errors import GraphError
from ..event import Event
from ..expressions import compile_expression


class ModelRouter(PathSelector):
    """The default router: a model by name and version from the Open Inference Protocol path
    (``/v2/models/<name>[/versions/<v>]/infer``; a model asked for by name alone is its only
    version), else the body's ``"model"``, else ``default`` (also for ``/v2/models/infer``),
    else the only route."""

    def __init__(self, default: str | None = None) -> None:
        super().__init__(default)


class TrafficSplit:
    """A weighted split (canary): events that name no model go to a route drawn by weight.

    Args:
        weights: route name -> relative weight, e.g. ``{"stable": 9, "canary": 1}``.
        seed: seed the draw for reproducible tests; None draws from the system.

    An event that names a model in its path or body still goes to that model.
    """

    def __init__(self, weights: Mapping[str, float], seed: int | None = None) -> None:
        if not weights or any(weight < 0 for weight in weights.values()):
            message = f"TrafficSplit needs non-negative weights by route name, got {dict(weights)}"
            raise ValueError(message)
        self.names = list(weights)
        self.weights = [float(weight) for weight in weights.values()]
        self.random = random.Random(seed)
        self.by_name = PathSelector()

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """The named model (an unknown one is a 404), else a route drawn by weight."""
        if _names_a_model(event):
            return self.by_name.select(event, routes)
        return self._draw()

    def _draw(self) -> str:
        return self.random.choices(self.names, self.weights)[0]


class Switch:
    """Picks a route by the first condition that holds on the body, else ``default``.

    Args:
        cases: ``[{"when": "event['amount'] > 1000", "route": "fraud"}, ...]``: safe
            expressions over the body (named ``event``), tried in order.
        default: the route when no condition holds (None: the event names no route, an error).
    """

    def __init__(self, cases: Sequence[Mapping[str, str]], default: str | None = None) -> None:
        try:
            self.cases = [(compile_expression(case["when"]), case["route"]) for case in cases]
        except KeyError as exc:
            message = f"every Switch case needs 'when' and 'route', missing {exc}"
            raise GraphError(message) from None
        self.default = default

    def select(self, event: Event, routes: Sequence[str]) -> str | None:
        """The route of the first case whose condition holds, else the default."""
        body = event.body
        for condition, route in self.cases:
            if condition(body):
                return route
        return self.default


def _names_a_model(event: Event) -> bool:
    path = event.path
    if path.startswith("/v2/models/") and path.split("/")[3] not in ("infer", "explain", ""):
        return True
    body: Any = event.body
    return isinstance(body, dict) and isinstance(body.get("model"), str)
