"""The README's example runs and prints what its comment says."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def test_readme_example_prints_what_it_claims(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None
    code = block.group(1)
    claimed = re.search(r"print\(.*\)\s+# (.*)", code)
    assert claimed is not None
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    runpy.run_path(str(script))
    assert capsys.readouterr().out.strip() == claimed.group(1).strip()
