"""Every example runs and gives the answers the README shows."""

from __future__ import annotations

import json

import pytest
from examples import quickstart


def test_quickstart_prints_an_answer_per_sample(capsys: pytest.CaptureFixture[str]) -> None:
    quickstart.AUDIT_LOG.clear()
    quickstart.main()
    lines = capsys.readouterr().out.splitlines()
    answers = [json.loads(line) for line in lines[:-1]]
    assert answers == [
        {"id": "t1", "score": 0.012, "block": False},
        {"id": "t2", "score": 0.92, "block": True},
        {"id": "t3", "score": 2.2, "block": True},
        {"id": "t4", "error": "a transaction needs an 'amount'", "step": "validate"},
    ]
    assert lines[-1] == "audited 3 events"


def test_quickstart_graph_runs_the_same_on_both_engines() -> None:
    body = {"id": "x", "amount": 2000, "country": "abroad"}
    answers = [
        quickstart.build_graph().mock_server(engine=engine).test(body=dict(body))
        for engine in ("sync", "async")
    ]
    assert answers[0] == answers[1] == {"id": "x", "score": 0.7, "block": False}
