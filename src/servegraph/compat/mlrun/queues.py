"""MLRun queue steps (``">>"``, kind ``"queue"``) as servegraph queue steps.

MLRun names a queue's stream by ``path``: a ``v3io://`` URL, a ``kafka://broker/topic`` URL, a
bare stream path, or nothing (an in-process queue). servegraph names it by URL
(``servegraph.streams.settings``): a path that already is one is kept; a bare name or a v3io
path becomes ``memory://<its last part>``; no path becomes ``memory://<queue name>``; Kafka is
refused with the URLs that work. ``load(..., streams={queue: url})`` overrides any of these.

MLRun's broker settings (``shards``, ``retention_in_hours``) and the child function's trigger
(``trigger_args``) are deployment settings of MLRun's platform: they are ignored (logged at
DEBUG on ``servegraph.compat.mlrun``). So is the ``full_event`` option: a servegraph stream
always carries the whole event (id, body, path, method and headers).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...graph.spec import StepKind, StepSpec
from ...streams.settings import SCHEMES, QueueOptions, StreamURL

logger = logging.getLogger("servegraph.compat.mlrun")

QUEUE_CLASS_NAMES = frozenset({">>", "$queue"})
"""The class names that make ``to()`` / ``add_step()`` add a queue step, as in MLRun."""

QUEUE_KEYS = frozenset(
    {"kind", "path", "shards", "retention_in_hours", "trigger_args", "options", "after", "on_error"}
)
"""The keys of a queue step in an MLRun graph dict (MLRun's ``QueueStep`` fields)."""

IGNORED_QUEUE_KEYS = frozenset(
    {"comment", "function", "shape", "name", "max_iterations", "cycle_from"}
)
PLATFORM_KEYS = ("shards", "retention_in_hours", "trigger_args")
"""MLRun settings of the broker and of the consuming function's trigger: ignored."""

KAFKA_OPTIONS = frozenset({"kafka_brokers", "kafka_bootstrap_servers", "kafka_producer_options"})
SUPPORTED_URLS = "redis://host:6379/name, nats://host:4222/name or memory://name"
KAFKA_PROBLEM = (
    f"Kafka streams are not supported by servegraph yet; use {SUPPORTED_URLS}, "
    "or give the queue a URL with load(..., streams={queue_name: url})"
)
QUEUE_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(QueueOptions))


def stream_url(name: str, path: str | None) -> str:
    """The servegraph stream URL for the MLRun queue ``name`` whose path is ``path``.

    Raises:
        ValueError: the path names Kafka or a storage servegraph has no stream for; the
            message says which URLs work.

    Example:
        >>> stream_url("q1", "v3io:///projects/demo/streams/events")
        'memory://events'
        >>> stream_url("q1", "")
        'memory://q1'
        >>> stream_url("q1", "redis://127.0.0.1:6379/events")
        'redis://127.0.0.1:6379/events'
    """
    if not path:
        return f"memory://{name}"
    scheme = urlsplit(path).scheme if "://" in path else ""
    if scheme in SCHEMES:
        StreamURL.parse(path)
        return path
    if scheme == "kafka":
        raise ValueError(KAFKA_PROBLEM)
    if scheme in ("", "v3io", "v3ios"):
        last = path.rstrip("/").rsplit("/", 1)[-1]
        return f"memory://{last or name}"
    message = (
        f"the stream path {path!r} ({scheme}://) has no servegraph equivalent; use "
        f"{SUPPORTED_URLS}, or give the queue a URL with load(..., streams={{queue_name: url}})"
    )
    raise ValueError(message)


def queue_options(
    name: str, options: Mapping[str, Any], *, kafka: bool
) -> tuple[dict[str, Any], list[str]]:
    """Split MLRun queue ``options`` into servegraph queue options and problems.

    servegraph's own option names (``group``, ``max_deliveries``...) pass through;
    ``full_event`` is ignored; Kafka options are a problem when ``kafka`` (the queue's URL was
    not overridden); any other option is a problem that lists the known ones.
    """
    kept: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []
    for key, value in options.items():
        if key in QUEUE_OPTION_NAMES:
            kept[key] = value
        elif key == "full_event":
            logger.debug("queue %r: full_event ignored (a stream carries the whole event)", name)
        elif key in KAFKA_OPTIONS:
            if kafka:
                problems.append(KAFKA_PROBLEM)
            else:
                logger.debug("queue %r: %s ignored (the stream URL was given)", name, key)
        else:
            unknown.append(str(key))
    if unknown:
        message = (
            f"unknown queue option(s) {', '.join(sorted(unknown))}; understood: "
            f"{', '.join(QUEUE_OPTION_NAMES)} (servegraph's) and full_event (ignored)"
        )
        problems.append(message)
    return kept, problems


def queue_step(
    name: str,
    data: Mapping[str, Any],
    *,
    stream: str | None = None,
) -> tuple[StepSpec, list[str]]:
    """The servegraph queue step for an MLRun queue step dict, and its problems.

    Args:
        name: the step name.
        data: the MLRun step dict (``path``, ``options``, ``after``...), or the keyword
            arguments of ``to(">>", name, path=..., **options)``.
        stream: a stream URL that replaces the one the path maps to.
    """
    problems: list[str] = []
    ignored = [key for key in PLATFORM_KEYS if data.get(key) is not None]
    if ignored:
        logger.debug("queue %r: %s ignored (MLRun platform settings)", name, ", ".join(ignored))
    url = stream
    if url is None:
        try:
            url = stream_url(name, data.get("path"))
        except ValueError as exc:
            problems.append(str(exc))
    options, option_problems = queue_options(
        name, dict(data.get("options") or {}), kafka=stream is None
    )
    problems.extend(p for p in option_problems if p not in problems)
    step = StepSpec(
        name=name,
        kind=StepKind.QUEUE,
        stream=url or f"memory://{name}",
        options=options,
        after=tuple(data.get("after") or ()),
        on_error=data.get("on_error"),
    )
    return step, problems


def pass_through(body: Any) -> Any:
    """What a queue followed by steps does under MLRun's mock server: nothing (the steps
    after it run in the same process, on the same event)."""
    return body
