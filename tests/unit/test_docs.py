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
    failures = check(path)
    assert failures == [], "\n\n".join(failures)


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
    ("original", "replacement", "failure"),
    [
        ("# hello", "# bye", "line 8: printed 'hello', the document says 'bye'"),
        ("hello\nHELLO\n```", "hello\nHI\n```", "sample.md:17: output differs"),
        ("to stderr\n```", "to stdout\n```", "sample.md:27: `echo to stderr >&2` output differs"),
        ("<!-- skip -->\n", "", "sample.md:22: python block exited with status 3"),
        ("# file: greeting.py", "# file: ../greeting.py", "is outside the work directory"),
        ("to stderr\n```\n", "to stderr\n```\n```text\n", "line 33 is never closed"),
    ],
    ids=["checked-print", "output", "console", "skip", "file-outside", "unclosed"],
)
def test_checker_reports_a_wrong_document(
    tmp_path: Path, original: str, replacement: str, failure: str
) -> None:
    document = tmp_path / "sample.md"
    document.write_text(SAMPLE.replace(original, replacement), encoding="utf-8")
    failures = check(document)
    assert failures
    assert failure in failures[0]
