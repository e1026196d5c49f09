"""The graph the fault tests run: ``accept`` -> queue ``jobs`` -> ``work``.

Everything a test process needs to point it somewhere comes from the environment, so that
the ``servegraph consume`` processes and the test's producer build the same graph:

- ``FAULT_STREAM``: the queue's stream URL (a private broker's);
- ``FAULT_OUTPUT``: the output stream that gets each event's answer (default: the stream's
  URL + ``-out``);
- ``FAULT_LOG_DIR``: when set, ``work`` appends the id of every event it processes to
  ``<dir>/<pid>.log`` (one write per event, so a SIGKILL loses nothing written before it):
  how the tests count events processed twice, which an output stream that drops republished
  ids (JetStream's duplicate window) cannot show.

Events whose body has ``"poison": true`` make ``work`` raise, on every delivery.
"""

from __future__ import annotations

import os
from typing import Any

from servegraph import Graph

QUEUE = "jobs"
BATCH = 100
MAX_IN_FLIGHT = 1000
CLAIM_IDLE_S = 2.0
MAX_DELIVERIES = 3

_log: list[int] = []
"""The file descriptor of this process's processing log, once opened."""


class PoisonError(ValueError):
    """Raised by ``work`` for a poison event."""


def accept(body: dict[str, Any]) -> dict[str, Any]:
    return body


def work(event: Any) -> dict[str, Any]:
    body = event.body
    if body.get("poison"):
        message = f"poison event {body['n']}"
        raise PoisonError(message)
    _record(event.id)
    return {"n": body["n"], "pid": os.getpid()}


def _record(event_id: str) -> None:
    directory = os.environ.get("FAULT_LOG_DIR")
    if not directory:
        return
    if not _log:
        path = os.path.join(directory, f"{os.getpid()}.log")
        _log.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_log[0], f"{event_id}\n".encode())


def build() -> Graph:
    """The fault graph on the streams that ``FAULT_STREAM`` and ``FAULT_OUTPUT`` name."""
    stream = os.environ["FAULT_STREAM"]
    return make(stream, os.environ.get("FAULT_OUTPUT") or output_of(stream))


def output_of(stream: str) -> str:
    """The default output stream of ``stream``."""
    return stream + "-out"


def make(stream: str, output: str) -> Graph:
    """The fault graph: its queue reads ``stream`` and writes answers to ``output``."""
    graph = Graph()
    graph.to(accept).to_queue(
        QUEUE,
        stream,
        output=output,
        batch=BATCH,
        max_in_flight=MAX_IN_FLIGHT,
        claim_idle_s=CLAIM_IDLE_S,
        max_deliveries=MAX_DELIVERIES,
        retry_delay_s=0.05,
        max_retry_delay_s=0.2,
        block_ms=200,
    ).to(work, full_event=True)
    return graph
