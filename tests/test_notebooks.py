"""Notebooks: plain-text sources paired with stored, executed notebooks that still run and agree.

``notebooks/NN_name.py`` (jupytext percent format) is the source; ``NN_name.ipynb`` holds the
same cells with stored outputs (``scripts/run_notebooks.py`` writes them). Checked here: the
pairs match, the stored outputs exist and stay small, and (``-m notebook``) every notebook runs
top to bottom in a fresh kernel, warning-free, printing the numbers that are stored.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "run_notebooks", ROOT / "scripts" / "run_notebooks.py"
)
assert spec is not None and spec.loader is not None
run_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebooks)

SOURCES = run_notebooks.sources()
IDS = [p.stem for p in SOURCES]
MAX_NOTEBOOK_BYTES = 1_000_000
MAX_TOTAL_BYTES = 3_000_000
SECONDS = re.compile(r"\d+(?:\.\d+)?\s?s\b")  # durations differ run to run
NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# A notebook runs in a few minutes at most; the formation atlas trains 384 runs (256 seeds and a
# learning-rate sweep), its point, and gets longer.
MAX_SECONDS = {"09_formation_atlas": 720}
DEFAULT_MAX_SECONDS = 240


def stored(source: Path) -> nbformat.NotebookNode:
    return nbformat.read(source.with_suffix(".ipynb"), as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def printed(cell: nbformat.NotebookNode) -> str:
    """What a cell printed to stdout, with durations blanked."""
    text = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    return SECONDS.sub("<duration>", text)


def displays(cell: nbformat.NotebookNode) -> int:
    return sum(o.output_type in ("display_data", "execute_result") for o in cell.outputs)


def test_every_source_is_paired_with_an_ipynb_holding_the_same_cells() -> None:
    assert len(SOURCES) >= 4
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in notebooks] == IDS, "an .ipynb without a .py source, or the reverse"
    for source in SOURCES:
        want = run_notebooks.paired(source)
        have = stored(source)
        nbformat.validate(have)
        assert have.metadata["jupytext"]["formats"] == "ipynb,py:percent", source.name
        assert [(c.cell_type, c.source) for c in have.cells] == [
            (c.cell_type, c.source) for c in want.cells
        ], f"{source.stem}.ipynb differs from {source.name}: run scripts/run_notebooks.py"
        for cell in code_cells(have):
            # Notebooks use the library; they do not redefine it.
            assert "class HookedTransformer" not in cell.source, source.name


def test_stored_notebooks_have_their_outputs_and_stay_small() -> None:
    total = 0
    for source in SOURCES:
        path, nb = source.with_suffix(".ipynb"), stored(source)
        size = path.stat().st_size
        total += size
        assert size < MAX_NOTEBOOK_BYTES, f"{path.name} is {size} bytes"
        cells = code_cells(nb)
        assert all(c.execution_count is not None for c in cells), f"{path.name} is not executed"
        outputs = [o for c in cells for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], (
            f"{path.name} stored a warning or error on stderr"
        )
        data = [o.get("data", {}) for o in outputs]
        # Figures are stored as static PNGs (a code host shows them), not plotly JSON.
        assert sum("image/png" in d for d in data) >= 2, path.name
        assert not any("application/vnd.plotly.v1+json" in d for d in data), path.name
        assert any(printed(c) for c in cells), f"{path.name} prints no numbers"
    assert total < MAX_TOTAL_BYTES, f"notebooks total {total} bytes"


def numbers(text: str) -> list[float]:
    return [float(n.replace("−", "-")) for n in NUMBER.findall(text)]


def test_numbers_compare_by_value_within_printing_precision() -> None:
    assert numbers("accuracy 0.912, loss −1.5e-3 (42 steps)") == [0.912, -0.0015, 42.0]
    assert printed(nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="200 steps in 12.3s\n")
    ])) == "200 steps in <duration>\n"  # fmt: skip


def same_numbers(ran: str, kept: str) -> bool:
    """Same text around the numbers, and each number equal to within 0.011 or 2%."""
    if NUMBER.sub("#", ran) != NUMBER.sub("#", kept):
        return False
    return all(
        math.isclose(a, b, rel_tol=0.02, abs_tol=0.011)
        for a, b in zip(numbers(ran), numbers(kept), strict=True)
    )


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_runs_warning_free_and_prints_the_stored_numbers(source: Path) -> None:
    # Interactive figures here (no browser needed); the stored ones are PNGs of the same.
    nb, seconds = run_notebooks.execute(run_notebooks.paired(source), static_figures=False)
    kept = code_cells(stored(source))
    ran = code_cells(nb)
    assert len(ran) == len(kept)
    for i, (cell, old) in enumerate(zip(ran, kept, strict=True)):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"cell {i}: {errors[0].ename}: {errors[0].evalue}"
        stderr = "".join(
            o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"
        )
        assert stderr == "", f"cell {i} wrote to stderr: {stderr[:300]}"
        assert displays(cell) == displays(old), f"cell {i} shows a different number of figures"
        assert same_numbers(printed(cell), printed(old)), (
            f"cell {i} printed\n{printed(cell)}\nbut the stored notebook has\n{printed(old)}"
        )
    assert sum(displays(c) for c in ran) >= 2
    limit = MAX_SECONDS.get(source.stem, DEFAULT_MAX_SECONDS)
    assert seconds < limit, f"{source.stem} took {seconds:.0f}s (limit {limit}s)"
