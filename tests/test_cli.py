import json
import shutil
import subprocess
import sys
import time

import pytest

from circuits.cli import main


def test_help_imports_neither_torch_nor_transformer_lens():
    code = (
        "import sys; from circuits.cli import build_parser; build_parser().format_help(); "
        "heavy = [m for m in ('torch', 'transformer_lens') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_answers_in_under_a_second():
    exe = shutil.which("circuits") or f"{sys.prefix}/bin/circuits"
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
        timings.append(time.perf_counter() - start)
    assert "train" in out.stdout
    assert min(timings) < 1.0, timings


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: circuits" in capsys.readouterr().out


def test_bad_value_is_one_clean_line(capsys):
    assert main(["train", "--layers", "0", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["circuits train: error: --layers must be positive, got 0"]


@pytest.mark.slow
def test_train_shift_json(capsys):
    assert main(["train", "--task", "shift", "--json", "-q", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "shift"
    assert summary["top_previous_token_head"]["score"] >= 0.9
    assert summary["solved_at"] is not None


@pytest.mark.slow
def test_train_induction_reports_the_circuit(capsys):
    assert main(["train", "--json", "-q", "--seed", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["solved_at"] is not None
    k = summary["k_composition"]
    assert k["source"].startswith("L0") and k["target"].startswith("L1")
    assert k["score"] > k["baseline"] + 3 * k["baseline_std"]
    ablation = summary["ablate_source"]
    assert ablation["accuracy_before"] - ablation["accuracy_after"] >= 0.5


def test_report_threads_are_used_and_restored(tmp_path, monkeypatch, capsys):
    import torch

    import circuits.report

    seen = []
    build = circuits.report.build_report

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return build(*args, **kwargs)

    monkeypatch.setattr(circuits.report, "build_report", spy)
    before = torch.get_num_threads()
    out = tmp_path / "r.html"
    assert main(["report", "data/shift_1l", "-o", str(out), "--threads", "2"]) == 0
    assert seen == [2] and out.is_file() and torch.get_num_threads() == before


def test_report_refuses_negative_threads_before_writing(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "data/shift_1l", "-o", str(out), "--threads", "-1"]) == 2
    assert "--threads" in capsys.readouterr().err and not out.exists()
