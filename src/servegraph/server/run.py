"""Running a graph under uvicorn: what ``servegraph serve`` does.

The parent process checks the target once (a clear error before any worker starts), then puts
the target and the settings into the environment and hands uvicorn the import string of
``create_app``. Each worker (one, several with ``--workers``, or the reloader's child) imports
that factory and builds its own ServingApp from the environment, so the parent and every worker
serve the same graph with the same settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import GraphError, MissingDependencyError
from ..graph.builder import Graph
from ..graph.resolve import ResolveError, resolve
from ..graph.spec import GraphSpec
from ..graph.validate import check
from ..settings import ENV_PREFIX, ServerSettings
from .app import ServingApp

TARGET_VARIABLE = ENV_PREFIX + "TARGET"
"""The environment variable that names the graph a worker serves."""
FACTORY = "servegraph.server.run:create_app"
"""The import string uvicorn imports in each worker."""
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

logger = logging.getLogger(__name__)


def load_target(reference: str) -> GraphSpec:
    """Return the spec of the graph that ``reference`` names.

    Args:
        reference: a spec file (``.json``, ``.yaml``, ``.yml``), or ``"module:attribute"``
            naming a Graph, a GraphSpec, or a function of no arguments that returns either.

    Raises:
        GraphError: the reference cannot be read or imported, or it names something that is
            not a graph (the message says which and why).

    Example:
        >>> spec = load_target("examples.quickstart:build_graph")  # doctest: +SKIP
    """
    if reference.lower().endswith(SPEC_SUFFIXES):
        return _load_file(Path(reference))
    if ":" not in reference:
        message = (
            f"cannot serve {reference!r}: name a spec file (.json, .yaml or .yml) "
            "or a graph as 'module:attribute'"
        )
        raise GraphError(message)
    try:
        target = resolve(reference)
    except ResolveError as exc:
        raise GraphError(str(exc)) from exc
    return _as_spec(target, reference)


def create_app() -> ServingApp:
    """Return the app of the graph named by ``SERVEGRAPH_TARGET``, with ``SERVEGRAPH_*`` settings.

    This is the factory uvicorn calls in each worker (``factory=True``).

    Raises:
        GraphError: the variable is not set, or its target is not a graph.
    """
    reference = os.environ.get(TARGET_VARIABLE)
    if not reference:
        message = f"{TARGET_VARIABLE} is not set: it names the graph to serve"
        raise GraphError(message)
    settings = ServerSettings.from_env()
    _configure_protocol(settings)
    return ServingApp(load_target(reference), settings=settings)


def serve(target: str, settings: ServerSettings, *, reload: bool = False) -> None:
    """Serve the graph ``target`` names over HTTP with uvicorn until the process is stopped.

    On SIGTERM or Ctrl-C, requests in flight get ``settings.graceful_s`` seconds to finish,
    then every step's close hook runs.

    Args:
        target: what ``load_target`` reads.
        settings: host, port, workers, limits, token, CORS, graceful shutdown, access log.
        reload: restart the worker when a source file changes (development only).

    Raises:
        MissingDependencyError: uvicorn is not installed (the ``server`` extra).
        GraphError: the target is not a valid graph.
    """
    try:
        import uvicorn
    except ImportError as exc:
        module = "uvicorn"
        raise MissingDependencyError(module, "server") from exc
    if settings.workers == 1 and not reload:
        # One process: build the graph once, here, and hand uvicorn the app itself.
        spec = load_target(target)
        check(spec)
        app: Any = ServingApp(spec, settings=settings)
    else:
        # Workers build their own graph: the parent only checks it, in a short-lived child
        # process, so that it holds no model (a supervisor's memory is the workers' overhead).
        _check_in_child(target)
        os.environ.update(environment_of(target, settings))
        app = FACTORY
    http = _configure_protocol(settings)
    from ..monitoring.logs import uvicorn_log_config

    log_config = uvicorn_log_config(settings.log_format)
    with _stopping_quietly():
        uvicorn.run(
            app,
            factory=app is FACTORY,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="auto",
            http=http,
            lifespan="on",
            access_log=settings.access_log,
            # uvicorn annotates an int but only hands it to asyncio.wait_for, which takes a float
            timeout_graceful_shutdown=settings.graceful_s,  # type: ignore[arg-type]
            reload=reload,
            log_level="info",
            log_config=log_config,
        )


class _Stopped(BaseException):
    """SIGTERM or SIGINT reached the process outside uvicorn's own handling of it."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


@contextlib.contextmanager
def _stopping_quietly() -> Iterator[None]:
    """Make SIGTERM and SIGINT a clean return from ``serve`` (exit status 0, no traceback).

    After a graceful shutdown, uvicorn restores the handlers it found and raises the signal it
    caught again, so that the default action (death by SIGTERM, or KeyboardInterrupt) follows.
    The drain has already happened by then, so here that second delivery ends ``serve``; a
    signal that arrives before uvicorn installs its handlers stops it the same way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    except _Stopped:
        logger.debug("stopped by a signal")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_protocol(settings: ServerSettings) -> Any:
    """The HTTP protocol uvicorn runs: httptools with a header timeout when available."""
    try:
        from .protocol import HeaderTimeoutProtocol
    except ImportError:  # pragma: no cover - the server extra installs httptools
        return "auto"
    HeaderTimeoutProtocol.header_timeout_s = settings.header_timeout_s
    return HeaderTimeoutProtocol


def check_target(target: str) -> None:
    """Load and validate ``target`` (what the parent of several workers runs in a child)."""
    check(load_target(target))


def _check_in_child(target: str) -> None:
    code = (
        "import sys\n"
        "from servegraph.server.run import check_target\n"
        "try:\n"
        "    check_target(sys.argv[1])\n"
        "except Exception as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, target], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = result.stderr.strip() or f"checking it failed (exit status {result.returncode})"
        raise GraphError(reason)


def environment_of(target: str, settings: ServerSettings) -> Mapping[str, str]:
    """The variables that make ``create_app`` build this target with these settings."""
    return {TARGET_VARIABLE: target, **settings.to_env()}


def _load_file(path: Path) -> GraphSpec:
    if not path.is_file():
        message = f"cannot serve {str(path)!r}: no such file"
        raise GraphError(message)
    try:
        return Graph.load(path).spec
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        message = f"cannot read {str(path)!r}: {exc}"
        raise GraphError(message) from exc


def _as_spec(target: Any, reference: str) -> GraphSpec:
    if isinstance(target, Graph | GraphSpec):
        return target if isinstance(target, GraphSpec) else target.spec
    if callable(target) and not isinstance(target, type):
        try:
            built = target()
        except TypeError as exc:
            message = f"cannot serve {reference!r}: calling it with no arguments failed: {exc}"
            raise GraphError(message) from exc
        if isinstance(built, Graph | GraphSpec):
            return built if isinstance(built, GraphSpec) else built.spec
        message = f"cannot serve {reference!r}: it returned {type(built).__name__}, not a Graph"
        raise GraphError(message)
    message = (
        f"cannot serve {reference!r}: it is a {type(target).__name__}, not a Graph, a GraphSpec "
        "or a function that returns one"
    )
    raise GraphError(message)
