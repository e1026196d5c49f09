"""Prediction records: what a model hands to the monitoring hook for every prediction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class PredictionRecord:
    """One prediction: who answered, what came in and out, how long it took, what failed.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, four times
    slower to build, and one is built per tracked prediction. Treat it as read-only."""

    model: str
    version: str | None
    event_id: str
    timestamp: datetime
    inputs: Any
    outputs: Any
    latency_ms: float
    error: str | None = None
