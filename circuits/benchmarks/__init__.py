"""Side-by-side benchmarks: circuits vs TransformerLens 4's own model (``boot_native``).

Every case runs ours and the peer interleaved in one process (ours, peer, peer, ours, ...), so a
change in machine load hits both alike, and reports the median and min-max of each and the ratio
ours/peer. Both sides get the same config, the same initial weights (ours, converted), the same
data, the same loss code and the same optimizer settings.

Cases:
    train: training steps/s at the reference config (2L attn-only, d_model 64, 4x16 heads), on
        one thread and on all cores.
    cache: ``run_with_cache`` over all hooks and over one hook: time and peak memory.
    composition: Q, K and V composition scores at GPT-2-small shape (ours with its baseline).
    induction: wall time from model construction to formed induction heads, over seeds.

Run: ``circuits bench`` (or ``make bench``, or ``python -m bench.run`` in a checkout); ``--quick``
is a seconds-long smoke run that writes to a temporary folder, never over the results kept in
the checkout's ``bench/``.

Modules: :mod:`~circuits.benchmarks.measure` (interleaved timing, memory, the machine),
:mod:`~circuits.benchmarks.cases` (the cases) and :mod:`~circuits.benchmarks.runner` (running
them and writing ``results.json`` / ``RESULTS.md``).
"""

from circuits.benchmarks.runner import CASES, markdown, run

__all__ = ["CASES", "markdown", "run"]
