"""The copying scores' vocabulary pass (one read-out GEMM for every layer per chunk, no argmax):
the first-maximum rule when the attended token ties an EARLIER column, in the same chunk and in
an earlier one, against full ``[heads, batch, pos, V]`` direct-path logits."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from analysis_models import full_copying

from circuits.benchmarks.shapes import SHAPES, build
from circuits.tasks import repeated_tokens

hs = importlib.import_module("circuits.analysis.head_scores")
SMALL = dict(d_vocab=300, n_ctx=64, d_model=64, n_heads=4, d_head=16, n_layers=2)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_earlier_tied_column_wins_within_and_across_chunks(shape: str) -> None:
    """Tokens 150..299 have duplicate unembedding columns 150 places earlier, and the probe's
    tokens are those later copies: where a head's top logit is the attended token, the earlier
    duplicate ties it and ``argmax`` names the duplicate, so top-1 must not count it. Chunks of
    one column, of 200 (duplicate in the previous chunk or the same one) and the default."""
    extra = {"d_mlp": 128} if not SHAPES[shape].get("attn_only") else {}
    model = build(shape, **SMALL, **extra)
    with torch.no_grad():
        model.W_U[:, :150] = model.W_U[:, 150:]
    probe = repeated_tokens(8, 12, 150, seed=2)
    # The later copies: every attended token has an earlier twin.
    probe = dataclasses.replace(probe, tokens=probe.tokens + 150, targets=probe.targets + 150)
    share, top, tied = full_copying(model, probe.tokens, probe.mask)
    assert tied > 0  # some attended token ties the maximum behind an earlier column
    n = int(probe.mask[:, 1:].sum())
    cfg = model.cfg
    per_column = 4 * (cfg.n_layers * cfg.n_heads * cfg.d_head + cfg.n_heads * n)
    for chunk_bytes in (1, 200 * per_column, hs.CHUNK_BYTES):
        got = hs.head_scores(model, probe, ["copying", "copying_top1"], chunk_bytes=chunk_bytes)
        torch.testing.assert_close(got["copying"], share, atol=1e-5, rtol=0)
        torch.testing.assert_close(got["copying_top1"], top, atol=1e-5, rtol=0)
