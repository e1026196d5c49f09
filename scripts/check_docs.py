"""Run the code blocks of markdown documents and check what they print.

Usage: ``python scripts/check_docs.py docs/*.md`` (exit status 1 when any check fails).

Conventions, for fenced code blocks (the word after the opening fence is the block's kind):

- ``python`` blocks run, each in a fresh interpreter. A line of the form
  ``print(expr)  # expected`` (two spaces before the ``#``) is checked: what it prints,
  without the trailing newline, must equal ``expected``.
- A ``python`` block whose first line is ``# file: name`` is not run: its body is written to
  ``name`` in the work directory, so later blocks can import it or name it on a command line.
- ``<!-- output -->`` before a ``text`` block: the block must equal the whole standard output
  of the previous ``python`` block that ran (trailing newlines ignored).
- ``<!-- continue -->`` before a ``python`` block: the previous ``python`` block that ran
  (with what it continued) is run again first, so the block can use its names.
- ``<!-- skip -->`` before any block: the block is neither run nor compared.
- ``console`` blocks: each ``$ command`` line runs in ``bash`` (stderr merged into stdout), and
  its output must equal the lines that follow it, up to the next ``$`` line. The exit status
  is not checked; write ``; echo "exit status $?"`` to show it.

A marker comment applies to the next block; blank lines may separate them, any other line
cancels it. Blocks of other kinds are not checked.

Each document gets a fresh temporary work directory: blocks run in it, and it is on
``PYTHONPATH``. Console commands find the interpreter's ``bin`` directory (a virtualenv's
``python``, ``servegraph`` and so on) first on ``PATH``. Every command is stopped after
60 seconds.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 60
"""Seconds any one python block or console command may run."""

FENCE = re.compile(r"^```(\w*)")
MARKER = re.compile(r"^<!-- (\w+) -->")
CHECKED_PRINT = re.compile(r"^(\s*)print\((.*)\)  # (.*)$")
FILE_HEADER = "# file: "

CHECK_FUNCTION = "__doc_check_print"
PRELUDE = f"""
import contextlib as __doc_contextlib, io as __doc_io
def {CHECK_FUNCTION}(print_it, expected, line):
    buffer = __doc_io.StringIO()
    with __doc_contextlib.redirect_stdout(buffer):
        print_it()
    printed = buffer.getvalue().rstrip("\\n")
    print(printed)
    if printed != expected:
        raise SystemExit(f"line {{line}}: printed {{printed!r}}, the document says {{expected!r}}")
"""
"""Defines the function that checked ``print`` lines are rewritten to call."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    kind: str
    """The word after the opening fence: ``python``, ``console``, ``text``, or ``""``."""
    body: str
    """The lines between the fences."""
    marker: str | None
    """The word of the ``<!-- word -->`` comment that precedes the block, if any."""
    line: int
    """The 1-based line number of the opening fence."""


@dataclass(frozen=True)
class Run:
    """What a command printed, and how it ended."""

    stdout: str
    stderr: str
    returncode: int | None
    """None when the command was stopped after TIMEOUT seconds."""


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, in order.

    Raises ValueError for a block that is never closed.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence:
            start = index
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                index += 1
            if index == len(lines):
                msg = f"the code block at line {start + 1} is never closed"
                raise ValueError(msg)
            body = "\n".join(lines[start + 1 : index])
            blocks.append(Block(fence.group(1), body, marker, start + 1))
            marker = None
        elif comment := MARKER.match(line):
            marker = comment.group(1)
        elif line.strip():
            marker = None
        index += 1
    return blocks


def helper_file_name(block: Block) -> str | None:
    """The file name a ``# file: name`` python block declares, or None for a block to run."""
    first_line = block.body.partition("\n")[0]
    if first_line.startswith(FILE_HEADER):
        return first_line.removeprefix(FILE_HEADER).strip()
    return None


def instrument(block: Block) -> str:
    """The block's code, with each ``print(expr)  # expected`` line rewritten to check itself."""
    lines = []
    for offset, line in enumerate(block.body.splitlines(), start=1):
        checked = CHECKED_PRINT.match(line)
        if checked:
            indent, expression, expected = checked.groups()
            line = (
                f"{indent}{CHECK_FUNCTION}(lambda: print({expression}), "
                f"{expected!r}, {block.line + offset})"
            )
        lines.append(line)
    return "\n".join(lines)


def run(command: Sequence[str], work: Path, env: dict[str, str]) -> Run:
    """Run a command in the work directory, stopping it after TIMEOUT seconds."""
    try:
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as timeout:
        return Run(_as_text(timeout.stdout), _as_text(timeout.stderr), None)
    return Run(done.stdout, done.stderr, done.returncode)


def _as_text(output: str | bytes | None) -> str:
    """Output captured before a timeout: the exception may hold undecoded bytes."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def run_python(code: str, python: str, work: Path, env: dict[str, str]) -> Run:
    """Run a python block's (instrumented) code in a fresh interpreter."""
    return run([python, "-c", PRELUDE + code], work, env)


def python_failures(where: str, result: Run) -> list[str]:
    """Describe a python block's run, unless it succeeded."""
    if result.returncode == 0:
        return []
    ending = (
        f"was stopped after {TIMEOUT} s"
        if result.returncode is None
        else f"exited with status {result.returncode}"
    )
    return [f"{where}: python block {ending}\n{result.stdout}{result.stderr}".rstrip("\n")]


def output_failures(where: str, expected: str, printed: str | None) -> list[str]:
    """Compare an ``<!-- output -->`` block with what the previous python block printed."""
    if printed is None:
        return [f"{where}: output block, but no python block ran before it"]
    if printed.rstrip("\n") == expected.rstrip("\n"):
        return []
    return [f"{where}: output differs\n{diff(expected.splitlines(), printed.splitlines())}"]


def console_commands(body: str) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the output lines that follow it."""
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line.removeprefix("$ "), []))
        elif commands:
            commands[-1][1].append(line)
    return commands


def console_failures(where: str, body: str, work: Path, env: dict[str, str]) -> list[str]:
    """Run a console block's commands in order; describe each whose output differs."""
    failures = []
    for command, expected in console_commands(body):
        result = run(["bash", "-c", f"{{ {command}; }} 2>&1"], work, env)
        printed = result.stdout.rstrip("\n").splitlines()
        if result.returncode is None:
            failures.append(f"{where}: `{command}` was stopped after {TIMEOUT} s")
        elif printed != expected:
            failures.append(f"{where}: `{command}` output differs\n{diff(expected, printed)}")
    return failures


def diff(expected: list[str], printed: list[str]) -> str:
    """A unified diff from the document's lines to the printed ones."""
    return "\n".join(difflib.unified_diff(expected, printed, "document", "printed", lineterm=""))


def write_helper_file(work: Path, name: str, body: str) -> bool:
    """Write a ``# file:`` block into the work directory; False for a name outside it."""
    target = (work / name).resolve()
    if not target.is_relative_to(work.resolve()):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body + "\n", encoding="utf-8")
    return True


def block_environment(work: Path, python: str) -> dict[str, str]:
    """The environment blocks run in: the work directory importable, python's bin dir on PATH."""
    path = [str(Path(python).parent), *filter(None, os.environ.get("PATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": str(work), "PATH": os.pathsep.join(path)}


class Session:
    """Checks one document's blocks, in order, in one work directory."""

    def __init__(self, path: Path, work: Path, python: str) -> None:
        self.path = path
        self.work = work
        self.python = python
        self.env = block_environment(work, python)
        self.previous_code = ""
        """The code of the last python block that ran, for a ``continue`` block."""
        self.previous_output: str | None = None
        """What the last python block that ran printed, for an ``output`` block."""

    def check_block(self, block: Block) -> list[str]:
        """Run or compare one block; describe what fails."""
        where = f"{self.path}:{block.line}"
        if block.marker == "skip":
            return []
        if block.kind == "python":
            return self.check_python(block, where)
        if block.kind == "text" and block.marker == "output":
            return output_failures(where, block.body, self.previous_output)
        if block.kind == "console":
            return console_failures(where, block.body, self.work, self.env)
        return []

    def check_python(self, block: Block, where: str) -> list[str]:
        """Write a ``# file:`` block, or run the block and remember its code and output."""
        name = helper_file_name(block)
        if name is not None:
            if write_helper_file(self.work, name, block.body):
                return []
            return [f"{where}: file {name!r} is outside the work directory"]
        code = instrument(block)
        if block.marker == "continue":
            code = f"{self.previous_code}\n{code}"
        result = run_python(code, self.python, self.work, self.env)
        self.previous_code, self.previous_output = code, result.stdout
        return python_failures(where, result)


def check(path: Path, python: str = sys.executable) -> list[str]:
    """Run a document's code blocks; describe each check that fails (none: an empty list)."""
    try:
        blocks = parse_blocks(path.read_text(encoding="utf-8"))
    except ValueError as error:
        return [f"{path}: {error}"]
    # An absolute path, since blocks run in the work directory; not resolved, since a
    # virtualenv's python is a symlink to the base interpreter and its bin dir is wanted.
    python = str(Path(shutil.which(python) or python).absolute())
    with tempfile.TemporaryDirectory(prefix="check_docs_") as work:
        session = Session(path, Path(work), python)
        return [failure for block in blocks for failure in session.check_block(block)]


def main(argv: Sequence[str] | None = None) -> int:
    """Check each document named on the command line; 1 when any check fails."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("documents", nargs="+", type=Path, help="markdown files to check")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter to run blocks with (default: %(default)s)",
    )
    arguments = parser.parse_args(argv)
    failures = []
    for document in arguments.documents:
        failures.extend(check(document, arguments.python))
    for failure in failures:
        print(f"FAIL {failure}\n")  # noqa: T201
    print(f"{len(arguments.documents)} documents checked, {len(failures)} failures")  # noqa: T201
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
