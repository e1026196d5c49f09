"""The ``servegraph`` command: validate, plot, test, serve and invoke graphs.

Usage::

    servegraph serve examples.quickstart:build_graph --port 8080 --workers 2
    servegraph invoke http://127.0.0.1:8080/ --body '{"id": "t1", "amount": 120}'
    servegraph validate graph.yaml
    servegraph plot graph.json --format dot --output graph.dot
    servegraph test graph.json --body '{"x": 1}' --path /predict --header trace=1
    servegraph validate mlrun_graph.json --mlrun --namespace mymodule

Exit status: 0 on success; 1 when the graph is invalid (every problem is printed, one per line)
or the event failed; 2 when the command line, a file or the environment is the problem (a
missing file, unreadable JSON or YAML, an unknown namespace module, no Graphviz for SVG).

Each subcommand is one ``_add_<name>`` function that declares its arguments and one
``_run_<name>`` function that does the work, so new subcommands slot in beside them. This is
the only module that configures logging.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ._version import __version__
from .errors import GraphError, ServegraphError
from .graph.builder import Graph
from .graph.plot import FORMATS
from .graph.spec import EngineKind

logger = logging.getLogger(__name__)

EXIT_OK = 0
"""The command did what was asked."""
EXIT_FAILED = 1
"""The graph is invalid, or the event sent through it failed."""
EXIT_USAGE = 2
"""The command line, an input file or the environment is the problem (argparse uses 2 too)."""

Command = Callable[[argparse.Namespace], int]
"""A subcommand: takes the parsed arguments, returns the exit status."""


class InputError(Exception):
    """A problem with the command's input (not with the graph); printed on one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``servegraph`` command line and return its exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for an invalid graph or a failed event, 2 for a usage or input error.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        servegraph 0.1.0
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: keep the int contract
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)
    _make_cwd_importable()
    command: Command = args.command
    try:
        return command(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GraphError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``servegraph`` command, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="servegraph", description="Validate, plot, test, serve and invoke servegraph graphs."
    )
    parser.add_argument("--version", action="version", version=f"servegraph {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    # Subcommands accept -v too; SUPPRESS keeps their default from overriding the main one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_validate(subcommands, common)
    _add_plot(subcommands, common)
    _add_test(subcommands, common)
    _add_serve(subcommands, common)
    _add_consume(subcommands, common)
    _add_invoke(subcommands, common)
    _add_monitor(subcommands, common)
    return parser


# -- validate ---------------------------------------------------------------------------------


def _add_validate(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "validate",
        parents=[common],
        help="check a spec file and list every problem",
        description="Check a spec file; print every problem, one per line, and exit 1 if any.",
    )
    _add_graph_arguments(parser)
    parser.set_defaults(command=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    graph = _load_graph(args)
    graph.validate()
    count = len(graph.spec.steps)
    print(f"ok: {args.file} ({count} step{'' if count == 1 else 's'})")
    return EXIT_OK


# -- plot -------------------------------------------------------------------------------------


def _add_plot(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "plot",
        parents=[common],
        help="draw a graph as Mermaid, Graphviz DOT or SVG text",
        description="Draw a graph as Mermaid, Graphviz DOT or SVG (needs Graphviz) text.",
    )
    _add_graph_arguments(parser)
    parser.add_argument(
        "--format", choices=FORMATS, default="mermaid", help="the drawing format (mermaid)"
    )
    parser.add_argument(
        "--output", "-o", type=Path, metavar="PATH", help="write to PATH instead of stdout"
    )
    parser.set_defaults(command=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    graph = _load_graph(args)
    try:
        text = graph.plot(args.format)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip() if exc.stderr else str(exc)
        message = f"Graphviz failed to draw the graph: {detail}"
        raise InputError(message) from exc
    except (OSError, subprocess.SubprocessError) as exc:  # no Graphviz, or it timed out
        raise InputError(str(exc)) from exc
    if args.output is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        message = f"cannot write {str(args.output)!r}: {exc.strerror or exc}"
        raise InputError(message) from exc
    logger.debug("wrote the %s drawing to %s", args.format, args.output)
    return EXIT_OK


# -- test -------------------------------------------------------------------------------------


def _add_test(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "test",
        parents=[common],
        help="send one event through a mock server and print the answer",
        description="Build an in-process mock server, send one event and print the answer as "
        "JSON (or its repr when it is not JSON).",
    )
    _add_graph_arguments(parser)
    _add_event_arguments(parser)
    parser.add_argument(
        "--engine",
        choices=[EngineKind.SYNC.value, EngineKind.ASYNC.value],
        help="run with this engine (default: the spec's, else async only if a step is async)",
    )
    parser.set_defaults(command=_run_test)


def _run_test(args: argparse.Namespace) -> int:
    if args.mlrun and args.engine is not None:
        message = "--engine does not apply with --mlrun: the MLRun dict's 'engine' key picks it"
        raise InputError(message)
    return _answer_in_process(_load_graph(args), args)


def _answer_in_process(graph: Graph, args: argparse.Namespace) -> int:
    """Send ``args.body`` through a mock server of ``graph`` and print the answer."""
    headers = dict(args.headers)
    if args.mlrun:
        server = graph.mock_server()
    else:
        server = graph.mock_server(engine=args.engine, verbose=args.verbose)
    with server:
        try:
            answer = server.test(args.path, args.body, method=args.method, headers=headers)
        except ServegraphError as exc:
            logger.debug("the event failed", exc_info=True)
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(_format_answer(answer))
    return EXIT_OK


# -- serve ------------------------------------------------------------------------------------


def _add_serve(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "serve",
        parents=[common],
        help="serve a graph over HTTP (Open Inference Protocol v2) with uvicorn",
        description="Serve a graph over HTTP with uvicorn until stopped; on SIGTERM, requests "
        "in flight finish first. Flags win over SERVEGRAPH_* variables, which win over the "
        "defaults.",
    )
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="a .json, .yaml or .yml spec file, or 'module:attribute' naming a Graph, a "
        "GraphSpec or a function of no arguments that returns one",
    )
    parser.add_argument("--host", help="the address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, help="the port to listen on (8080)")
    parser.add_argument("--workers", type=int, help="worker processes (1)")
    parser.add_argument(
        "--reload", action="store_true", help="restart when a source file changes (development)"
    )
    parser.add_argument("--token", help="a bearer token every route but liveness requires")
    parser.add_argument(
        "--timeout-s", type=float, metavar="S", help="answer 504 after S seconds (30)"
    )
    parser.add_argument(
        "--max-body-bytes", type=int, metavar="N", help="refuse larger bodies with 413 (10 MiB)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, metavar="N", help="events per worker before 503 (512)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="threads for blocking sync steps (16)"
    )
    parser.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="O",
        help="an origin allowed by CORS ('*': any); repeat for more",
    )
    parser.add_argument(
        "--graceful-s",
        type=float,
        metavar="S",
        help="on SIGTERM, how long requests in flight may take to finish (30)",
    )
    parser.add_argument(
        "--header-timeout-s",
        type=float,
        metavar="S",
        help="disconnect clients that take longer to send a request's headers (10)",
    )
    parser.add_argument("--access-log", action="store_true", default=None, help="log every request")
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        default=None,
        help="do not count events, errors and latency per step (served at /metrics)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        default=None,
        help="OpenTelemetry spans per event and step (configure the exporter with OTEL_* vars)",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="text, or one JSON object per line (text)"
    )
    parser.set_defaults(command=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from .errors import MissingDependencyError
    from .server.run import serve
    from .settings import ServerSettings

    flags = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "workers",
            "token",
            "timeout_s",
            "max_body_bytes",
            "max_in_flight",
            "threads",
            "cors_origins",
            "graceful_s",
            "header_timeout_s",
            "access_log",
            "metrics",
            "tracing",
            "log_format",
        )
    }
    try:
        settings = ServerSettings.from_env().merged(flags)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    try:
        serve(args.target, settings, reload=args.reload)
    except MissingDependencyError as exc:
        raise InputError(str(exc)) from exc
    return EXIT_OK


# -- consume ----------------------------------------------------------------------------------


def _add_consume(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "consume",
        parents=[common],
        help="run one segment of a graph as a stream consumer",
        description="Consume the stream of a queue step and run the segment after it, at "
        "least once, until SIGTERM (events in flight finish and are acked first). Run "
        "several processes of one segment to share its stream.",
    )
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="a .json, .yaml or .yml spec file, or 'module:attribute' naming a Graph, a "
        "GraphSpec or a function of no arguments that returns one",
    )
    parser.add_argument(
        "--segment", required=True, metavar="NAME", help="the segment to run (a queue step's name)"
    )
    parser.add_argument(
        "--consumer", metavar="NAME", help="this process's name in the group (host-pid)"
    )
    parser.add_argument(
        "--health-port",
        type=int,
        metavar="P",
        help="answer /v2/health/live, /v2/health/ready, /v2/consumer and /metrics on this port",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="answer /metrics (Prometheus) on this port too (the health port answers it as well)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address of those ports (127.0.0.1)"
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry spans per event and step (configure the exporter with OTEL_* vars)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text, or one JSON object per line (text)",
    )
    parser.set_defaults(command=_run_consume)


def _run_consume(args: argparse.Namespace) -> int:
    from .monitoring.logs import configure_logging
    from .server.run import load_target
    from .streams.process import consume

    configure_logging(args.log_format)
    spec = load_target(args.target)
    try:
        consume(
            spec,
            args.segment,
            consumer=args.consumer,
            health_port=args.health_port,
            metrics_port=args.metrics_port,
            host=args.host,
            tracing=args.tracing,
        )
    except GraphError:
        raise
    except ServegraphError as exc:  # an unreachable broker, a missing client library
        raise InputError(str(exc)) from exc
    return EXIT_OK


# -- invoke -----------------------------------------------------------------------------------


def _add_invoke(subcommands: Any, common: argparse.ArgumentParser) -> None:
    parser = subcommands.add_parser(
        "invoke",
        parents=[common],
        help="send one event to a running server (a URL) or through a spec file's graph",
        description="Send one event and print the answer body. With an http(s) URL, the event "
        "goes to that server (exit 1 on a 4xx or 5xx, whose status line goes to stderr); "
        "otherwise TARGET is a spec file answered in process, as `servegraph test` does.",
    )
    parser.add_argument("target", metavar="URL-or-SPEC", help="a server URL or a spec file")
    _add_event_arguments(parser)
    parser.add_argument("--token", help="send 'Authorization: Bearer TOKEN'")
    parser.add_argument(
        "--timeout-s", type=float, default=60.0, metavar="S", help="give up after S seconds (60)"
    )
    parser.add_argument(
        "--mlrun", action="store_true", help="the spec file holds an MLRun graph dict"
    )
    parser.add_argument(
        "--namespace",
        metavar="MODULE",
        help="an importable module where bare class and handler names are looked up",
    )
    parser.set_defaults(command=_run_invoke, engine=None)


def _run_invoke(args: argparse.Namespace) -> int:
    if not args.target.startswith(("http://", "https://")):
        args.file = Path(args.target)
        return _answer_in_process(_load_graph(args), args)
    try:
        import httpx
    except ImportError as exc:
        message = "invoking a URL needs httpx: pip install 'servegraph[http]'"
        raise InputError(message) from exc
    url = args.target if args.path == "/" else args.target.rstrip("/") + args.path
    headers = dict(args.headers)
    if args.token is not None:
        headers["authorization"] = f"Bearer {args.token}"
    try:
        response = httpx.request(
            args.method, url, json=args.body, headers=headers, timeout=args.timeout_s
        )
    except httpx.HTTPError as exc:
        message = f"cannot reach {url}: {exc}"
        raise InputError(message) from exc
    if not response.is_success:
        print(f"HTTP {response.status_code} {response.reason_phrase}", file=sys.stderr)
    text = response.text
    print(text, end="" if text.endswith("\n") or not text else "\n")
    return EXIT_FAILED if response.status_code >= 400 else EXIT_OK


# -- shared event arguments -------------------------------------------------------------------


def _add_event_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--body", required=True, type=_json_argument, metavar="JSON", help="the event body"
    )
    parser.add_argument("--path", default="/", help="the event path (/)")
    parser.add_argument("--method", default="POST", help="the event method (POST)")
    parser.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header_argument,
        default=[],
        metavar="K=V",
        help="an event header; repeat for more",
    )


def _json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON ({exc}); quote strings, e.g. '\"text\"'"
        raise argparse.ArgumentTypeError(message) from exc


def _header_argument(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        message = f"{text!r} is not K=V"
        raise argparse.ArgumentTypeError(message)
    return key, value


def _format_answer(answer: Any) -> str:
    try:
        return json.dumps(answer, allow_nan=False)
    except (TypeError, ValueError):
        return repr(answer)


# -- shared -----------------------------------------------------------------------------------


def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="a .json, .yaml or .yml spec file")
    parser.add_argument(
        "--mlrun",
        action="store_true",
        help="FILE holds an MLRun graph dict (function.spec.graph.to_dict())",
    )
    parser.add_argument(
        "--namespace",
        metavar="MODULE",
        help="an importable module where bare class and handler names are looked up",
    )


def _load_graph(args: argparse.Namespace) -> Graph:
    """Return the graph in ``args.file``, read as a servegraph spec or an MLRun graph dict.

    Raises:
        InputError: the namespace module or the file cannot be read.
        GraphError: the file's content is not a valid graph.
    """
    namespace = _import_namespace(args.namespace)
    data = _read_document(args.file)
    if args.mlrun:
        from .compat import mlrun

        return mlrun.load(data, namespace=namespace)
    return Graph.from_dict(data, namespace=namespace)


def _import_namespace(name: str | None) -> ModuleType | None:
    if name is None:
        return None
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"cannot import the namespace module {name!r}: {exc}"
        raise InputError(message) from exc


def _read_document(path: Path) -> Mapping[str, Any]:
    """Return the mapping in a JSON or YAML file; the suffix (.json, .yaml, .yml) picks."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        message = f"cannot tell the format of {str(path)!r}: use a .json, .yaml or .yml file"
        raise InputError(message)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        message = f"no such file: {str(path)!r}"
        raise InputError(message) from exc
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"cannot read {str(path)!r}: {detail}"
        raise InputError(message) from exc
    data = _parse_json(path, text) if suffix == ".json" else _parse_yaml(path, text)
    if not isinstance(data, Mapping):
        message = f"a spec is a mapping at the top level, got {type(data).__name__}"
        raise GraphError(message)
    return data


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"{str(path)!r} is not valid JSON: {exc}"
        raise InputError(message) from exc


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - the yaml extra is installed in CI
        message = f"reading {str(path)!r} needs PyYAML: pip install 'servegraph[yaml]'"
        raise InputError(message) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # YAML messages span lines; keep the error on one
        message = f"{str(path)!r} is not valid YAML: {detail}"
        raise InputError(message) from exc


def _make_cwd_importable() -> None:
    """Let spec files and ``--namespace`` name modules in the current directory."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _add_monitor(subcommands: Any, common: argparse.ArgumentParser) -> None:
    from .monitoring.report import add_monitor_arguments

    parser = subcommands.add_parser(
        "monitor",
        parents=[common],
        help="check a model's recent inputs for drift",
        description=(
            "Compare a model's inputs over a window of its prediction records with its "
            "reference statistics; write JSON and HTML reports."
        ),
    )
    add_monitor_arguments(parser)
    parser.set_defaults(command=_run_monitor)


def _run_monitor(args: argparse.Namespace) -> int:
    from .monitoring.report import run_monitor

    return run_monitor(args)
