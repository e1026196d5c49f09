"""The envelope: how an event travels through a stream, and how a dead letter records it.

A message's payload is JSON ``{"body": ..., "path": "/", "method": "POST", "headers": {...},
"query": {...}, "content_type": ..., "time": "2026-01-01T00:00:00Z"}`` (defaults left out);
the event id and the ordering key travel as the message's own fields (``Message.event_id``,
``Message.key``), so the id is the same on every hop and sinks can de-duplicate on it. Trace
context travels in ``headers`` (``traceparent``), like the HTTP headers it came with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ..event import Event
from .base import Message

ENVELOPE_VERSION = 1


class Envelope(msgspec.Struct, omit_defaults=True):
    """The payload of a stream message that carries an event.

    Fields it does not know are ignored, so that a newer writer's additions do not stop an
    older consumer; a ``v`` above ``ENVELOPE_VERSION`` is refused.
    """

    body: Any
    path: str = "/"
    method: str = "POST"
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    content_type: str | None = None
    time: datetime | None = None
    v: int = ENVELOPE_VERSION


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """What the dead-letter stream gets for an event that could not be processed.

    ``event`` is the envelope as it arrived (None when the message was not one; ``raw`` then
    holds its text), so that a fixed consumer can replay it.
    """

    error: str
    step: str | None
    segment: str
    source: str
    deliveries: int
    event: Envelope | None = None
    raw: str | None = None


class EnvelopeError(ValueError):
    """A message whose payload is not an envelope (not JSON, or not the known shape)."""


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    message = f"cannot write a {type(value).__name__} to a stream: the body must be JSON data"
    raise TypeError(message)


_encoder = msgspec.json.Encoder(enc_hook=_default)
_decoder = msgspec.json.Decoder(Envelope)


def encode_event(event: Event) -> bytes:
    """The payload for ``event``.

    Raises:
        TypeError: the body holds something that is not JSON data (the message names its type).
    """
    headers, query = event.headers, event.query
    return _encoder.encode(
        Envelope(
            event.body,
            event.path,
            event.method,
            headers if type(headers) is dict else dict(headers),
            query if type(query) is dict else dict(query),
            event.content_type,
            event.time,
        )
    )


def decode_event(message: Message) -> Event:
    """The event a message carries, with its id and key.

    Raises:
        EnvelopeError: the payload is not an envelope.
    """
    try:
        envelope = _decoder.decode(message.body)
    except msgspec.DecodeError as exc:
        detail = f"the message is not a servegraph event envelope: {exc}"
        raise EnvelopeError(detail) from exc
    if envelope.v > ENVELOPE_VERSION:
        detail = (
            f"the envelope is version {envelope.v}, written by a newer servegraph; this "
            f"consumer reads version {ENVELOPE_VERSION}: upgrade it"
        )
        raise EnvelopeError(detail)
    return Event(
        envelope.body,
        id=message.event_id,
        key=message.key,
        headers=envelope.headers,
        method=envelope.method,
        path=envelope.path,
        query=envelope.query,
        content_type=envelope.content_type,
        time=envelope.time,
        trigger="stream",
    )


def encode_answer(answer: Any) -> bytes:
    """The payload of an answer written to an output stream (an envelope around it)."""
    return _encoder.encode(Envelope(answer))


def dead_letter(
    message: Message, *, error: str, step: str | None, segment: str, source: str
) -> bytes:
    """The dead-letter payload for ``message``."""
    try:
        envelope: Envelope | None = _decoder.decode(message.body)
        raw = None
    except msgspec.DecodeError:
        envelope, raw = None, message.body.decode("utf-8", errors="replace")
    record = DeadLetter(error, step, segment, source, message.deliveries, envelope, raw)
    return _encoder.encode(record)


def read_dead_letter(payload: bytes) -> DeadLetter:
    """Decode a dead-letter payload (for tools and tests that inspect the stream)."""
    return msgspec.json.decode(payload, type=DeadLetter)
