"""servegraph.server.run: targets, the worker factory, and what serve() hands uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from servegraph import Graph
from servegraph.errors import GraphError, MissingDependencyError
from servegraph.graph.spec import GraphSpec
from servegraph.server import run
from servegraph.server.app import ServingApp
from servegraph.server.protocol import HeaderTimeoutProtocol
from servegraph.settings import Limits, ServerSettings


def double(body: int) -> int:
    return body * 2


def build_graph() -> Graph:
    graph = Graph()
    graph.to(double).respond()
    return graph


def needs_an_argument(size: int) -> Graph:
    return build_graph()


def build_nothing() -> int:
    return 3


GRAPH = build_graph()
SPEC = GRAPH.spec
NOT_A_GRAPH = 42
HERE = __name__


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SERVEGRAPH_* variable from the outside leaks into a test."""
    for name in [*ServerSettings().to_env(), run.TARGET_VARIABLE]:
        monkeypatch.setenv(name, "")  # recorded, so that teardown also undoes what serve() sets
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_load_target_reads_a_spec_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"graph{suffix}"
    GRAPH.save(path)
    assert run.load_target(str(path)) == SPEC


@pytest.mark.parametrize("attribute", ["GRAPH", "SPEC", "build_graph"])
def test_load_target_imports_a_graph_a_spec_or_a_factory(attribute: str) -> None:
    assert run.load_target(f"{HERE}:{attribute}") == SPEC


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("no_such_module_here:graph", "No module named 'no_such_module_here'"),
        (f"{HERE}:missing", "has no attribute 'missing'"),
        (f"{HERE}:NOT_A_GRAPH", "it is a int, not a Graph"),
        (f"{HERE}:build_nothing", "it returned int, not a Graph"),
        (f"{HERE}:needs_an_argument", "calling it with no arguments failed"),
        (f"{HERE}:Graph", "it is a type, not a Graph"),
        ("graph", "name a spec file (.json, .yaml or .yml) or a graph as 'module:attribute'"),
        ("/nowhere/graph.json", "'/nowhere/graph.json': no such file"),
    ],
)
def test_load_target_says_why_a_reference_is_not_a_graph(reference: str, expected: str) -> None:
    with pytest.raises(GraphError) as caught:
        run.load_target(reference)
    assert expected in str(caught.value)


def test_load_target_reports_an_unreadable_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text("{not json")
    with pytest.raises(GraphError, match="cannot read"):
        run.load_target(str(path))


def test_settings_round_trip_through_the_environment() -> None:
    settings = ServerSettings(
        host="0.0.0.0",
        port=9001,
        workers=3,
        limits=Limits(max_body_bytes=1000, timeout_s=None, max_in_flight=7, threads=2),
        token="s3cret",
        cors_origins=("https://a.example", "https://b.example"),
        graceful_s=2.5,
        access_log=True,
    )
    assert ServerSettings.from_env(settings.to_env()) == settings
    assert ServerSettings.from_env(ServerSettings().to_env()) == ServerSettings()


def test_create_app_reads_the_target_and_settings_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = ServerSettings(port=9002, token="t", limits=Limits(threads=3))
    for name, value in run.environment_of(f"{HERE}:build_graph", settings).items():
        clean_env.setenv(name, value)
    app = run.create_app()
    assert isinstance(app, ServingApp)
    assert app.spec == SPEC
    assert app.settings == settings


def test_create_app_needs_a_target(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(GraphError, match="SERVEGRAPH_TARGET is not set"):
        run.create_app()


def test_serve_checks_the_target_then_hands_uvicorn_the_factory(
    clean_env: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    clean_env.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    settings = ServerSettings(port=9003, workers=2, graceful_s=4.0, access_log=True)
    run.serve(f"{HERE}:GRAPH", settings, reload=True)
    [(args, kwargs)] = calls
    assert args == (run.FACTORY,)
    assert kwargs["factory"] is True
    assert (kwargs["host"], kwargs["port"], kwargs["workers"]) == ("127.0.0.1", 9003, 2)
    assert kwargs["timeout_graceful_shutdown"] == 4.0
    assert kwargs["access_log"] is True
    assert kwargs["reload"] is True
    assert (kwargs["loop"], kwargs["lifespan"]) == ("auto", "on")
    assert kwargs["http"] is HeaderTimeoutProtocol
    app = run.create_app()  # what each worker builds from what serve() left in the environment
    assert (app.spec, app.settings) == (SPEC, settings)
    assert HeaderTimeoutProtocol.header_timeout_s == settings.header_timeout_s


def test_a_single_worker_gets_the_app_itself_built_once(clean_env: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    clean_env.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    run.serve(f"{HERE}:GRAPH", ServerSettings(header_timeout_s=3.0))
    [(args, kwargs)] = calls
    assert isinstance(args[0], ServingApp)
    assert args[0].spec == SPEC
    assert kwargs["factory"] is False
    assert HeaderTimeoutProtocol.header_timeout_s == 3.0


def test_serve_refuses_an_invalid_graph_before_starting(clean_env: pytest.MonkeyPatch) -> None:
    import uvicorn

    clean_env.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("uvicorn started"))
    with pytest.raises(GraphError, match="no steps"):
        run.serve(f"{HERE}:empty_graph", ServerSettings())


def empty_graph() -> Graph:
    return Graph()


def test_serve_without_uvicorn_names_the_extra(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MissingDependencyError) as caught:
        run.serve(f"{HERE}:GRAPH", ServerSettings())
    assert caught.value.extra == "server"


def test_a_graph_spec_is_served_as_is() -> None:
    assert isinstance(run.load_target(f"{HERE}:SPEC"), GraphSpec)


def test_serve_command_puts_flags_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    from servegraph.cli import main

    calls: list[tuple[str, ServerSettings, bool]] = []

    def fake_serve(target: str, settings: ServerSettings, *, reload: bool = False) -> None:
        calls.append((target, settings, reload))

    clean_env.setattr(run, "serve", fake_serve)
    clean_env.setenv("SERVEGRAPH_PORT", "9004")
    clean_env.setenv("SERVEGRAPH_WORKERS", "3")
    flags = ["--port", "9005", "--cors-origin", "https://a", "--cors-origin", "https://b"]
    assert main(["serve", f"{HERE}:GRAPH", *flags, "--timeout-s", "2", "--access-log"]) == 0
    [(target, settings, reload)] = calls
    assert (target, reload) == (f"{HERE}:GRAPH", False)
    assert (settings.port, settings.workers) == (9005, 3)
    assert settings.cors_origins == ("https://a", "https://b")
    assert (settings.limits.timeout_s, settings.access_log) == (2.0, True)


def test_serve_command_refuses_a_bad_setting(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from servegraph.cli import main

    clean_env.setenv("SERVEGRAPH_PORT", "eighty")
    assert main(["serve", f"{HERE}:GRAPH"]) == 2
    assert "port='eighty' is not a valid int" in capsys.readouterr().err
