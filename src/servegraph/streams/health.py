"""The health endpoint of a consumer process: liveness, readiness and counters over HTTP.

``servegraph consume --health-port P`` answers ``GET /v2/health/live`` (200 while the process
runs), ``GET /v2/health/ready`` (200 while the consumer reaches its stream, 503 with the reason
after repeated broker failures), ``GET /v2/consumer`` (the consumer's counters, as JSON) and
``GET /metrics`` (the same counters and the segment's step metrics in the Prometheus format), for
Kubernetes probes, load balancers and Prometheus. It is plain asyncio: a consumer needs no web
framework.
"""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec

from ..monitoring.metrics import Metrics
from .consumer import SegmentConsumer

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def serve_health(
    consumer: SegmentConsumer, host: str, port: int, metrics: Metrics | None = None
) -> asyncio.Server:
    """Start answering health and metrics requests about ``consumer`` on ``host:port``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
        content_type = "application/json"
        if path == "/metrics" and method == b"GET":
            status, payload = 200, _metrics(consumer, metrics)
            content_type = _PROMETHEUS
        else:
            status, body = _route(consumer, method.decode("latin-1"), path)
            payload = msgspec.json.encode(body)
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + payload)
        try:
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

_CONSUMER_COUNTERS = (
    ("processed", "Events the consumer processed (acked or dead-lettered)."),
    ("retried", "Deliveries that failed and were scheduled again (redeliveries)."),
    ("dead_lettered", "Events sent to the dead-letter stream."),
    ("acked", "Events acknowledged to the broker."),
    ("claimed", "Pending events taken over from consumers that stopped."),
    ("broker_errors", "Failed calls to the broker."),
)


def _metrics(consumer: SegmentConsumer, metrics: Metrics | None) -> bytes:
    labels = f'segment="{consumer.segment}",group="{consumer.group}",consumer="{consumer.consumer}"'
    lines = []
    for field, help_text in _CONSUMER_COUNTERS:
        name = f"servegraph_consumer_{field}_total"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines.append(f"{name}{{{labels}}} {getattr(consumer.statistics, field)}")
    name = "servegraph_consumer_in_flight"
    lines += [f"# HELP {name} Events being processed now.", f"# TYPE {name} gauge"]
    lines.append(f"{name}{{{labels}}} {consumer.in_flight}")
    if metrics is None:
        return ("\n".join(lines) + "\n").encode()
    return metrics.render(lines)


def _route(consumer: SegmentConsumer, method: str, path: str) -> tuple[int, object]:
    if method != "GET":
        return 405, {"error": f"{method} is not allowed; use GET"}
    if path == "/v2/health/live":
        return 200, {"live": True}
    if path == "/v2/health/ready":
        if consumer.ready:
            return 200, {"ready": True}
        reason = f"cannot reach the stream {consumer.source.stream!r}"
        return 503, {"ready": False, "reason": reason}
    if path == "/v2/consumer":
        return 200, {
            "segment": consumer.segment,
            "group": consumer.group,
            "consumer": consumer.consumer,
            "in_flight": consumer.in_flight,
            **dataclasses.asdict(consumer.statistics),
        }
    return 404, {"error": f"no route {path}; try /v2/health/ready, /v2/consumer or /metrics"}
