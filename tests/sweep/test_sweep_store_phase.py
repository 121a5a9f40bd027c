"""The results file (atomic rows, torn tails, canonical comparison, no writing through links or
into someone's directory) and formation steps."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from circuits.sweep.phase import first_crossing, formation
from circuits.sweep.store import ResultsStore, canonical, read_rows


def row(run_id: str, **extra: object) -> dict:
    return {"run_id": run_id, "status": "ok", "seconds": 1.5, **extra}


def test_rows_append_and_read_back(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s")
    store.start({"name": "s"}, resume=False)
    store.append(row("a", final={"loss": 1.0}), history={"series": {"loss": [[1, 2.0]]}})
    store.append(row("b"))
    assert [r["run_id"] for r in store.rows()] == ["a", "b"]
    assert store.done() == {"a", "b"}
    assert store.history("a")["series"] == {"loss": [[1, 2.0]]}
    text = (tmp_path / "s" / "results.jsonl").read_text()
    assert text.count("\n") == 2 and text.endswith("\n")
    with pytest.raises(FileNotFoundError, match="no history for run b"):
        store.history("b")


def test_a_sweep_directory_with_results_needs_resume(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.start({}, resume=False)
    store.append(row("a"))
    with pytest.raises(FileExistsError, match="--resume"):
        ResultsStore(tmp_path).start({}, resume=False)
    ResultsStore(tmp_path).start({}, resume=True)
    assert ResultsStore(tmp_path).done() == {"a"}


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_row(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(row("a"))
    store.append(row("b"))
    path = tmp_path / "results.jsonl"
    whole = path.read_bytes()
    # A writer killed mid-row leaves a prefix without its newline (even a parseable one).
    for torn in (b'{"run_id": "c", "sta', json.dumps(row("c")).encode()):
        path.write_bytes(whole + torn)
        rows, was_torn = read_rows(path)
        assert [r["run_id"] for r in rows] == ["a", "b"] and was_torn
        assert store.done() == {"a", "b"}  # c is not done: a resume reruns it
    store.append(row("d"))
    assert path.read_bytes() == whole + json.dumps(row("d"), separators=(",", ":")).encode() + b"\n"
    assert read_rows(path) == (store.rows(), False)


def test_damage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"run_id": "a"}\nnot json\n{"run_id": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_rows(path)
    path.write_text('{"run_id": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is not a result row"):
        read_rows(path)


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    padding = "x" * 20_000  # rows larger than a pipe buffer, to give interleaving a chance

    def writer(k: int) -> None:
        for i in range(25):
            ResultsStore(tmp_path).append(row(f"{k}-{i}", pad=padding))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = store.rows()
    assert len(rows) == 100 and len({r["run_id"] for r in rows}) == 100
    assert all(r["pad"] == padding for r in rows)


def test_canonical_drops_timings_only_and_sorts() -> None:
    a = [row("b", formed={"induction": {"step": 5, "seconds": 0.1}}), row("a", steps=3)]
    b = [row("a", steps=3, seconds=9.0), row("b", formed={"induction": {"step": 5, "seconds": 7}})]
    assert canonical(a) == canonical(b)
    assert [r["run_id"] for r in canonical(a)] == ["a", "b"]
    assert "seconds" not in json.dumps(canonical(a))
    c = [row("a", steps=3), row("b", formed={"induction": {"step": 6, "seconds": 0.1}})]
    assert canonical(c) != canonical(a)  # a step is not a timing


# --- formation (the phase change: tests/analysis/test_phase.py) ---


def test_formation_is_the_first_evaluation_at_the_threshold() -> None:
    series = {"induction": [(25, 0.1), (50, 0.4), (75, 0.3), (100, 0.9)], "accuracy": [(25, 0.2)]}
    seconds = {25: 0.5, 50: 1.0, 75: 1.5, 100: 2.0}
    formed = formation(series, {"induction": 0.4, "accuracy": 0.9, "previous_token": 0.4}, seconds)
    assert formed["induction"] == {"threshold": 0.4, "step": 50, "seconds": 1.0}
    assert formed["accuracy"] == {"threshold": 0.9, "step": None, "seconds": None}
    assert formed["previous_token"]["step"] is None  # not in the history: never formed
    assert first_crossing([(1, 0.39999)], 0.4) is None


def test_a_lower_is_better_score_forms_at_or_below_its_threshold() -> None:
    series = {"kl": [(10, 3.0), (20, 0.9), (30, 0.5)]}
    assert formation(series, {"kl": 1.0}, {}, lower=["kl"])["kl"]["step"] == 20
    assert formation(series, {"kl": 1.0}, {})["kl"]["step"] == 10


def test_a_sweep_never_writes_into_a_checkpoint(tmp_path: Path) -> None:
    from circuits import HookedTransformer, ModelConfig

    model = HookedTransformer(ModelConfig(n_layers=1, d_model=8, n_heads=1, n_ctx=4, d_vocab=5))
    model.save(tmp_path / "ck")
    before = sorted(p.name for p in (tmp_path / "ck").iterdir())
    for out in (tmp_path / "ck", tmp_path / "ck" / "sweep"):
        with pytest.raises(ValueError, match="inside the checkpoint"):
            ResultsStore(out)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == before
