"""The streams of one graph: the backends its queue steps name, and its compiled segments.

Every process that runs part of a graph with queues holds a ``StreamRuntime``: the HTTP front
and the mock server compile the ``main`` segment (its queue steps write to their streams);
``servegraph consume`` compiles another segment and builds its ``SegmentConsumer``.

Example:
    >>> import asyncio
    >>> from servegraph import Graph
    >>> from servegraph.streams.memory import MemoryBroker
    >>> graph = Graph()
    >>> _ = graph.to(lambda x: x + 1, name="inc").to_queue("q", "memory://numbers")
    >>> _ = graph["q"].to(lambda x: x * 10, name="times_ten")
    >>> runtime = StreamRuntime(graph.spec, broker=MemoryBroker())
    >>> front = runtime.runner("main")
    >>> async def demo() -> tuple[object, int]:
    ...     answer = await front.run(Event(1, id="ev-1"))
    ...     consumer = runtime.consumer("q", consumer="c1")
    ...     await consumer.poll(block_ms=0)
    ...     await consumer.drain()
    ...     return answer, consumer.statistics.processed
    >>> asyncio.run(demo())
    ({'id': 'ev-1'}, 1)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from ..context import Context
from ..engine.plan import Plan, compile_plan
from ..engine.runner import AsyncRunner, SyncRunner
from ..errors import BackendError, GraphError, MissingDependencyError, ServegraphError
from ..event import Event
from ..graph.resolve import Namespace
from ..graph.segments import MAIN, segment_spec, segments
from ..graph.spec import EngineKind, GraphSpec, StepKind, StepSpec
from .base import QueueBackend
from .consumer import SegmentConsumer
from .envelope import encode_event
from .memory import MemoryBackend, MemoryBroker
from .settings import QueueOptions, StreamURL

QueueCall = Callable[[Event], Awaitable[Event]]

DEAD_LETTER_SUFFIX = "-dead-letter"


def open_backend(
    url: str, *, broker: MemoryBroker | None = None, claim_idle_s: float | None = None
) -> QueueBackend:
    """A new backend for the stream ``url``; with ``broker``, every URL is a stream of it.

    Raises:
        ValueError: the URL is not a stream URL.
        MissingDependencyError: the broker's client library is not installed.
    """
    parsed = StreamURL.parse(url)
    if broker is not None or parsed.scheme == "memory":
        return MemoryBackend(parsed.stream, broker=broker)
    if parsed.scheme in ("redis", "rediss"):
        try:
            from .redis import RedisBackend
        except ImportError as exc:
            module = "redis"
            raise MissingDependencyError(module, "redis") from exc
        server = f"{parsed.server}/{parsed.query.get('db', '0')}"
        maxlen = parsed.query.get("maxlen")
        extra: dict[str, Any] = {} if maxlen is None else {"maxlen": int(maxlen)}
        return RedisBackend(parsed.stream, url=server, **extra)
    try:
        from .nats import NatsBackend
    except ImportError as exc:
        module = "nats-py"
        raise MissingDependencyError(module, "nats") from exc
    extra = {} if claim_idle_s is None else {"ack_wait_s": claim_idle_s}
    return NatsBackend(parsed.stream, url=parsed.server, **extra)


class StreamRuntime:
    """Opens the backends of a graph's queues and compiles its segments.

    Args:
        spec: the whole graph.
        namespace: where bare class and function names are looked up.
        context: the context given to the steps.
        broker: run every queue on this in-process broker, whatever its URL says (the mock
            server's mode); None: each queue on the broker its URL names.
        offload: the executor for blocking sync steps (servers pass theirs).
        options: options over every queue's own (the mock server turns off retry delays).
    """

    def __init__(
        self,
        spec: GraphSpec,
        *,
        namespace: Namespace = None,
        context: Context | None = None,
        broker: MemoryBroker | None = None,
        offload: Executor | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.segments = segments(spec)
        self.namespace = namespace
        self.context = context or Context()
        self.broker = broker
        self.offload = offload
        self._overrides = options or {}
        self._backends: dict[str, QueueBackend] = {}
        self._owned: list[QueueBackend] = []

    # -- backends -------------------------------------------------------------------------

    def backend(self, url: str) -> QueueBackend:
        """The backend for ``url``, shared by every step of this process that writes to it."""
        backend = self._backends.get(url)
        if backend is None:
            backend = self._backends[url] = self.open(url)
        return backend

    def open(self, url: str, *, claim_idle_s: float | None = None) -> QueueBackend:
        """A new backend for ``url`` (closed by ``aclose``); see ``open_backend``."""
        backend = open_backend(url, broker=self.broker, claim_idle_s=claim_idle_s)
        self._owned.append(backend)
        return backend

    async def check(self, segment: str = MAIN) -> None:
        """Reach every broker that ``segment`` reads or writes.

        Raises:
            BackendError: a broker is unreachable; the message names its URL.
        """
        for url in self._urls(segment):
            try:
                await self.backend(url).ping()
            except BackendError as exc:
                message = f"cannot reach the stream {url!r}: {exc}"
                raise BackendError(message, retryable=exc.retryable) from exc

    async def aclose(self) -> None:
        """Close every backend this runtime opened."""
        owned, self._owned = self._owned, []
        self._backends.clear()
        for backend in owned:
            await backend.aclose()

    # -- segments -------------------------------------------------------------------------

    def compile(self, segment: str = MAIN, *, engine: EngineKind = EngineKind.AUTO) -> Plan:
        """Compile ``segment``: its queue steps write to their streams.

        Raises:
            GraphError: an unknown segment (the message lists them) or any graph problem.
        """
        return compile_plan(
            segment_spec(self.spec, segment),
            namespace=self.namespace,
            context=self.context,
            engine=engine,
            offload=self.offload,
            queues=self.queue_call,
        )

    def runner(self, segment: str = MAIN) -> AsyncRunner:
        """An async runner of ``segment``."""
        return AsyncRunner(self.compile(segment))

    def options(self, segment: str) -> QueueOptions:
        """The options of the queue that feeds ``segment``."""
        queue = self._queue(segment)
        return QueueOptions.parse({**queue.options, **self._overrides})

    def consumer(self, segment: str, *, consumer: str, plan: Plan | None = None) -> SegmentConsumer:
        """The consumer that runs ``segment`` over its queue's stream.

        Raises:
            GraphError: ``segment`` is unknown, or is ``main`` (fed by requests, not a queue).
        """
        queue = self._queue(segment)
        assert queue.stream is not None  # validated
        options = self.options(segment)
        plan = plan if plan is not None else self.compile(segment)
        source = self.open(queue.stream, claim_idle_s=options.claim_idle_s)
        dead_url = options.dead_letter or self._dead_letter_url(queue.stream)
        return SegmentConsumer(
            segment=segment,
            source=source,
            run=AsyncRunner(plan).run,
            run_sync=None if plan.is_async else SyncRunner(plan).run,
            options=options,
            consumer=consumer,
            dead_letters=self.backend(dead_url),
            output=self.backend(options.output) if options.output else None,
        )

    def queue_call(self, step: StepSpec) -> QueueCall:
        """The call of a queue step: write the event to its stream, answer ``{"id": ...}``."""
        assert step.stream is not None  # validated
        backend = self.backend(step.stream)
        key_path = QueueOptions.parse(step.options).key
        keys = tuple(key_path.split(".")) if key_path else None
        name = step.name
        tracing = self.context.tracing

        async def publish(event: Event) -> Event:
            key = event.key if keys is None else _key_of(event.body, keys, name)
            if tracing is not None:  # the segment after the queue continues this trace
                event.headers = tracing.inject(event.headers)
            await backend.publish(
                encode_event(event),
                event_id=event.id,
                key=None if key is None else str(key),
            )
            event.body = {"id": event.id}
            return event

        return publish

    def _queue(self, segment: str) -> StepSpec:
        if segment not in self.segments:
            listed = ", ".join(repr(name) for name in self.segments)
            message = f"unknown segment {segment!r}; this graph's segments are: {listed}"
            raise GraphError(message)
        if segment == MAIN:
            message = (
                "the 'main' segment is fed by requests (serve or the mock server), not by a "
                f"stream; consume one of: {', '.join(repr(s) for s in self.segments if s != MAIN)}"
            )
            raise ServegraphError(message)
        return self.spec.step(segment)

    @staticmethod
    def _dead_letter_url(stream: str) -> str:
        parsed = StreamURL.parse(stream)
        return parsed.sibling(parsed.stream + DEAD_LETTER_SUFFIX)

    def _urls(self, segment: str) -> list[str]:
        names = set(self.segments.get(segment, ()))
        urls = [
            step.stream
            for step in self.spec.steps
            if step.kind is StepKind.QUEUE and step.name in names and step.stream
        ]
        if segment != MAIN:
            queue = self._queue(segment)
            options = self.options(segment)
            assert queue.stream is not None
            urls.append(queue.stream)
            urls.append(options.dead_letter or self._dead_letter_url(queue.stream))
            urls.extend(url for url in (options.output,) if url)
        return list(dict.fromkeys(urls))


def _key_of(body: Any, keys: tuple[str, ...], step: str) -> Any:
    """The ordering key at ``keys`` in the body (the queue's ``key`` option)."""
    value = body
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            message = (
                f"queue {step!r}: the key option {'.'.join(keys)!r} is not in the event body "
                f"(got {type(body).__name__}); send bodies that have it, or drop the option"
            )
            raise KeyError(message)
        value = value[key]
    return value
