"""Pairs, executes and stores the notebooks.

``notebooks/NN_name.py`` (jupytext percent format) is the source: edit and review it as plain
Python. ``notebooks/NN_name.ipynb`` is its pair, committed *with* outputs so that a code host
shows the figures and numbers: figures stored as static PNGs (plotly JSON draws only in a
running Jupyter), a few tens of kB each.

Usage::

    python scripts/run_notebooks.py             # sync every .py into its .ipynb, execute, store
    python scripts/run_notebooks.py 01 04       # only the notebooks whose names start so
    python scripts/run_notebooks.py --sync      # cells only: outputs of unchanged cells kept

Executing needs the dev extra (jupytext, kaleido, ipywidgets) and Chromium (for kaleido).
``tests/test_notebooks.py`` checks that each pair matches, that every notebook runs, and that
the numbers it prints are the stored ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources() -> list[Path]:
    """The notebook sources, ``notebooks/NN_name.py``, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def paired(source: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format source: its cells, stable ids, no outputs."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable: a re-sync changes only the cells that changed
        cell.metadata.pop("lines_to_next_cell", None)
    return nb


def synced(source: Path) -> nbformat.NotebookNode:
    """The paired notebook, keeping the stored outputs of every cell whose source is unchanged."""
    nb = paired(source)
    target = source.with_suffix(".ipynb")
    if target.exists():
        old = {c.source: c for c in nbformat.read(target, as_version=4).cells if "outputs" in c}
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.source in old:
                cell.outputs = old[cell.source].outputs
                cell.execution_count = old[cell.source].execution_count
    return nb


def execute(
    nb: nbformat.NotebookNode, static_figures: bool, timeout: int = 600
) -> tuple[nbformat.NotebookNode, float]:
    """Runs ``nb`` top to bottom in a fresh kernel started in ``notebooks/``; returns it, seconds.

    ``static_figures`` renders figures as PNG (the stored form) instead of plotly JSON.
    """
    env = dict(os.environ)
    env.pop("CIRCUITS_STATIC_FIGURES", None)
    if static_figures:
        env["CIRCUITS_STATIC_FIGURES"] = "1"
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - start


def store(nb: nbformat.NotebookNode, target: Path) -> None:
    nb.metadata.pop("widgets", None)  # no widget state: progress bars are off in notebooks
    nbformat.validate(nb)
    nbformat.write(nb, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="prefixes of the notebooks to run (default all)")
    parser.add_argument("--sync", action="store_true", help="update cells only, do not execute")
    args = parser.parse_args(argv)
    chosen = [p for p in sources() if not args.names or p.name.startswith(tuple(args.names))]
    if not chosen:
        print(f"no notebook source matches {args.names}", file=sys.stderr)
        return 2
    for source in chosen:
        target = source.with_suffix(".ipynb")
        if args.sync:
            store(synced(source), target)
            print(f"{target.name}: synced")
            continue
        nb, seconds = execute(paired(source), static_figures=True)
        store(nb, target)
        print(f"{target.name}: executed in {seconds:.0f}s, {target.stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
