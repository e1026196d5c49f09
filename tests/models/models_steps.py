"""Model classes the model tests serve (module level, so specs can name them)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from servegraph.models.server import ModelServer

THREADS: list[str] = []


class Summer(ModelServer):
    """Answers the sum of each row (the W1-router model)."""

    def predict(self, request: dict[str, Any]) -> list[float]:
        return [sum(row) for row in request["inputs"]]


class Failing(ModelServer):
    """Its predict always raises."""

    def predict(self, request: dict[str, Any]) -> Any:
        message = "the model broke"
        raise RuntimeError(message)


class NeverLoads(ModelServer):
    """Its load always raises."""

    def load(self) -> None:
        message = "weights missing"
        raise FileNotFoundError(message)

    def predict(self, request: dict[str, Any]) -> Any:  # pragma: no cover - never ready
        return request["inputs"]


class AsyncSummer(ModelServer):
    """An async predict."""

    async def predict(self, request: dict[str, Any]) -> list[float]:
        await asyncio.sleep(0)
        return [sum(row) for row in request["inputs"]]


class ThreadRecorder(ModelServer):
    """Records the thread its predict runs on."""

    def predict(self, request: dict[str, Any]) -> list[Any]:
        THREADS.append(threading.current_thread().name)
        return list(request["inputs"])


class Label(ModelServer):
    """Answers a fixed label (or value) per row, from its class args."""

    def predict(self, request: dict[str, Any]) -> list[Any]:
        return [self.get_param("label") for _ in request["inputs"]]


class RowChecker(ModelServer):
    """Fails rows that hold a negative value; sums the others."""

    def predict(self, request: dict[str, Any]) -> list[float]:
        rows = request["inputs"]
        if any(value < 0 for row in rows for value in row):
            message = "negative values are not allowed"
            raise ValueError(message)
        return [float(sum(row)) for row in rows]


class SlowAsync(ModelServer):
    """An async predict that takes 50 ms per batch."""

    async def predict(self, request: dict[str, Any]) -> list[Any]:
        await asyncio.sleep(0.05)
        return list(request["inputs"])
