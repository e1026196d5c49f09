"""Queue step options and stream URLs: what a queue step's spec says, checked without I/O.

A queue step names its stream by URL:

- ``memory://events``: the in-process broker (the embedded default; nothing outlives the
  process);
- ``redis://host:6379/events`` (``rediss://`` with TLS): a Redis stream, key ``events``;
  query options ``db`` (database number) and ``maxlen`` (approximate trimming; it drops the
  oldest entries whether consumed or not, so keep it above the largest backlog);
- ``nats://host:4222/events``: a NATS JetStream stream on subject ``events``.

Its ``options`` configure the consumers of the segment that starts after it (``QueueOptions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

SCHEMES = ("memory", "redis", "rediss", "nats")
"""The stream URL schemes servegraph knows."""


@dataclass(frozen=True, slots=True)
class StreamURL:
    """A parsed stream URL: the broker to reach and the stream on it."""

    scheme: str
    server: str
    stream: str
    query: Mapping[str, str]

    @classmethod
    def parse(cls, url: str) -> StreamURL:
        """Parse ``url``.

        Raises:
            ValueError: the scheme is unknown or the URL names no stream, saying what to write.
        """
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            message = (
                f"unknown stream URL scheme in {url!r}; use one of "
                + ", ".join(f"{scheme}://" for scheme in SCHEMES)
                + " (e.g. redis://127.0.0.1:6379/events)"
            )
            raise ValueError(message)
        if parts.scheme == "memory":
            stream = (parts.netloc + parts.path).strip("/")
            server = ""
        else:
            stream = parts.path.strip("/")
            server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        if not stream:
            message = f"the stream URL {url!r} names no stream: add it as the path (…/events)"
            raise ValueError(message)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        allowed = _QUERY_OPTIONS[parts.scheme]
        unknown = sorted(set(query) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            message = f"unknown option(s) {', '.join(unknown)} in {url!r}; allowed: {known}"
            raise ValueError(message)
        return cls(parts.scheme, server, stream, query)

    def sibling(self, stream: str) -> str:
        """The URL of another stream on the same broker (a dead-letter stream, say)."""
        if self.scheme == "memory":
            return f"memory://{stream}"
        return f"{self.server}/{stream}"


_QUERY_OPTIONS: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "redis": frozenset({"db", "maxlen"}),
    "rediss": frozenset({"db", "maxlen"}),
    "nats": frozenset(),
}


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """How the consumers of a queue's segment read, retry and give up.

    Args:
        group: the consumer group shared by the segment's processes (default: the queue name).
        key: dotted path in the body whose value orders events (events with one key are
            processed one after the other); default: the event's own ``key``.
        batch: messages read per call to the broker.
        max_in_flight: events one consumer processes at once.
        max_deliveries: deliveries of a failing event before it goes to the dead-letter stream.
        retry_delay_s: the delay before the first retry; it doubles with each delivery.
        max_retry_delay_s: the longest delay between retries.
        claim_idle_s: messages delivered to a consumer and not acked for this long are taken
            over by another consumer (the first one is presumed dead).
        dead_letter: the URL of the dead-letter stream (default: ``<stream>-dead-letter`` on
            the same broker).
        output: the URL of a stream that gets each event's answer at the end of the segment.
        block_ms: how long one read waits for messages (bounds how fast a stop is noticed).
    """

    group: str | None = None
    key: str | None = None
    batch: int = 100
    max_in_flight: int = 1000
    max_deliveries: int = 5
    retry_delay_s: float = 0.5
    max_retry_delay_s: float = 30.0
    claim_idle_s: float = 30.0
    dead_letter: str | None = None
    output: str | None = None
    block_ms: int = 500

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> QueueOptions:
        """Options from a spec mapping.

        Raises:
            ValueError: unknown names (the message lists the known ones) or wrong values.
        """
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(str(name) for name in options if name not in fields)
        if unknown:
            message = f"unknown queue option(s) {', '.join(unknown)}; known: {', '.join(fields)}"
            raise ValueError(message)
        problems = []
        for name, value in options.items():
            expected = _TYPES[name]
            if not isinstance(value, expected) or isinstance(value, bool):
                problems.append(f"{name} must be {_KIND_NAMES[expected]}, got {value!r}")
            elif name in _POSITIVE and value <= 0:
                problems.append(f"{name} must be positive, got {value!r}")
            elif name in ("dead_letter", "output"):
                try:
                    StreamURL.parse(value)
                except ValueError as exc:
                    problems.append(f"{name}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**options)

    def retry_delay(self, deliveries: int) -> float:
        """The delay before redelivering an event that failed on its ``deliveries``-th try."""
        exponent = min(max(deliveries - 1, 0), 30)
        return float(min(self.retry_delay_s * 2.0**exponent, self.max_retry_delay_s))


_NUMBER = (int, float)
_TYPES: dict[str, Any] = {
    "group": str,
    "key": str,
    "batch": int,
    "max_in_flight": int,
    "max_deliveries": int,
    "retry_delay_s": _NUMBER,
    "max_retry_delay_s": _NUMBER,
    "claim_idle_s": _NUMBER,
    "dead_letter": str,
    "output": str,
    "block_ms": int,
}
_KIND_NAMES: dict[Any, str] = {str: "a string", int: "an integer", _NUMBER: "a number"}
_POSITIVE = frozenset(
    {"batch", "max_in_flight", "max_deliveries", "max_retry_delay_s", "claim_idle_s", "block_ms"}
)
