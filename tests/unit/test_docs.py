"""The code blocks in docs/*.md run and print what the documents say (scripts/check_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.check_docs import check

DOCS = Path(__file__).parents[2] / "docs"
RUNNABLE_FENCE = re.compile(r"^```(?:python|console)\b", re.MULTILINE)

DOCUMENTS = sorted(
    path for path in DOCS.glob("*.md") if RUNNABLE_FENCE.search(path.read_text(encoding="utf-8"))
)


def test_documents_with_code_are_found() -> None:
    assert DOCUMENTS


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_document_code_blocks(path: Path) -> None:
    assert check(path) == []


SAMPLE = """\
```python
# file: greeting.py
WORD = "hello"
```

```python
from greeting import WORD
print(WORD)  # hello
```

<!-- continue -->
```python
print(WORD.upper())  # HELLO
```

<!-- output -->
```text
hello
HELLO
```

<!-- skip -->
```python
raise SystemExit(3)
```

```console
$ python -c 'import greeting; print(greeting.WORD)'
hello
$ echo to stderr >&2
to stderr
```
"""


def test_checker_passes_a_correct_document(tmp_path: Path) -> None:
    document = tmp_path / "sample.md"
    document.write_text(SAMPLE, encoding="utf-8")
    assert check(document) == []


@pytest.mark.parametrize(
    ("wrong", "right", "failure"),
    [
        ("print(WORD)  # hello", "print(WORD)  # bye", "python block exited with status 1"),
        ("hello\nHELLO\n```", "hello\nHI\n```", "output differs"),
        ("$ echo to stderr >&2\nto stderr", "$ echo to stderr >&2\nto stdout", "output differs"),
        ("```python\nraise", "```python\nfrom x import y  # raise", "python block exited"),
    ],
    ids=["checked-print", "output-block", "console", "unclosed-or-bad-code"],
)
def test_checker_reports_a_wrong_document(
    tmp_path: Path, wrong: str, right: str, failure: str
) -> None:
    document = tmp_path / "sample.md"
    document.write_text(SAMPLE.replace(wrong, right), encoding="utf-8")
    failures = check(document)
    assert len(failures) == 1
    assert failure in failures[0]
