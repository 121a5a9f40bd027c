"""Every notebook runs top to bottom in a fresh kernel, fast, and is committed without outputs."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_stripped() -> None:
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
                # Notebooks use the library; they do not redefine it.
                assert "class HookedTransformer" not in cell.source, path.name


def test_notebooks_are_what_the_build_script_writes() -> None:
    """The .ipynb files are generated: an edit made to one by hand would be lost on rebuild."""
    import importlib.util

    script = NOTEBOOKS[0].parent.parent / "scripts" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", script)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        built = build.build_notebook(build.NOTEBOOKS[path.stem])
        committed = nbformat.read(path, as_version=4)
        assert [(c.id, c.cell_type, c.source) for c in committed.cells] == [
            (c.id, c.cell_type, c.source) for c in built.cells
        ], f"{path.name} differs from scripts/build_notebooks.py: run it"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_fresh_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    # kernel "python3" with argv "python" resolves to this interpreter (jupyter_client swaps
    # it for sys.executable), so the notebook sees the same circuits as the tests.
    client = NotebookClient(
        nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    # Every figure cell rendered a plotly figure.
    figures = sum(
        "application/vnd.plotly.v1+json" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert figures >= 2, f"{path.name}: only {figures} plotly figures rendered"
    assert seconds < 180, f"{path.name} took {seconds:.0f}s"
