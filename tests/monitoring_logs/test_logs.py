"""JSON log lines: one object per line, with the event id and step of lines about events."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from servegraph.monitoring.logs import JsonFormatter, check_format, uvicorn_log_config

ROOT = Path(__file__).parents[2]


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("servegraph.streams", logging.WARNING, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_line_about_an_event_carries_its_id_step_and_segment() -> None:
    line = json.loads(
        JsonFormatter().format(record("dead-lettered", event_id="e1", step="score", segment="q"))
    )
    assert line["message"] == "dead-lettered"
    assert (line["level"], line["logger"]) == ("WARNING", "servegraph.streams")
    assert (line["event_id"], line["step"], line["segment"]) == ("e1", "score", "q")
    assert line["time"].endswith("+00:00")


def test_exceptions_go_in_the_error_field() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(made))
    assert "ZeroDivisionError" in line["error"]
    assert "event_id" not in line


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml' is not one of: text, json"):
        check_format("xml")
    assert uvicorn_log_config("json")["formatters"]["default"]["()"].endswith("JsonFormatter")


def test_a_consumer_logs_a_dead_letter_as_json() -> None:
    graph_file = ROOT / "tests" / "monitoring_logs" / "graphs.py"
    assert graph_file.exists()
    script = (
        "import asyncio, logging\n"
        "from servegraph.monitoring.logs import configure_logging\n"
        "from tests.monitoring_logs.graphs import dead_letter_one\n"
        "configure_logging('json')\n"
        "asyncio.run(dead_letter_one())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    letters = [line for line in lines if "dead-lettered" in line["message"]]
    assert len(letters) == 1
    assert letters[0]["event_id"] == "ev-bad"
    assert letters[0]["step"] == "fail"
    assert letters[0]["segment"] == "q"
