"""Known-answer tests of circuits.analysis.markov: the estimators against brute force, KL, the
statistical-induction score on ideal patterns, and a hand-built 2-layer model implementing a
statistical induction head (previous-token head in layer 0, token match in layer 1)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from circuits.analysis import markov
from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import ScoreContext
from circuits.config import ModelConfig
from circuits.model import HookedTransformer


def _brute_bigram(seq: list[int], k: int) -> torch.Tensor:
    out = []
    for t, x in enumerate(seq):
        counts = [1.0] * k
        for s in range(t):
            if seq[s] == x:
                counts[seq[s + 1]] += 1
        out.append([c / sum(counts) for c in counts])
    return torch.tensor(out, dtype=torch.float64)


def _brute_unigram(seq: list[int], k: int) -> torch.Tensor:
    out = []
    for t in range(len(seq)):
        counts = [1.0 + seq[: t + 1].count(j) for j in range(k)]
        out.append([c / sum(counts) for c in counts])
    return torch.tensor(out, dtype=torch.float64)


def test_estimators_match_brute_force():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 4, (3, 25), generator=g)
    for b in range(3):
        seq = tokens[b].tolist()
        assert torch.allclose(markov.bigram_estimator(tokens, 4)[b], _brute_bigram(seq, 4))
        assert torch.allclose(markov.unigram_estimator(tokens, 4)[b], _brute_unigram(seq, 4))


def test_bigram_known_answer():
    est = markov.bigram_estimator(torch.tensor([[0, 1, 0, 1, 0]]), 2)
    assert est[0, 4].tolist() == pytest.approx([1 / 4, 3 / 4])  # 0 was followed by 1 twice


def test_kl_is_zero_for_the_strategy_itself():
    s = markov.unigram_estimator(torch.tensor([[0, 1, 1, 2]]), 3)
    assert torch.allclose(markov.kl_by_position(s, s.log()), torch.zeros(4, dtype=torch.float64))
    assert (markov.kl_by_position(s, torch.zeros_like(s)) > 0).all()


def test_phase_picks_the_closest_strategy():
    kls = {"uniform": [0.3, 0.3], "unigram": [0.2, 0.1], "bigram": [0.05, 0.5]}
    assert markov.phase(kls) == "unigram"
    assert markov.phase(kls, slice(0, 1)) == "bigram"


def _ctx(tokens: torch.Tensor, patterns: torch.Tensor) -> ScoreContext:
    ctx = ScoreContext(model=None, probe=SimpleNamespace(tokens=tokens), cache=None)
    ctx.__dict__["patterns"] = patterns
    return ctx


def test_statistical_induction_score_on_ideal_and_uniform_patterns():
    tokens = torch.randint(0, 3, (4, 30), generator=torch.Generator().manual_seed(1))
    mask = markov.statistical_induction_mask(tokens).double()
    ideal = mask / mask.sum(-1, keepdim=True).clamp(min=1)
    pos = torch.arange(30)
    uniform = (pos[None, :] <= pos[:, None]).double()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(4, 30, 30)
    patterns = torch.stack([ideal, uniform], dim=1)[None]  # [layer, batch, head, q, k]
    score = markov.statistical_induction_score(_ctx(tokens, patterns))
    assert score[0, 0] == pytest.approx(1.0)
    assert 0.2 < float(score[0, 1]) < 0.5  # about 1/k of the keys qualify


def _hand_built(k: int, n_ctx: int) -> HookedTransformer:
    """Residual = [token one-hot | previous token | head output (k each) | position one-hot].

    L0H0 attends from position i to i - 1 (positions) and writes the key's token into the
    previous-token block; L1H0 matches the query's token against keys' previous token and
    writes the key's token into the output, which the unembedding reads: a statistical
    induction head, predicting the average of the tokens that followed earlier copies.
    """
    d = 3 * k + n_ctx
    cfg = ModelConfig(
        n_layers=2,
        d_model=d,
        n_heads=1,
        d_head=d,
        n_ctx=n_ctx,
        d_vocab=k,
        attn_only=True,
        normalization_type=None,
    )
    model = HookedTransformer(cfg)
    big = 300.0  # scores are divided by sqrt(d_head)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :k] = torch.eye(k)
        model.pos_embed.W_pos[:, 3 * k :] = torch.eye(n_ctx)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for i in range(1, n_ctx):
            a0.W_Q[0, 3 * k + i, i] = big  # query at i looks for key i - 1
            a0.W_K[0, 3 * k + i - 1, i] = 1.0
        a0.W_Q[0, 3 * k, 0] = big
        a0.W_K[0, 3 * k, 0] = 1.0
        a0.W_V[0, :k, :k] = torch.eye(k)
        a0.W_O[0, :k, k : 2 * k] = torch.eye(k)  # key's token -> previous-token block
        a1.W_Q[0, :k, :k] = big * torch.eye(k)  # query's token ...
        a1.W_K[0, k : 2 * k, :k] = torch.eye(k)  # ... against the key's previous token
        a1.W_V[0, :k, :k] = torch.eye(k)
        a1.W_O[0, :k, 2 * k : 3 * k] = torch.eye(k)
        model.unembed.W_U[2 * k : 3 * k, :] = 4.0 * torch.eye(k)
    return model


def test_hand_built_statistical_induction_head_is_found_and_predicts_bigrams():
    task_k, T = 3, 48
    model = _hand_built(task_k, T)
    from circuits.tasks import MarkovICLTask

    batch, chains = MarkovICLTask(k=task_k, seq_len=T).probe_chains(64)
    scores = evaluate(model, batch, ["previous_token", "statistical_induction"]).scores
    assert scores["previous_token"][0, 0] > 0.95
    assert scores["statistical_induction"][1, 0] > 0.9
    kls = markov.strategy_kls(model, batch.tokens, chains)
    assert markov.phase(kls) == "bigram"
    late = slice(-T // 4, None)
    assert kls["bigram"][late].mean() < 0.5 * kls["unigram"][late].mean()


def test_bad_input():
    with pytest.raises(ValueError, match="states"):
        markov.bigram_estimator(torch.tensor([[0, 3]]), 3)
    with pytest.raises(ValueError, match="k"):
        markov.unigram_estimator(torch.tensor([[0, 0]]), 1)
    with pytest.raises(TypeError, match="Markov"):
        markov.PhaseTracker(_hand_built(2, 8), SimpleNamespace())


def test_phase_tracker_records_each_evaluation_and_keeps_the_mode():
    from circuits.presets import build
    from circuits.training import train

    model, task, cfg = build("markov_icl", seed=0, train={"steps": 20, "eval_every": 10})
    tracker = markov.PhaseTracker(model, task, batch_size=16)
    modes = []
    train(
        model,
        task,
        cfg.replace(progress=False),
        callback=lambda s, r: (tracker(s, r), modes.append(model.training)),
    )
    assert [h["step"] for h in tracker.history] == [10, 20]
    assert all(h["phase"] in markov.STRATEGIES for h in tracker.history)
    assert set(tracker.history[0]) == {"step", "uniform", "unigram", "bigram", "true", "phase"}
    assert modes == [True, True]  # the loop calls back in training mode: the tracker restores it


def test_late_kls_known_answers_on_hand_built_models():
    """What training records for markov_icl (late_kls): on the hand-built statistical
    induction head it equals the per-position KLs of strategy_kls averaged over the last
    quarter, with phase 2 (bigram); on a model whose logits are all zero (uniform
    predictions) KL to uniform is 0 and KL to each estimator is, by brute force,
    mean over late positions of sum_j s_j log(k s_j)."""
    import math

    from circuits.tasks import MarkovICLTask
    from circuits.training.metrics import evaluation_metrics

    k, T = 3, 48
    task = MarkovICLTask(k=k, seq_len=T)
    batch, chains = task.probe_chains(16)
    model = _hand_built(k, T)
    got = evaluation_metrics(task, model, batch)
    kls = markov.strategy_kls(model, batch.tokens, chains)
    late = slice(-T // 4, None)
    for name in markov.STRATEGIES:
        assert got[f"kl_{name}"] == pytest.approx(float(kls[name][late].mean()), rel=1e-9)
    assert got["phase"] == markov.STRATEGIES.index("bigram")
    assert got["kl_bigram"] < 0.5 * got["kl_unigram"]

    uniform = _hand_built(k, T)
    with torch.no_grad():
        uniform.unembed.W_U.zero_()
    got = markov.late_kls(uniform, batch.tokens, k)
    assert got["kl_uniform"] == pytest.approx(0.0, abs=1e-12) and got["phase"] == 0.0

    def brute(estimate) -> float:
        rows = [estimate(seq, k)[late] for seq in batch.tokens.tolist()]
        return sum(sum(s * math.log(k * s) for s in row) for r in rows for row in r.tolist()) / sum(
            len(r) for r in rows
        )

    assert got["kl_unigram"] == pytest.approx(brute(_brute_unigram), rel=1e-9)
    assert got["kl_bigram"] == pytest.approx(brute(_brute_bigram), rel=1e-9)


def test_phase_sequence_runs_of_equal_phases():
    from circuits.records import EvalRecord

    history = [
        EvalRecord(step=s, loss=1.0, accuracy=0.0, metrics={} if ph is None else {"phase": ph})
        for s, ph in [(10, 0), (20, None), (30, 0), (40, 1), (50, 2), (60, 2)]
    ]
    assert markov.phase_sequence(history) == [(10, "uniform"), (40, "unigram"), (50, "bigram")]
