"""``python -m bench.run ARGS``: the same as ``circuits bench ARGS``.

The benchmark itself is part of the package (:mod:`circuits.benchmarks`), so ``circuits bench``
works from an installed copy too; this folder keeps the results of full runs (``results.json``,
``RESULTS.md``), which the README quotes.
"""

from __future__ import annotations

from circuits.benchmarks.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
