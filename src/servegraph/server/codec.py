"""Request bodies in, answers out: JSON decoded once and encoded once (msgspec).

numpy arrays and scalars are encoded without the caller converting them; bytes answers are sent
as they are and text answers as ``text/plain``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import ProtocolError

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
FORM = "application/x-www-form-urlencoded"

_decode = msgspec.json.decode


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    message = f"cannot encode a {type(value).__name__} as JSON"
    raise TypeError(message)


_encoder = msgspec.json.Encoder(enc_hook=_default)


def decode_body(body: bytes, content_type: str | None) -> Any:
    """The event body of a request: JSON decoded for a JSON content type; text for ``text/*``;
    with no content type (or curl's form default) JSON when it parses, else the bytes; the
    bytes for any other type; None for an empty body.

    Raises:
        ProtocolError: a body with a JSON content type that does not parse (400).
    """
    if not body:
        return None
    if content_type is not None and "json" in content_type:
        try:
            return _decode(body)
        except msgspec.DecodeError as exc:
            message = f"the body is not valid JSON: {exc}"
            raise ProtocolError(message) from exc
    if content_type is None or content_type.startswith(FORM):
        try:
            return _decode(body)
        except msgspec.DecodeError:
            return body
    if content_type.startswith("text/"):
        return body.decode("utf-8", errors="replace")
    return body


def encode_answer(answer: Any) -> tuple[bytes, str]:
    """An answer as bytes and its content type."""
    if isinstance(answer, bytes):
        return answer, BINARY
    if isinstance(answer, str):
        return answer.encode(), TEXT
    return _encoder.encode(answer), JSON
