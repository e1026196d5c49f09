"""Quickstart: a small scoring graph, run in-process over sample events (`make run`).

    validate -> enrich -> score (a router over two models) -> decide (responder)
                   \\-> audit (a side branch)

Run it with ``make run`` or ``python examples/quickstart.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servegraph import Event, Graph

SAMPLES = Path(__file__).with_name("quickstart_events.json")
AUDIT_LOG: list[str] = []


class Validate:
    """Rejects transactions without an amount (MLRun-style constructor and ``do``)."""

    def __init__(self, context: Any = None, name: str | None = None, **kwargs: Any) -> None:
        self.max_amount = kwargs.get("max_amount", 10_000)

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        if "amount" not in body:
            message = "a transaction needs an 'amount'"
            raise ValueError(message)
        body["capped"] = min(body["amount"], self.max_amount)
        return body


def enrich(body: dict[str, Any]) -> dict[str, Any]:
    """Adds features the models read."""
    body["features"] = [body["capped"] / 1000, 1.0 if body.get("country") != "home" else 0.0]
    return body


class LinearModel:
    """A tiny linear model: score = w . features + b."""

    def __init__(self, weights: list[float], bias: float = 0.0) -> None:
        self.weights = weights
        self.bias = bias

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        score = sum(w * x for w, x in zip(self.weights, body["features"], strict=True))
        body["score"] = round(score + self.bias, 4)
        return body


def decide(body: dict[str, Any]) -> dict[str, Any]:
    """The answer: the transaction id, its score and a decision."""
    return {"id": body["id"], "score": body["score"], "block": body["score"] > 0.8}


def audit(event: Event) -> None:
    """A side branch: records what was seen (returns None, so the branch ends here)."""
    AUDIT_LOG.append(f"{event.id}:{event.body['id']}")


def reject(event: Event) -> dict[str, Any]:
    """Error handler: invalid transactions get an answer instead of an exception."""
    assert event.error is not None
    return {"id": event.body.get("id"), "error": str(event.error.cause), "step": event.error.step}


def build_graph() -> Graph:
    """The quickstart graph."""
    graph = Graph()
    validated = graph.to(Validate, name="validate", class_args={"max_amount": 5_000})
    enriched = validated.to(enrich)
    enriched.to(audit, full_event=True)
    router = graph.add_router("score", after=enriched.name, default_route="baseline")
    router.add_route("baseline", LinearModel, class_args={"weights": [0.1, 0.5]})
    router.add_route("strict", LinearModel, class_args={"weights": [0.3, 0.6], "bias": 0.1})
    router.to(decide).respond()
    validated.error_handler(reject, name="reject", full_event=True)
    return graph


def main() -> None:
    """Send the sample events and print each answer."""
    graph = build_graph()
    samples = json.loads(SAMPLES.read_text())
    with graph.mock_server() as server:
        for sample in samples:
            answer = server.test(sample.get("path", "/"), body=sample["body"])
            print(json.dumps(answer))
    print(f"audited {len(AUDIT_LOG)} events")


if __name__ == "__main__":
    main()
