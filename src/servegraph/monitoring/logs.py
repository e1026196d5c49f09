"""Structured logs: a JSON formatter for servers and consumers.

``servegraph serve --log-format json`` and ``servegraph consume --log-format json`` write one
JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and, when
the line is about an event, ``event_id``, ``step`` and ``segment`` (the ``extra`` fields that
servegraph's own log calls pass), plus ``error`` with the traceback of an exception. Nothing is
logged per event unless something goes wrong (or a graph is ``verbose``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

LOG_FORMATS = ("text", "json")
EVENT_FIELDS = ("event_id", "step", "segment")
"""The ``extra`` fields a log line about an event carries."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in EVENT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send servegraph's logs (and the root logger's) to stderr as text or JSON lines.

    Raises:
        ValueError: ``log_format`` is neither ``"text"`` nor ``"json"``.
    """
    check_format(log_format)
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and servegraph in that format."""
    check_format(log_format)
    formatter: dict[str, Any] = (
        {"()": "servegraph.monitoring.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "servegraph")
        },
    }


def check_format(log_format: str) -> None:
    """Raise a ValueError naming the formats when ``log_format`` is not one of them."""
    if log_format not in LOG_FORMATS:
        message = f"log format {log_format!r} is not one of: {', '.join(LOG_FORMATS)}"
        raise ValueError(message)
