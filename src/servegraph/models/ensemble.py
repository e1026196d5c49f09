"""Ensembles: routers that run several routes per event and combine their answers.

They are router classes (``select`` returns several routes, ``combine`` merges the answers);
the engine runs the routes one after the other in the sync engine and concurrently in the
async engine, each on its own copy of the request, and hands ``combine`` the answers in route
order. Composition, not subclassing: any router can be an ensemble, any route a model or a
sub-graph step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ProtocolError
from ..event import Event
from ..protocol import v2

CLASSIFICATION, REGRESSION = "classification", "regression"


class ParallelRun:
    """Runs every route (or the ``routes`` given) and answers ``{route: answer}``."""

    def __init__(self, routes: Sequence[str] | None = None) -> None:
        self.routes = list(routes) if routes is not None else None

    def select(self, event: Event, routes: Sequence[str]) -> Sequence[str]:
        """The routes to run: all, or the configured ones."""
        return self.routes if self.routes is not None else routes

    def combine(self, event: Event, answers: dict[str, Any]) -> Any:
        """The answers by route name."""
        return answers


class VotingEnsemble:
    """Asks every model and answers with their vote, row by row.

    Args:
        vote_type: ``"classification"`` (the label with the most weight wins; a tie goes to
            the first model in route order) or ``"regression"`` (the weighted mean).
        weights: route name -> weight (default: 1 each).
        routes: the routes to ask (default: all).
        name: the router's name, used as ``model_name`` in answers (given by the engine).

    The answer keeps the shape of the models' answers: MLRun style
    (``{"id", "model_name", "outputs", "model_outputs"}``), Open Inference Protocol v2 (one
    output tensor, the per-model outputs under ``parameters.model_outputs``), or a plain list.
    """

    def __init__(
        self,
        vote_type: str = CLASSIFICATION,
        weights: Mapping[str, float] | None = None,
        routes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        if vote_type not in (CLASSIFICATION, REGRESSION):
            message = f"vote_type must be {CLASSIFICATION!r} or {REGRESSION!r}, got {vote_type!r}"
            raise ValueError(message)
        self.vote_type = vote_type
        self.weights = dict(weights or {})
        self.routes = list(routes) if routes is not None else None
        self.name = name or "ensemble"

    def select(self, event: Event, routes: Sequence[str]) -> Sequence[str]:
        """Every model (or the configured ones)."""
        return self.routes if self.routes is not None else routes

    def combine(self, event: Event, answers: dict[str, Any]) -> Any:
        """The vote over the models' answers, in the shape they answered in."""
        per_model = {name: outputs_of(answer) for name, answer in answers.items()}
        counts = {len(rows) for rows in per_model.values()}
        if len(counts) != 1:
            sizes = {name: len(rows) for name, rows in per_model.items()}
            message = f"ensemble {self.name!r}: the models answered different row counts {sizes}"
            raise ProtocolError(message)
        voted = [
            self._vote([rows[i] for rows in per_model.values()], list(per_model))
            for i in range(counts.pop())
        ]
        first = next(iter(answers.values()))
        if isinstance(first, Mapping) and _is_v2_answer(first):
            response = v2.InferResponse(
                model_name=self.name,
                id=first.get("id") or event.id,
                outputs=[v2.encode_output("output-0", voted)],
                parameters={"model_outputs": per_model},
            )
            return v2.response_dict(response)
        if isinstance(first, Mapping):
            return {
                "id": event.id,
                "model_name": self.name,
                "outputs": voted,
                "model_outputs": per_model,
            }
        return voted

    def _vote(self, values: list[Any], names: list[str]) -> Any:
        weights = [float(self.weights.get(name, 1.0)) for name in names]
        if self.vote_type == REGRESSION:
            total = sum(weights)
            return (
                sum(float(value) * weight for value, weight in zip(values, weights, strict=True))
                / total
            )
        tally: dict[Any, float] = {}
        for value, weight in zip(values, weights, strict=True):
            key = tuple(value) if isinstance(value, list) else value
            tally[key] = tally.get(key, 0.0) + weight
        best = max(tally.values())
        winner = next(key for key in tally if tally[key] == best)
        return list(winner) if isinstance(winner, tuple) else winner


def outputs_of(answer: Any) -> list[Any]:
    """A model's per-row outputs from its answer (MLRun style, OIP v2 or a plain list)."""
    if isinstance(answer, Mapping):
        outputs = answer.get("outputs")
        if _is_v2_answer(answer):
            tensor = outputs[0]  # type: ignore[index]
            data, shape = list(tensor["data"]), list(tensor["shape"])
            if len(shape) <= 1 or all(size == 1 for size in shape[1:]):
                return data
            width = len(data) // shape[0]
            return [data[i * width : (i + 1) * width] for i in range(shape[0])]
        answer = outputs
    tolist = getattr(answer, "tolist", None)
    if callable(tolist):
        answer = tolist()
    if not isinstance(answer, list):
        message = (
            f"cannot vote on an answer of type {type(answer).__name__}; models must answer rows"
        )
        raise ProtocolError(message)
    return answer


def _is_v2_answer(answer: Mapping[str, Any]) -> bool:
    outputs = answer.get("outputs")
    return (
        isinstance(outputs, list)
        and bool(outputs)
        and isinstance(outputs[0], Mapping)
        and "datatype" in outputs[0]
    )
