"""Prediction records: what a model hands to the monitoring hook for every prediction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One prediction: who answered, what came in and out, how long it took, what failed."""

    model: str
    version: str | None
    event_id: str
    timestamp: datetime
    inputs: Any
    outputs: Any
    latency_ms: float
    error: str | None = None
