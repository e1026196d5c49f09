"""What ``servegraph consume`` does: run one segment of a graph as a stream consumer process.

The process reaches every broker the segment uses before it reads anything (an unreachable
broker is a clear error and a non-zero exit), builds the segment's steps, then consumes until
SIGTERM or SIGINT: it stops reading, finishes the events in flight, acks them, runs the steps'
close hooks and exits 0. Several processes of one segment share its stream through their
consumer group; a process that dies leaves its unacked events to the others
(``claim_idle_s``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from ..context import Context
from ..engine.lifecycle import await_all, close_steps, start_steps
from ..graph.spec import GraphSpec
from ..monitoring.metrics import Metrics
from .health import serve_health
from .runtime import StreamRuntime

logger = logging.getLogger("servegraph.streams")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_consumer_name() -> str:
    """A consumer name unique to this process: ``host-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def consume(
    spec: GraphSpec,
    segment: str,
    *,
    consumer: str | None = None,
    health_port: int | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    tracing: bool = False,
) -> None:
    """Consume ``segment`` of ``spec`` until SIGTERM or SIGINT; with ``health_port``, answer
    health requests on ``host:health_port`` (see ``streams.health``).

    Raises:
        GraphError: the graph is invalid or ``segment`` is not one of its segments (listed).
        BackendError: a broker is unreachable at startup (the message names its URL).
    """
    traces = None
    if tracing:
        from ..monitoring.tracing import Tracing

        traces = Tracing()
    context = Context(params=dict(spec.params), metrics=Metrics(), tracing=traces)
    runtime = StreamRuntime(spec, context=context)
    runtime.options(segment)  # an unknown segment fails here, before any I/O
    name = consumer or default_consumer_name()
    ports = tuple(dict.fromkeys(p for p in (health_port, metrics_port) if p is not None))
    asyncio.run(_consume(runtime, segment, name, ports, host))


async def _consume(
    runtime: StreamRuntime, segment: str, name: str, ports: tuple[int, ...], host: str
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        await runtime.check(segment)
        plan = await asyncio.to_thread(runtime.compile, segment)
        await start_steps(plan.instances)
        recorder = None
        if runtime.spec.tracking is not None:
            from ..monitoring.records import install_recorder

            recorder = install_recorder(runtime.context, runtime.spec.tracking)
            if recorder is not None:
                await recorder.astart()
        consumer = runtime.consumer(segment, consumer=name, plan=plan)
        logger.info(
            "consuming segment %r from %r as %r of group %r",
            segment,
            consumer.source.stream,
            name,
            consumer.group,
        )
        metrics = runtime.context.metrics
        servers = [await serve_health(consumer, host, port, metrics) for port in ports]
        try:
            await consumer.run(stop)
        finally:
            for server in servers:
                server.close()
            await await_all(close_steps(plan.instances))
            if recorder is not None:
                await recorder.aclose()
            logger.info(
                "segment %r stopped: %d events processed, %d dead-lettered",
                segment,
                consumer.statistics.processed,
                consumer.statistics.dead_lettered,
            )
    finally:
        await runtime.aclose()
