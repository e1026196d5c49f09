"""Open Inference Protocol v2 metadata and error bodies: server, model and tensor metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ProtocolError
from .v2 import _KNOWN, DATATYPES, _short


def error_body(message: str) -> dict[str, str]:
    """Return the OIP error body ``{"error": message}``."""
    return {"error": message}


def server_metadata(name: str, version: str, extensions: list[str]) -> dict[str, Any]:
    """Return the OIP server metadata body ``{"name", "version", "extensions"}``."""
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str,
    versions: list[str],
    platform: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> dict[str, Any]:
    """Return the OIP model metadata body ``{"name", "versions", "platform", "inputs", "outputs"}``.

    ``inputs`` and ``outputs`` hold tensor metadata ``{"name", "datatype", "shape"}`` (``-1``
    marks a variable dimension; other keys are dropped).

    Raises:
        ProtocolError: an entry lacks a str name, a known datatype or a shape of ints >= -1.

    Example:
        >>> x = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
        >>> model_metadata("iris", ["1"], "sklearn", [x], [])["inputs"]
        [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}]
    """
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [_tensor_metadata(name, "inputs", tensor) for tensor in inputs],
        "outputs": [_tensor_metadata(name, "outputs", tensor) for tensor in outputs],
    }


def _tensor_metadata(model: str, where: str, tensor: Any) -> dict[str, Any]:
    if (
        isinstance(tensor, Mapping)
        and isinstance(tensor.get("name"), str)
        and tensor.get("datatype") in DATATYPES
        and isinstance(shape := tensor.get("shape"), list | tuple)
        and all(type(dim) is int and dim >= -1 for dim in shape)
    ):
        return {"name": tensor["name"], "datatype": tensor["datatype"], "shape": list(shape)}
    message = (
        f"model {model!r} {where}: bad tensor metadata {_short.repr(tensor)}; expected "
        f'{{"name": str, "datatype": one of {_KNOWN}, "shape": [int, ...]}} '
        "with dimensions >= -1 (-1 for a variable dimension)"
    )
    raise ProtocolError(message)
