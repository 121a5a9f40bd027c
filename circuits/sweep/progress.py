"""One progress bar over a sweep's runs: done, failed, running, and the ETA."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


class SweepProgress:
    """A tqdm bar counting finished runs (ok or failed) out of those to do.

    Args:
        total: Runs to do in this invocation (finished runs of a resumed sweep excluded).
        quiet: No bar at all.
        desc: Bar label.
    """

    def __init__(self, total: int, quiet: bool = False, desc: str = "sweep") -> None:
        self.ok = self.failed = self.running = 0
        self.bar: Any = tqdm(total=total, disable=quiet, desc=desc, unit="run", dynamic_ncols=True)
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix_str(
            f"done {self.ok}, failed {self.failed}, running {self.running}", refresh=False
        )

    def started(self) -> None:
        self.running += 1
        self._show()
        self.bar.refresh()

    def finished(self, ok: bool) -> None:
        self.running -= 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self._show()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
