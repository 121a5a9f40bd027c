"""docs/tl3.md's TransformerLens 3 script runs verbatim on the shipped stand-in, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tl3.md"


def script() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- tl3-script -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/tl3.md lost its marked script"
    return match.group(1)


def test_the_script_changes_one_import_line_only() -> None:
    code = script()
    imports = [line for line in code.splitlines() if re.match(r"(import|from) ", line)]
    assert imports[0] == "import torch" and len(imports) == 2
    assert imports[1].startswith("import circuits as transformer_lens  # the one changed line")
    assert "circuits" not in code.replace("import circuits as transformer_lens", "")


@pytest.mark.slow  # a fresh interpreter, the stand-in, patching and generation: ~7 s quiet
def test_the_tl3_script_runs_offline_on_the_standin(tmp_path: Path) -> None:
    path = tmp_path / "tl3_script.py"
    path.write_text(script())
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(ROOT / "data" / "standin_hub"))
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "2 4 32"  # the stand-in's layers, heads, width
    assert any(line.startswith("The quick brown") for line in lines)
    assert lines[-1].startswith("toy loss")
