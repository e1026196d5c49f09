"""Read a model's prediction records over a time window from Parquet files, as feature rows.

The layout is the one the prediction record writer (:mod:`servegraph.monitoring.records`)
uses: one directory per model, ``<root>/<model>/`` (the name %-escaped), holding one directory
per UTC day, ``YYYY-MM-DD``, of Parquet files. Every ``*.parquet`` file below the model's
directory is read, except hidden ones (still being written) and those in a day directory
outside the window. Their columns:

========================  =====================================================================
``model``                 string
``version``               string or null
``event_id``              string
``timestamp``             ``timestamp[us, UTC]``
``latency_ms``            float64
``error``                 string or null (null: the prediction succeeded)
``inputs``, ``outputs``   JSON text
========================  =====================================================================

The window is ``[start, end)``. Each record's ``inputs`` becomes one or more feature rows:

- a list of numbers: one row, positional (value ``i`` is the reference's feature ``i``);
- a list of lists of numbers: one row per inner list (MLRun's ``{"inputs": [[...], ...]}``);
- a dict of name to number: one row by feature name; a dict of name to a list (or a column
  of shape ``[n, 1]``): ``n`` rows (an Open Inference Protocol v2 request with one tensor per
  feature); a dict with a single 2-D tensor: its rows, positional;
- a list of dicts of name to number: one row each;
- a list of Open Inference Protocol v2 tensors (``{"name", "shape", "data", ...}``): a single
  tensor's rows, positional; several tensors: one column per tensor name.

A record whose prediction failed (``error`` not null) is left out unless ``include_failed``;
one whose inputs have none of these forms, or whose positional rows are not as wide as the
feature list, is skipped and counted. Only the columns the drift check needs are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from servegraph.errors import MissingDependencyError

from .drift import MonitoringError
from .records import model_directory

COLUMNS = ("version", "timestamp", "error", "inputs")
"""The columns read: the rest of the record does not take part in the drift check."""


@dataclass(frozen=True)
class RecordWindow:
    """The feature rows of one model's prediction records over ``[start, end)``."""

    model: str
    version: str | None
    """The version asked for (None: every version)."""
    start: datetime
    end: datetime
    records: int
    """Records in the window (of the version asked for), failed ones included."""
    failed: int
    """Records whose prediction failed; their inputs are used only with ``include_failed``."""
    skipped: int
    """Records whose inputs could not be read as feature rows."""
    versions: tuple[str | None, ...]
    """The versions seen in the window, sorted (None last)."""
    rows: tuple[tuple[float, ...], ...]
    """One row per input row, in the feature order; NaN where a value is missing."""
    feature_names: tuple[str, ...]
    files: int
    """Parquet files read."""


def read_window(
    root: str | Path,
    model: str,
    start: datetime,
    end: datetime,
    feature_names: Sequence[str],
    *,
    version: str | None = None,
    include_failed: bool = False,
) -> RecordWindow:
    """Read the records of ``model`` with ``start <= timestamp < end`` as feature rows.

    Args:
        root: the records' root directory (the model's files are under ``root/model``).
        model: the model's name.
        start, end: timezone-aware datetimes.
        feature_names: the features, in the model's input order (the reference's).
        version: keep only this version's records (default: every version).
        include_failed: also use the inputs of predictions that failed.
    """
    for label, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None:
            msg = (
                f"prediction records: the window's {label} {moment.isoformat()} has no time "
                "zone; give an aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC)"
            )
            raise MonitoringError(msg)
    if end <= start:
        msg = f"prediction records: the window ends ({end}) before it starts ({start})"
        raise MonitoringError(msg)
    files = _files(Path(root), model, start, end)
    names = tuple(feature_names)
    records = failed = skipped = 0
    versions: set[str | None] = set()
    rows: list[tuple[float, ...]] = []
    for path in files:
        for record_version, error, inputs in _read_file(path, start, end):
            if version is not None and record_version != version:
                continue
            records += 1
            versions.add(record_version)
            if error is not None:
                failed += 1
                if not include_failed:
                    continue
            found = _rows_of_text(inputs, names)
            if found is None:
                skipped += 1
            else:
                rows.extend(found)
    return RecordWindow(
        model=model,
        version=version,
        start=start,
        end=end,
        records=records,
        failed=failed,
        skipped=skipped,
        versions=tuple(sorted(versions, key=lambda v: (v is None, v or ""))),
        rows=tuple(rows),
        feature_names=names,
        files=len(files),
    )


def _files(root: Path, model: str, start: datetime, end: datetime) -> list[Path]:
    directory = model_directory(root, model)
    if not directory.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        where = f"models with records there: {', '.join(known)}" if known else "no model has any"
        msg = f"prediction records: no directory {directory} for model {model!r} ({where})"
        raise MonitoringError(msg)
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    files = []
    for path in sorted(directory.rglob("*.parquet")):
        if path.name.startswith("."):
            continue  # a file still being written
        day = _day(path.parent.name)
        if day is not None and not first <= day <= last:
            continue  # a UTC day directory outside the window
        files.append(path)
    return files


def _day(name: str) -> date | None:
    try:
        return date.fromisoformat(name) if len(name) == 10 else None
    except ValueError:
        return None


def _read_file(
    path: Path, start: datetime, end: datetime
) -> list[tuple[str | None, str | None, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the parquet extra
        module = "pyarrow"
        raise MissingDependencyError(module, "parquet") from exc
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        msg = f"prediction records: cannot read {path}: {exc}"
        raise MonitoringError(msg) from None
    absent = [column for column in COLUMNS if column not in schema.names]
    if absent:
        msg = (
            f"prediction records: {path} has no column {', '.join(map(repr, absent))}; "
            f"a records file needs {', '.join(COLUMNS)}"
        )
        raise MonitoringError(msg)
    table = pq.read_table(
        path,
        columns=list(COLUMNS),
        filters=[("timestamp", ">=", start), ("timestamp", "<", end)],
    )
    columns = [table.column(name).to_pylist() for name in ("version", "error", "inputs")]
    return list(zip(*columns, strict=True))


def _rows_of_text(text: str | None, names: tuple[str, ...]) -> list[tuple[float, ...]] | None:
    if text is None:
        return None
    try:
        inputs = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return feature_rows(inputs, names)


def feature_rows(inputs: Any, names: Sequence[str]) -> list[tuple[float, ...]] | None:
    """The feature rows of one record's decoded ``inputs`` (see the module doc), or None.

    Example:
        >>> feature_rows([[1, 2], [3, 4]], ["a", "b"])
        [(1.0, 2.0), (3.0, 4.0)]
        >>> feature_rows({"b": 2, "a": 1}, ["a", "b"])
        [(1.0, 2.0)]
    """
    width = len(names)
    if isinstance(inputs, Mapping):
        return _named(inputs, names)
    if not isinstance(inputs, list) or not inputs:
        return None
    if all(_is_value(x) for x in inputs):
        return [_row(inputs)] if len(inputs) == width else None
    if all(isinstance(x, list) for x in inputs):
        if all(len(row) == width and all(_is_value(x) for x in row) for row in inputs):
            return [_row(row) for row in inputs]
        return None
    if all(isinstance(x, Mapping) for x in inputs):
        if all("data" in x and "shape" in x for x in inputs):
            return _tensors(inputs, names)
        rows: list[tuple[float, ...]] = []
        for item in inputs:
            found = _named(item, names)
            if found is None:
                return None
            rows.extend(found)
        return rows
    return None


def _named(inputs: Mapping[str, Any], names: Sequence[str]) -> list[tuple[float, ...]] | None:
    values = list(inputs.values())
    if len(values) == 1 and _depth(values[0]) == 2 and len(names) > 1:
        return feature_rows(values[0], names)  # one 2-D tensor under its name
    if not any(name in inputs for name in names):
        return None
    if all(_is_value(inputs.get(name)) for name in names):
        return [tuple(_float(inputs.get(name)) for name in names)]
    columns: list[list[Any] | None] = []
    for name in names:
        column = inputs.get(name)
        if column is None:
            columns.append(None)
            continue
        flat = _column(column)
        if flat is None:
            return None
        columns.append(flat)
    lengths = {len(column) for column in columns if column is not None}
    if len(lengths) != 1:
        return None
    (length,) = lengths
    return [
        tuple(_float(column[i]) if column is not None else math.nan for column in columns)
        for i in range(length)
    ]


def _tensors(
    tensors: list[Mapping[str, Any]], names: Sequence[str]
) -> list[tuple[float, ...]] | None:
    shaped: dict[str, list[Any]] = {}
    for tensor in tensors:
        data, shape = tensor.get("data"), tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
            return None
        flat = _flatten(data)
        if flat is None or math.prod(shape) != len(flat):
            return None
        if len(tensors) == 1:
            width = len(names)
            if len(shape) == 1:  # one row of every feature, or one feature of every row
                shape = [1, shape[0]] if shape[0] == width else [shape[0], 1]
            if len(shape) == 2 and shape[1] == width:
                return [_row(flat[i * width : (i + 1) * width]) for i in range(shape[0])]
            return None
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            return None
        shaped[str(tensor.get("name"))] = flat
    return _named(shaped, names)


def _column(value: Any) -> list[Any] | None:
    if isinstance(value, list) and all(_is_value(x) for x in value):
        return value
    if isinstance(value, list) and all(isinstance(x, list) and len(x) == 1 for x in value):
        return [x[0] for x in value]  # a column tensor of shape [n, 1]
    return None


def _flatten(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            inner = _flatten(item)
            if inner is None:
                return None
            flat.extend(inner)
        elif _is_value(item):
            flat.append(item)
        else:
            return None
    return flat


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        depth += 1
        value = value[0]
    return depth


def _row(values: Sequence[Any]) -> tuple[float, ...]:
    return tuple(_float(x) for x in values)


def _float(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)  # True and False count as 1 and 0


def _is_value(value: Any) -> bool:
    """A scalar a feature can hold: a number, or a missing or non-numeric value (NaN)."""
    return value is None or isinstance(value, int | float | str | bool)
