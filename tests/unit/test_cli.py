"""The ``servegraph`` command line: validate, plot and test, on servegraph and MLRun specs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servegraph import __version__
from servegraph.cli import main

STEPS = "tests.unit.cli_steps"


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() puts the working directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", [*sys.path])


def write_json(directory: Path, data: Any, name: str = "graph.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def chain_spec(*handlers: str) -> dict[str, Any]:
    """A flow running ``handlers`` one after the other; the last one responds."""
    steps: dict[str, Any] = {}
    previous: str | None = None
    for index, handler in enumerate(handlers):
        name = f"s{index + 1}"
        step: dict[str, Any] = {"handler": handler}
        if previous is not None:
            step["after"] = [previous]
        steps[name] = step
        previous = name
    steps[str(previous)]["responder"] = True
    return {"version": 1, "kind": "flow", "steps": steps}


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# -- validate ---------------------------------------------------------------------------------


def test_validate_ok_prints_the_file_and_step_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc", f"{STEPS}:inc"))

    assert main(["validate", str(path)]) == 0

    assert capsys.readouterr().out == f"ok: {path} (2 steps)\n"


def test_validate_reads_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"version: 1\nsteps:\n  only:\n    handler: {STEPS}:inc\n    responder: true\n",
        encoding="utf-8",
    )

    assert main(["validate", str(path)]) == 0

    assert capsys.readouterr().out == f"ok: {path} (1 step)\n"


def test_validate_invalid_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "steps": {
            "first": {"handler": f"{STEPS}:no_such_function"},
            "second": {"handler": f"{STEPS}:inc", "after": ["ghost"]},
        }
    }
    path = write_json(tmp_path, spec)

    assert main(["validate", str(path)]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert any(line.startswith("step 'first': ") and "no_such_function" in line for line in lines)
    assert "step 'second': 'after' names an unknown step 'ghost'" in lines


def test_validate_reports_unknown_keys_as_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {"steps": {"a": {"handler": f"{STEPS}:inc", "colour": "red"}}, "extra": 1}
    path = write_json(tmp_path, spec)

    assert main(["validate", str(path)]) == 1

    lines = stderr_lines(capsys)
    assert len(lines) == 2
    assert any(line.startswith("graph: unknown key(s) extra") for line in lines)
    assert any(line.startswith("step 'a': unknown key(s) colour") for line in lines)


def test_validate_missing_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"

    assert main(["validate", str(missing)]) == 2

    assert stderr_lines(capsys) == [f"error: no such file: {str(missing)!r}"]


def test_validate_bad_json_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "graph.json"
    path.write_text('{"steps": {', encoding="utf-8")

    assert main(["validate", str(path)]) == 2

    (line,) = stderr_lines(capsys)
    assert line.startswith(f"error: {str(path)!r} is not valid JSON: ")


def test_validate_bad_yaml_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "graph.yml"
    path.write_text("steps: [unclosed\n  - x: : y\n", encoding="utf-8")

    assert main(["validate", str(path)]) == 2

    (line,) = stderr_lines(capsys)
    assert line.startswith(f"error: {str(path)!r} is not valid YAML: ")


def test_validate_unknown_suffix_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text("", encoding="utf-8")

    assert main(["validate", str(path)]) == 2

    (line,) = stderr_lines(capsys)
    assert "use a .json, .yaml or .yml file" in line


def test_validate_non_mapping_document_is_a_graph_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, [1, 2])

    assert main(["validate", str(path)]) == 1

    assert stderr_lines(capsys) == ["graph: a spec is a mapping at the top level, got list"]


def test_namespace_resolves_bare_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec("inc"))

    assert main(["validate", str(path), "--namespace", STEPS]) == 0
    assert main(["test", str(path), "--namespace", STEPS, "--body", "1"]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == "2"


def test_unknown_namespace_module_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec("inc"))

    assert main(["validate", str(path), "--namespace", "no_such_module_here"]) == 2

    (line,) = stderr_lines(capsys)
    assert line.startswith("error: cannot import the namespace module 'no_such_module_here'")


def test_modules_in_the_working_directory_are_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = "servegraph_cli_cwd_module"
    (tmp_path / f"{module}.py").write_text("def triple(x):\n    return 3 * x\n", encoding="utf-8")
    path = write_json(tmp_path, chain_spec(f"{module}:triple"))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["test", path.name, "--body", "5"]) == 0
    finally:
        sys.modules.pop(module, None)

    assert capsys.readouterr().out == "15\n"


# -- plot -------------------------------------------------------------------------------------


def test_plot_prints_mermaid_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc", f"{STEPS}:inc"))

    assert main(["plot", str(path)]) == 0

    out = capsys.readouterr().out
    assert out.startswith(("flowchart", "graph"))
    assert "s1" in out
    assert "s2" in out


def test_plot_prints_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["plot", str(path), "--format", "dot"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("digraph servegraph {")
    assert out.rstrip().endswith("}")


def test_plot_writes_to_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))
    output = tmp_path / "graph.dot"

    assert main(["plot", str(path), "--format", "dot", "--output", str(output)]) == 0

    assert capsys.readouterr().out == ""
    assert output.read_text(encoding="utf-8").startswith("digraph servegraph {")


def test_plot_writes_mermaid_to_output(tmp_path: Path) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))
    output = tmp_path / "graph.mmd"

    assert main(["plot", str(path), "--output", str(output)]) == 0

    assert "s1" in output.read_text(encoding="utf-8")


def test_plot_rejects_an_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["plot", str(path), "--format", "png"]) == 2

    assert "invalid choice: 'png'" in capsys.readouterr().err


# -- test -------------------------------------------------------------------------------------


def test_test_prints_the_answer_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = chain_spec(f"{STEPS}:describe")
    spec["steps"]["s1"]["full_event"] = True
    path = write_json(tmp_path, spec)

    args = ["test", str(path), "--body", '{"x": 1}', "--path", "/predict"]
    assert main([*args, "--method", "PUT", "--header", "a=1", "--header", "b=x=y"]) == 0

    answer = json.loads(capsys.readouterr().out)
    assert answer == {"path": "/predict", "method": "PUT", "headers": {"a": "1", "b": "x=y"}}


def test_test_runs_a_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc", f"{STEPS}:inc"))

    assert main(["test", str(path), "--body", "40"]) == 0

    assert capsys.readouterr().out == "42\n"


def test_test_with_the_async_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:async_inc", f"{STEPS}:inc"))

    assert main(["test", str(path), "--body", "1", "--engine", "async"]) == 0

    assert capsys.readouterr().out == "3\n"


def test_test_with_the_sync_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["test", str(path), "--body", "1", "--engine", "sync"]) == 0

    assert capsys.readouterr().out == "2\n"


def test_test_prints_a_repr_for_answers_that_are_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:as_set"))

    assert main(["test", str(path), "--body", "[7]"]) == 0

    assert capsys.readouterr().out == "{7}\n"


def test_test_failing_step_names_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc", f"{STEPS}:fail"))

    assert main(["test", str(path), "--body", "1"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ")
    assert "'s2'" in line
    assert "cannot handle 2" in line


def test_test_on_an_invalid_graph_lists_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:no_such_function"))

    assert main(["test", str(path), "--body", "1"]) == 1

    (line,) = stderr_lines(capsys)
    assert line.startswith("step 's1': ")


def test_test_rejects_a_body_that_is_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["test", str(path), "--body", "{oops"]) == 2

    assert "argument --body: not valid JSON" in capsys.readouterr().err


def test_test_rejects_a_header_without_a_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["test", str(path), "--body", "1", "--header", "novalue"]) == 2

    assert "'novalue' is not K=V" in capsys.readouterr().err


def test_test_requires_a_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["test", str(path)]) == 2

    assert "--body" in capsys.readouterr().err


# -- MLRun graph dicts ------------------------------------------------------------------------

MLRUN_GRAPH = {"steps": {"s1": {"kind": "task", "handler": f"{STEPS}.inc"}}, "engine": "sync"}


def test_mlrun_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, MLRUN_GRAPH)

    assert main(["validate", str(path), "--mlrun"]) == 0

    assert capsys.readouterr().out == f"ok: {path} (1 step)\n"


def test_mlrun_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, MLRUN_GRAPH)

    assert main(["test", str(path), "--mlrun", "--body", "1"]) == 0

    assert capsys.readouterr().out == "2\n"


def test_mlrun_bare_names_use_the_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = {"steps": {"s1": {"kind": "task", "handler": "inc"}}, "engine": "sync"}
    path = write_json(tmp_path, graph)

    assert main(["test", str(path), "--mlrun", "--namespace", STEPS, "--body", "1"]) == 0

    assert capsys.readouterr().out == "2\n"


def test_mlrun_invalid_graph_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = {
        "steps": {
            "s1": {"kind": "task", "handler": f"{STEPS}.inc", "colour": "red"},
            "s2": {"kind": "queue", "path": "kafka://broker:9092/t"},
        }
    }
    path = write_json(tmp_path, graph)

    assert main(["validate", str(path), "--mlrun"]) == 1

    lines = stderr_lines(capsys)
    assert len(lines) == 2
    assert any(line.startswith("step 's1': unknown MLRun key(s) colour") for line in lines)
    assert any(line.startswith("step 's2': ") for line in lines)


def test_mlrun_failing_step_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = {"steps": {"s1": {"kind": "task", "handler": f"{STEPS}.fail"}}, "engine": "sync"}
    path = write_json(tmp_path, graph)

    assert main(["test", str(path), "--mlrun", "--body", "1"]) == 1

    (line,) = stderr_lines(capsys)
    assert line.startswith("error: ")
    assert "cannot handle 1" in line


def test_mlrun_refuses_an_engine_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path, MLRUN_GRAPH)

    assert main(["test", str(path), "--mlrun", "--engine", "async", "--body", "1"]) == 2

    (line,) = stderr_lines(capsys)
    assert line.startswith("error: --engine does not apply with --mlrun")


# -- program options --------------------------------------------------------------------------


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0

    assert capsys.readouterr().out == f"servegraph {__version__}\n"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2

    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_configures_debug_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: calls.append(kwargs))
    path = str(write_json(tmp_path, chain_spec(f"{STEPS}:inc")))
    argv = ["-v", "validate", path] if where == "before" else ["validate", path, "--verbose"]

    assert main(argv) == 0

    assert calls == [{"level": logging.DEBUG}]


def test_without_verbose_logging_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: calls.append(kwargs))
    path = write_json(tmp_path, chain_spec(f"{STEPS}:inc"))

    assert main(["validate", str(path)]) == 0

    assert calls == []


def test_python_dash_m_servegraph_prints_the_version() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "servegraph", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )

    assert completed.returncode == 0
    assert completed.stdout == f"servegraph {__version__}\n"
