"""``--rows`` of the scale case: measuring a few rows (the GPT-2 ones) without the rest."""

from __future__ import annotations

import pytest

from circuits.benchmarks import scale, scale_rows


def test_select_keeps_the_rows_whose_printed_name_contains_a_pattern() -> None:
    every = scale.rows(False)
    gpt2 = scale_rows.select(every, ["GPT2-small"])
    assert gpt2 and all(r.shape == "gpt2-small" for r in gpt2)
    assert len(gpt2) == sum(r.shape == "gpt2-small" for r in every)
    wanted = ["ours head_scores (gpt2-small, 8 x 2x32)", "edge_attribution (gpt2"]
    ours = scale_rows.select(every, wanted)
    # The closing parenthesis leaves out the pattern-scores-only row and its peer.
    assert [(r.what, r.side, r.options) for r in ours] == [
        ("head_scores", "ours", {}),
        ("edge_attribution", "ours", {"ig_steps": 5}),
    ]
    assert len(scale_rows.select(every, ["head_scores (gpt2-small"])) == 3
    assert [r for r in every if r in ours] == ours  # the case's order


@pytest.mark.parametrize("patterns", [["no such row"], ["gpt2-small", "typo"], [" ", ""]])
def test_select_refuses_a_pattern_that_matches_nothing(patterns: list[str]) -> None:
    with pytest.raises(ValueError, match="no row"):
        scale_rows.select(scale.rows(False), patterns)


def test_main_refuses_bad_rows_and_threads_before_running(monkeypatch, capsys) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should run")

    monkeypatch.setattr(scale, "measure", fail)
    for argv in (["--rows", "typo"], ["--rows", "gpt2-small", "--threads", "0"]):
        with pytest.raises(SystemExit) as e:
            scale_rows.main(argv)
        assert e.value.code == 2
    assert "typo" in capsys.readouterr().err


def test_main_measures_only_the_chosen_rows(monkeypatch, tmp_path, capsys) -> None:
    seen: list[scale.Row] = []

    def fake(row: scale.Row, threads: int, quick: bool) -> dict:
        seen.append(row)
        return {
            **scale.asdict(row),
            "label": row.label,
            "seconds": 1.0,
            "peak_mb": 2.0,
            "above_mb": 1.0,
            "rss_before_mb": 1.0,
        }

    monkeypatch.setattr(scale, "measure", fake)
    out = tmp_path / "rows.json"
    assert (
        scale_rows.main(["--rows", "edge_attribution (gpt2", "--threads", "1", "--json", str(out)])
        == 0
    )
    assert [(r.what, r.shape) for r in seen] == [("edge_attribution", "gpt2-small")]
    assert "edge_attribution" in capsys.readouterr().out and out.is_file()


def test_main_takes_a_label_with_commas_as_one_pattern(monkeypatch) -> None:
    """Labels hold commas ("8 x 2x32, scores=..."): --rows repeats rather than splitting."""
    seen: list[scale.Row] = []
    monkeypatch.setattr(scale, "measure", lambda row, threads, quick: seen.append(row) or {})
    monkeypatch.setattr(scale, "_cell", lambda r: "")
    monkeypatch.setattr(scale_rows, "markdown", lambda result, info: "")
    argv = ["--rows", "ours head_scores (gpt2-small, 8 x 2x32)", "--rows", "Problem.build (gpt2"]
    assert scale_rows.main([*argv, "--threads", "1"]) == 0
    assert [(r.what, r.options) for r in seen] == [("head_scores", {}), ("Problem.build", {})]
