"""``circuits sweep`` killed with SIGKILL midway, then resumed: the same results, no run twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits.sweep import ResultsStore, SweepSpec, canonical, read_rows, run_sweep

pytestmark = pytest.mark.slow


def sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "circuits.cli", "sweep", str(spec), "--out", str(out),
        "--workers", "1", "--quiet", *extra,
    ]  # fmt: skip


def test_a_killed_sweep_resumes_to_the_same_results(small_spec: dict, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(small_spec))
    out = tmp_path / "killed"
    results = out / "results.jsonl"
    proc = subprocess.Popen(
        sweep_cmd(spec_file, out), start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if results.exists() and len(read_rows(results)[0]) >= 2:
                break
            assert proc.poll() is None, f"sweep ended early: {proc.stderr.read()}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, no clean-up
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = read_rows(results)[0]
    assert 2 <= len(finished) < 8, "the kill came after the sweep ended; nothing to resume"
    # A writer killed mid-row would leave a torn last line; make sure there is one.
    with open(results, "ab") as f:
        f.write(b'{"run_id": "torn-by-the-k')

    resumed = subprocess.run(
        sweep_cmd(spec_file, out, "--resume"), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    counts = re.search(r"(\d+) already done, (\d+) run now", resumed.stderr)
    assert counts, resumed.stderr
    assert (int(counts[1]), int(counts[2])) == (len(finished), 8 - len(finished))

    rows, torn = read_rows(results)
    assert not torn
    assert rows[: len(finished)] == finished  # nothing finished was lost or rewritten
    assert len({r["run_id"] for r in rows}) == len(rows) == 8  # no run done twice
    reference = tmp_path / "uninterrupted"
    run_sweep(SweepSpec.from_dict(small_spec), reference, workers=0, quiet=True)
    assert canonical(rows) == canonical(ResultsStore(reference).rows())
