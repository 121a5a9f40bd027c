"""The layer contract (pyproject.toml, ``[tool.importlinter]``; docs/architecture.md) holds on
the package, fails when an upward import is added, and no module import circle exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``circuits`` package found in ``root`` (not the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "circuits", tmp_path / "circuits", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contract_holds_on_the_package() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, upward",
    [
        ("config.py", "from circuits.training import TrainConfig"),  # config below training
        ("model/components.py", "from circuits.analysis import scores"),  # model below analysis
        ("checkpoint.py", "import circuits.model"),  # the circle issue 21 removed
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, upward: str) -> None:
    root = copy_package(tmp_path)
    assert lint(root).returncode == 0  # the copy itself is clean
    path = root / "circuits" / module
    path.write_text(path.read_text() + f"\n\ndef _upward() -> None:\n    {upward}  # noqa\n")
    result = lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "is not allowed to import" in result.stdout


def test_no_module_import_circle() -> None:
    """No cycle among the package's modules (beyond the contract's declared exceptions)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    ignored = {
        tuple(part.strip() for part in edge.split("->"))
        for contract in config["contracts"]
        for edge in contract.get("ignore_imports", [])
    }
    graph = grimp.build_graph("circuits")
    for importer, imported in ignored:
        graph.remove_import(importer=importer, imported=imported)
    cycles = [
        (a, b)
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if a != b and graph.chain_exists(importer=b, imported=a)
    ]
    assert not cycles, f"import circle(s): {cycles[:5]}"
