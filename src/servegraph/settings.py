"""Process settings: frozen records built once at the edge (CLI flags over environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Self

ENV_PREFIX = "SERVEGRAPH_"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server worker accepts.

    Args:
        max_body_bytes: larger request bodies are refused with 413.
        timeout_s: an event not answered in time is a 504 (None: no limit).
        max_in_flight: events in progress per worker; more are refused with 503 + Retry-After.
        threads: the thread pool that runs blocking sync steps.
    """

    max_body_bytes: int = 10 * MIB
    timeout_s: float | None = 30.0
    max_in_flight: int = 512
    threads: int = 16

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_in_flight", "threads"):
            if getattr(self, name) < 1:
                message = f"{name} must be at least 1, got {getattr(self, name)}"
                raise ValueError(message)
        if self.timeout_s is not None and self.timeout_s <= 0:
            message = f"timeout_s must be positive (or None for no limit), got {self.timeout_s}"
            raise ValueError(message)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How ``servegraph serve`` runs.

    Args:
        host: the address to listen on.
        port: the port to listen on.
        workers: worker processes (each runs the whole graph).
        limits: body size, timeout, in-flight and thread limits per worker.
        token: a bearer token every route but liveness requires (None: no auth).
        cors_origins: origins allowed by CORS (empty: CORS off; ``"*"`` any).
        graceful_s: on SIGTERM, how long in-flight requests may take to finish.
        header_timeout_s: a client has this long to send a request's headers (slow clients
            are disconnected).
        access_log: log every request (off by default: it costs per request).
        metrics: count events, errors and latency per step for ``/metrics`` (on by default).
        tracing: OpenTelemetry spans per event and step (the ``tracing`` extra; off by default).
        log_format: ``"text"`` or ``"json"`` (one JSON object per line).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    graceful_s: float = 30.0
    header_timeout_s: float = 10.0
    access_log: bool = False
    metrics: bool = True
    tracing: bool = False
    log_format: str = "text"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> Self:
        """Settings from ``SERVEGRAPH_*`` variables (``SERVEGRAPH_PORT``,
        ``SERVEGRAPH_TIMEOUT_S``, ``SERVEGRAPH_TOKEN``, ``SERVEGRAPH_CORS_ORIGINS=a,b``, ...)."""
        env = os.environ if environ is None else environ
        return cls().merged(
            {
                name: env[prefix + name.upper()]
                for name in _FIELD_NAMES
                if prefix + name.upper() in env
            }
        )

    def to_env(self, prefix: str = ENV_PREFIX) -> dict[str, str]:
        """These settings as the ``SERVEGRAPH_*`` variables that ``from_env`` reads back.

        Example:
            >>> ServerSettings(port=9000).to_env()["SERVEGRAPH_PORT"]
            '9000'
        """
        values: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "limits"
        }
        values.update({f.name: getattr(self.limits, f.name) for f in fields(self.limits)})
        return {prefix + name.upper(): _format(value) for name, value in values.items()}

    def merged(self, values: Mapping[str, Any]) -> Self:
        """These settings with ``values`` (strings are parsed) over them; None values ignored.

        Raises:
            ValueError: an unknown name or a value that does not parse, naming it.
        """
        top: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in _LIMIT_TYPES:
                limits[name] = _parse(name, value, _LIMIT_TYPES[name])
            elif name in _SERVER_TYPES:
                top[name] = _parse(name, value, _SERVER_TYPES[name])
            else:
                message = f"unknown setting {name!r}; known: {', '.join(sorted(_FIELD_NAMES))}"
                raise ValueError(message)
        if limits:
            top["limits"] = replace(self.limits, **limits)
        return replace(self, **top)


def _parse(name: str, value: Any, kind: str) -> Any:
    if not isinstance(value, str):
        return tuple(value) if kind == "origins" else value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "optional_float":
            return None if value.lower() in ("", "none", "off") else float(value)
        if kind == "bool":
            return value.lower() in ("1", "true", "yes", "on")
        if kind == "origins":
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        if kind == "optional_str":
            return value or None
    except ValueError:
        message = f"setting {name}={value!r} is not a valid {kind.replace('optional_', '')}"
        raise ValueError(message) from None
    return value


def _format(value: Any) -> str:
    if value is None:
        return ""  # "" reads back as None for the token and as "no limit" for timeout_s
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


_SERVER_TYPES = {
    "host": "str",
    "port": "int",
    "workers": "int",
    "token": "optional_str",
    "cors_origins": "origins",
    "graceful_s": "float",
    "header_timeout_s": "float",
    "access_log": "bool",
    "metrics": "bool",
    "tracing": "bool",
    "log_format": "str",
}
_LIMIT_TYPES = {
    "max_body_bytes": "int",
    "timeout_s": "optional_float",
    "max_in_flight": "int",
    "threads": "int",
}
_FIELD_NAMES = {f.name for f in fields(ServerSettings)} - {"limits"} | {
    f.name for f in fields(Limits)
}
