"""Context: what a step gets at construction (logger, params, secrets, metrics, tables)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

ENGINE_LOGGER = "servegraph.engine"


class NullMetric:
    """A metric that records nothing; monitoring replaces it when its extra is installed."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Count ``amount`` more."""

    def set(self, value: float) -> None:
        """Set a gauge to ``value``."""

    def observe(self, value: float) -> None:
        """Record one observation of a histogram."""


class NullMetrics:
    """The metrics hook of a context until monitoring is enabled: every metric is a no-op."""

    __slots__ = ()
    _metric = NullMetric()

    def counter(self, name: str, description: str = "") -> NullMetric:
        """Return a counter named ``name``."""
        return self._metric

    def gauge(self, name: str, description: str = "") -> NullMetric:
        """Return a gauge named ``name``."""
        return self._metric

    def histogram(self, name: str, description: str = "") -> NullMetric:
        """Return a histogram named ``name``."""
        return self._metric

    def for_step(self, step: str) -> NullMetrics:
        """The same no-op metrics, for ``step``."""
        return self


class Hooks:
    """Monitoring hooks shared by every step of a graph (None: off, nothing is built for it)."""

    __slots__ = ("record_prediction",)

    def __init__(self) -> None:
        self.record_prediction: Callable[[Any], None] | None = None


class Context:
    """Shared services for the steps of one graph.

    Each step gets its own view (``for_step``) whose logger is bound to the step name; params,
    secrets and tables are shared by the whole graph. Secrets are read from the environment
    (``SERVEGRAPH_SECRET_<KEY>`` first, then ``<KEY>``) and never appear in a spec.

    Example:
        >>> context = Context(params={"threshold": 0.5})
        >>> context.get_param("threshold"), context.get_param("missing", 1)
        (0.5, 1)
    """

    def __init__(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        is_mock: bool = False,
        verbose: bool = False,
        tables: dict[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        step: str | None = None,
        metrics: Any = None,
        tracing: Any = None,
    ) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.is_mock = is_mock
        self.verbose = verbose
        self.tables: dict[str, Any] = tables if tables is not None else {}
        self.metrics: Any = metrics if metrics is not None else NullMetrics()
        """``NullMetrics``, or ``servegraph.monitoring.metrics.Metrics`` when metrics are on."""
        self.tracing: Any = tracing
        """None, or ``servegraph.monitoring.tracing.Tracing`` when tracing is on."""
        self.hooks = Hooks()
        self.step = step
        self._secrets = secrets
        base = logging.getLogger(ENGINE_LOGGER)
        self.logger = logging.LoggerAdapter(base, {"step": step} if step else {})

    def for_step(self, name: str) -> Context:
        """Return the view of this context that the step ``name`` gets (its logger is bound to
        the name; params, secrets, tables and metrics are the graph's own objects)."""
        view = copy.copy(self)
        view.step = name
        view.metrics = self.metrics.for_step(name)
        view.logger = logging.LoggerAdapter(self.logger.logger, {"step": name})
        return view

    def get_param(self, key: str, default: Any = None) -> Any:
        """Return the graph parameter ``key``, or ``default`` when it is not set."""
        return self.params.get(key, default)

    def get_secret(self, key: str) -> str | None:
        """Return the secret ``key`` from the configured secrets or the environment, or None."""
        if self._secrets is not None and key in self._secrets:
            return self._secrets[key]
        return os.environ.get(f"SERVEGRAPH_SECRET_{key}", os.environ.get(key))

    def get_table(self, name: str) -> Any:
        """Return the state table registered under ``name``."""
        try:
            return self.tables[name]
        except KeyError:
            known = ", ".join(sorted(self.tables)) or "none"
            message = f"no table named {name!r} in this context (tables: {known})"
            raise KeyError(message) from None
