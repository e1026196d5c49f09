"""Model files: find the one file of a model directory and load it by its suffix."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

SUFFIXES = (".joblib", ".pkl", ".pickle", ".onnx")
"""The model files ``load_model_file`` knows, by suffix."""


def local_path(model_path: str) -> Path:
    """The local path of ``model_path`` (a path or a ``file://`` URL)."""
    if "://" in model_path and not model_path.startswith("file://"):
        scheme = model_path.split("://", 1)[0]
        message = f"cannot load {model_path!r}: only local paths and file:// URLs, not {scheme}://"
        raise ValueError(message)
    return Path(model_path.removeprefix("file://"))


def find_model_file(model_path: str, suffix: str = "") -> Path:
    """The model file at ``model_path``: the file itself, or the one model file of a directory.

    Raises:
        FileNotFoundError: nothing at that path.
        ValueError: a directory with no model file, or with several (give ``suffix``).
    """
    path = local_path(model_path)
    if not path.exists():
        message = f"no model file at {str(path)!r}"
        raise FileNotFoundError(message)
    if path.is_file():
        return path
    wanted = (suffix,) if suffix else SUFFIXES
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(wanted))
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        message = (
            f"model directory {str(path)!r} must hold exactly one model file "
            f"({', '.join(wanted)}); found: {found}"
        )
        raise ValueError(message)
    return files[0]


def load_model_file(path: Path) -> Any:
    """Load a model file by its suffix: joblib, pickle, or an ONNX inference session."""
    suffix = path.suffix.lower()
    if suffix == ".joblib":
        try:
            import joblib
        except ImportError as exc:  # pragma: no cover - the sklearn extra is installed in CI
            module = "joblib"
            raise MissingDependencyError(module, "sklearn") from exc
        return joblib.load(path)
    if suffix in (".pkl", ".pickle"):
        with path.open("rb") as file:
            return pickle.load(file)  # the model file is the operator's own
    if suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - the onnx extra is installed in CI
            module = "onnxruntime"
            raise MissingDependencyError(module, "onnx") from exc
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    message = f"cannot load {path.name!r}: unknown model file type (use {', '.join(SUFFIXES)})"
    raise ValueError(message)
