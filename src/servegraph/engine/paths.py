"""Dotted paths into dict bodies (``input_path`` / ``result_path``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def get_path(body: Any, keys: tuple[str, ...], step: str) -> Any:
    """Return ``body[k1][k2]...``; raise KeyError naming the step and the missing key."""
    if not isinstance(body, Mapping):
        message = (
            "input_path parameter supports only dict-like event bodies "
            f"(step {step!r}, input_path {'.'.join(keys)!r}, got {type(body).__name__})"
        )
        raise TypeError(message)
    value = body
    for index, key in enumerate(keys):
        try:
            value = value[key]
        except (KeyError, TypeError, IndexError):
            where = ".".join(keys[: index + 1])
            message = (
                f"step {step!r}: input_path {'.'.join(keys)!r} not found in the body at {where!r}"
            )
            raise KeyError(message) from None
    return value


def set_path(body: Any, keys: tuple[str, ...], value: Any, step: str) -> None:
    """Set ``body[k1][k2]... = value``, creating dicts on the way; the body must be a dict."""
    if not isinstance(body, dict):
        message = (
            f"step {step!r}: result_path {'.'.join(keys)!r} needs a dict body, "
            f"got {type(body).__name__}"
        )
        raise TypeError(message)
    target = body
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value
