"""Targets: steps that write events out and pass them on — to a stream, a table or files.

Each event finishes once its write has landed (stream, table) or been handed to the file
writer's buffer (files: rows are written every ``rows_per_flush`` rows and when the graph
closes; a crash loses the buffer, so put streams or tables where every event must survive).
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..context import Context
from ..errors import GraphError, MissingDependencyError, Problem
from ..event import Event
from ..state.tables import Table
from .base import BuiltinStep
from .state import GroupWriter, _TableStep

FILE_FORMATS = ("csv", "parquet")


class ToStream(BuiltinStep):
    """Write every event to the stream ``stream`` (a stream URL such as
    ``"redis://host:6379/scores"``, see docs/streams.md) and pass it on.

    The message is the envelope that queue steps write (body, id, path, headers...), so that a
    ``servegraph consume`` of another graph, or any reader of the envelope, can read it; the
    event's id goes with it (de-duplicating readers keep one copy). ``key`` names a body field
    whose value becomes the message key.
    """

    default_name = "to_stream"

    def __init__(
        self,
        stream: str,
        key: str | None = None,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        from ..streams.runtime import open_backend
        from ..streams.settings import StreamURL

        self.arguments = {"stream": stream, "key": key}
        self.name = name or self.default_name
        try:
            StreamURL.parse(stream)
            # The object a graph is built with (no context) only records the step.
            if context is not None:
                self.backend = open_backend(stream)
        except (ValueError, MissingDependencyError) as exc:
            raise GraphError([Problem(name, str(exc))]) from exc
        self.key = key

    async def astart(self) -> None:
        await self.backend.ping()

    async def do_event(self, event: Event) -> Event:
        from ..streams.envelope import encode_event

        key = None if self.key is None else str(event.body[self.key])
        await self.backend.publish(encode_event(event), event_id=event.id, key=key)
        return event

    async def aclose(self) -> None:
        await self.backend.aclose()


class ToTable(_TableStep):
    """Write the body (a dict), or its ``columns``, to ``table`` under the event's key, and
    pass the event on. Writes replace the row; events of one loop iteration share a round trip.
    """

    default_name = "to_table"

    def __init__(
        self,
        table: str | Table,
        key: str | Sequence[str],
        columns: Sequence[str] | None = None,
        on_missing_key: str = "error",
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "table": table,
            "key": key,
            "columns": columns,
            "on_missing_key": on_missing_key,
        }
        super().__init__(table, key, on_missing_key, name, context)
        self.columns = tuple(columns) if columns is not None else None
        if self.opened:
            self.writer: GroupWriter[Mapping[str, Any]] = GroupWriter(self.table, _row)

    async def do_event(self, event: Event) -> Event:
        key = self.key_of(event)
        if key is None:
            return event
        body = event.body
        if not isinstance(body, Mapping):
            message = f"step {self.name!r} writes dict bodies to a table, got {type(body).__name__}"
            raise TypeError(message)
        row = body if self.columns is None else {c: body.get(c) for c in self.columns}
        await self.writer.write(key, dict(row))
        return event

    async def aclose(self) -> None:
        await self.writer.aclose()
        await super().aclose()


def _row(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return row


class ToFile(BuiltinStep):
    """Append the body (a dict) of every event as a row to ``path`` and pass the event on.

    ``format`` is ``"csv"`` or ``"parquet"`` (default: from the file's suffix). ``columns``
    fixes the columns and their order (default: the first row's fields; a later row with other
    fields is an error naming them). Rows are written every ``rows_per_flush`` rows and when
    the graph closes. CSV appends to an existing file (its header is kept); Parquet writes one
    file per run, which is complete once the graph has closed (pyarrow, the ``parquet`` extra).
    """

    default_name = "to_file"
    blocking = True  # file I/O: servers run it in their thread pool

    def __init__(
        self,
        path: str,
        format: str | None = None,  # noqa: A002 - the natural word
        columns: Sequence[str] | None = None,
        rows_per_flush: int = 10_000,
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.arguments = {
            "path": path,
            "format": format,
            "columns": columns,
            "rows_per_flush": rows_per_flush,
        }
        self.name = name or self.default_name
        self.path = Path(path)
        chosen = format or self.path.suffix.lstrip(".").lower()
        if chosen not in FILE_FORMATS:
            message = (
                f"to_file writes {' or '.join(FILE_FORMATS)}: set format= or use a .csv or "
                f".parquet path, not {path!r}"
            )
            raise GraphError([Problem(name, message)])
        self.format = chosen
        if chosen == "parquet":
            try:
                import pyarrow  # noqa: F401 - fail at build time, not at the first flush
            except ImportError as exc:
                raise GraphError(
                    [Problem(name, str(MissingDependencyError("pyarrow", "parquet")))]
                ) from exc
        if rows_per_flush < 1:
            message = f"rows_per_flush must be at least 1, not {rows_per_flush!r}"
            raise GraphError([Problem(name, message)])
        self.columns: tuple[str, ...] | None = tuple(columns) if columns is not None else None
        self.column_set = frozenset(self.columns or ())
        self.rows_per_flush = rows_per_flush
        self.rows: list[Mapping[str, Any]] = []
        self.lock = threading.Lock()
        self.parquet_writer: Any = None
        self.written = 0

    def do(self, body: Any) -> Any:
        if not isinstance(body, Mapping):
            message = f"step {self.name!r} writes dict bodies as rows, got {type(body).__name__}"
            raise TypeError(message)
        with self.lock:
            if self.columns is None:
                self.columns = tuple(body)
                self.column_set = frozenset(self.columns)
            elif not self.column_set.issuperset(body):
                self._check(body)
            self.rows.append(body)
            if len(self.rows) >= self.rows_per_flush:
                self._flush()
        return body

    def _check(self, body: Mapping[str, Any]) -> None:
        assert self.columns is not None
        extra = [field for field in body if field not in self.columns]
        if extra:
            message = (
                f"step {self.name!r}: a row has fields {extra} that are not among the file's "
                f"columns {list(self.columns)}; set columns= to choose them"
            )
            raise ValueError(message)

    def _flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows or self.columns is None:
            return
        if self.format == "csv":
            self._write_csv(rows, self.columns)
        else:
            self._write_parquet(rows, self.columns)
        self.written += len(rows)

    def _write_csv(self, rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def _write_parquet(self, rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        if self.parquet_writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.parquet_writer = pq.ParquetWriter(self.path, table.schema)
        self.parquet_writer.write_table(table.cast(self.parquet_writer.schema))

    def close(self) -> None:
        """Write what is buffered and finish the file."""
        with self.lock:
            self._flush()
            if self.parquet_writer is not None:
                self.parquet_writer.close()
                self.parquet_writer = None
