"""analysis.split: previous-token work done by one head or split, read by ablation, on planted
circuits whose answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from analysis_models import N, V, make_induction_model

from circuits.analysis.head_scores import evaluate
from circuits.analysis.split import MIN_DEPENDENCE, SPLIT_SHARE, previous_token_split
from circuits.model import HookedTransformer
from circuits.tasks import Batch

DATA = Path(__file__).resolve().parents[2] / "data"


def repeated_probe(batch: int = 32, seed: int = 0) -> Batch:
    """A permutation of the V tokens, twice: on the second copy the next token is the one after
    the current token's first occurrence (unique, so an induction head always knows it)."""
    gen = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(V, generator=gen) for _ in range(batch)])
    tokens = torch.cat([first, first], dim=1)  # [batch, 2V] = [batch, N]
    targets = torch.roll(tokens, -1, dims=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    # The second copy but its first position (the previous-token head's key at position 0,
    # which has no previous token, reads its own token: a tie there) and its last (no next).
    mask[:, V + 1 : N - 1] = True
    return Batch(tokens, targets, mask, repeat_length=V)


def planted() -> HookedTransformer:
    """The planted induction circuit (L0H0 previous-token head, L1H0 induction head), its
    induction head's output tripled so that it outvotes the direct path's current token."""
    model = make_induction_model()
    with torch.no_grad():
        model.blocks[1].attn.W_O[0] *= 3
    return model


def two_half_heads() -> HookedTransformer:
    """The planted induction circuit with its previous-token work shared: L0H1 becomes a copy
    of L0H0 and each writes half of the previous token (either half alone is enough for the
    induction head's sharp query)."""
    model = planted()
    a0 = model.blocks[0].attn
    with torch.no_grad():
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            w = getattr(a0, name)
            w[1] = w[0]
        a0.W_O[:] *= 0.5
    return model


def test_one_previous_token_head_carries_all_the_work() -> None:
    model, probe = planted(), repeated_probe()
    out = previous_token_split(model, probe, "L0H0", "L1H0")
    assert out["top"] == "L0H0" and out["heads"] == ["L0H0", "L0H1"]
    assert out["accuracy"] == pytest.approx(evaluate(model, probe)["accuracy"], abs=1e-4)
    assert out["accuracy"] == 1.0  # the planted circuit solves the second copy
    assert out["accuracy"] - out["all_ablated"] > 0.5
    assert out["share"] == pytest.approx(1.0, abs=0.05)
    assert out["split"] is False


def test_two_heads_each_carrying_half_split_the_work() -> None:
    model, probe = two_half_heads(), repeated_probe()
    out = previous_token_split(model, probe, "L0H0", "L1H0")
    assert out["accuracy"] == 1.0 and out["all_ablated"] < 0.5
    assert out["top_ablated"] == 1.0  # the other half alone still finds the token
    assert out["share"] < SPLIT_SHARE and out["split"] is True
    # The same work, read from the other head: symmetric.
    other = previous_token_split(model, probe, "L0H1", "L1H0")
    assert other["share"] == out["share"] and other["split"] is True


def test_no_previous_token_dependence_gives_no_share_not_nan() -> None:
    model = planted()
    with torch.no_grad():
        model.blocks[0].attn.W_O.zero_()  # layer 0 writes nothing: nothing depends on it
    out = previous_token_split(model, repeated_probe(), "L0H0", "L1H0")
    assert out["accuracy"] - out["all_ablated"] < MIN_DEPENDENCE
    assert out["share"] is None and out["split"] is None


def test_candidates_are_the_layers_below_the_induction_head() -> None:
    model, probe = make_induction_model(), repeated_probe(8)
    assert previous_token_split(model, probe, "L0H1")["heads"] == ["L0H0", "L0H1"]
    # A top head not below the induction head: candidates up to its own layer.
    out = previous_token_split(model, probe, (1, 1), "L1H0")
    assert out["heads"] == ["L0H0", "L0H1", "L1H0", "L1H1"] and out["top"] == "L1H1"


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("L2H0",), ValueError, "layer"),
        (("L0H0", "L1H5"), ValueError, "head"),
        (("nonsense",), ValueError, "heads"),
    ],
)
def test_bad_heads_are_named(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        previous_token_split(make_induction_model(), repeated_probe(2), *args)


def test_a_probe_that_is_not_a_batch_is_refused() -> None:
    with pytest.raises(TypeError, match="probe"):
        previous_token_split(make_induction_model(), torch.zeros(2, N, dtype=torch.long), "L0H0")


def test_the_shipped_default_preset_model_depends_on_its_previous_token_head() -> None:
    from circuits import checkpoint
    from circuits.tasks import task_from_dict

    path = DATA / "induction_2l"
    model = HookedTransformer.load(path)
    probe = task_from_dict(checkpoint.read_metadata(path)["task"]).probe(64)
    scores = evaluate(model, probe).scores
    top = int(scores["previous_token"][0].argmax())
    out = previous_token_split(model, probe, f"L0H{top}", "L1H0")
    a, a1, a2 = out["accuracy"], out["top_ablated"], out["all_ablated"]
    assert a - a2 >= MIN_DEPENDENCE  # a trained induction model needs layer 0
    assert out["share"] == pytest.approx((a - a1) / (a - a2), abs=1e-3)
    assert out["split"] == (out["share"] < SPLIT_SHARE)
