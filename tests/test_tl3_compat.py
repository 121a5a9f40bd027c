"""TransformerLens 3.x checkpoints load into our model with ``strict=True`` and give TL3's numbers.

The fixtures in ``tests/fixtures/tl3`` were written by real TransformerLens 3.9 (see
``tests/fixtures/make_tl3_fixtures.py``): its raw state dict (with the ``mask`` and ``IGNORE``
buffers), tokens, logits, attention patterns and loss. Every fixture is checked three ways: our
fused fast path, our hooked path, and a plain-torch forward written below from the TL3 weight
layout alone (it shares no code with ``circuits.model``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from circuits import HookedTransformer, ModelConfig
from circuits.interop.tl3 import from_tl3

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "tl3").glob("*.pt"))
ATOL = 1e-5


def test_all_fixtures_present() -> None:
    names = {p.stem for p in FIXTURES}
    assert names == {
        "attn_only_2l",
        "attn_only_2l_shortformer",
        "full_1l_relu_ln",
        "full_2l_gelu_new",
        "full_2l_ln",
    }


def load_fixture(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def config_of(fixture: dict[str, Any]) -> ModelConfig:
    c = dict(fixture["config"])
    c.pop("attn_scale")  # derived: sqrt(d_head)
    if c["act_fn"] is None:  # attention-only models have no activation
        c.pop("act_fn")
    return ModelConfig(**c)


# --- an independent reference: TL3's forward pass, from its weight layout alone ---
def reference_forward(
    sd: dict[str, torch.Tensor], c: dict[str, Any], tokens: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits ``[batch, pos, d_vocab]`` and per-layer patterns ``[batch, heads, q, k]``."""

    def layer_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        if c["normalization_type"] != "LN":
            return x
        x = x - x.mean(-1, keepdim=True)
        x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + c["eps"])
        return x * sd[prefix + ".w"] + sd[prefix + ".b"]

    act = {
        "relu": torch.relu,
        "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
        "gelu_new": lambda x: (
            0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        ),
    }
    pos = tokens.shape[1]
    tok_emb = sd["embed.W_E"][tokens]
    pos_emb = sd["pos_embed.W_pos"][:pos].unsqueeze(0)
    shortformer = c["positional_embedding_type"] == "shortformer"
    x = tok_emb if shortformer else tok_emb + pos_emb
    future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=1)
    patterns = []
    for layer in range(c["n_layers"]):
        p = f"blocks.{layer}."
        normed = layer_norm(x, p + "ln1")
        qk_in = normed + pos_emb if shortformer else normed
        q = torch.einsum("bpd,hde->bphe", qk_in, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("bpd,hde->bphe", qk_in, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("bpd,hde->bphe", normed, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(c["d_head"])
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        patterns.append(pattern)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not c["attn_only"]:
            h = layer_norm(x, p + "ln2") @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"]
            x = x + act[c["act_fn"]](h) @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    x = layer_norm(x, "ln_final")
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"], patterns


def reference_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


@pytest.fixture(params=FIXTURES, ids=[p.stem for p in FIXTURES])
def fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_fixture(request.param)


def loaded_model(fixture: dict[str, Any]) -> HookedTransformer:
    model = HookedTransformer(config_of(fixture))
    # A copy: our loader consumes TL3's mask/IGNORE buffers from the dict it is given.
    model.load_state_dict(dict(fixture["state_dict"]), strict=True)
    return model.eval()


def test_reference_reproduces_tl3(fixture: dict[str, Any]) -> None:
    """The reference itself is right: it matches what TL3 computed."""
    logits, patterns = reference_forward(
        fixture["state_dict"], fixture["config"], fixture["tokens"]
    )
    torch.testing.assert_close(logits, fixture["logits"], atol=ATOL, rtol=0)
    for ours, theirs in zip(patterns, fixture["patterns"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        reference_loss(logits, fixture["tokens"]), fixture["loss"], atol=ATOL, rtol=0
    )


def test_strict_load_leaves_nothing_out(fixture: dict[str, Any]) -> None:
    model = HookedTransformer(config_of(fixture))
    result = model.load_state_dict(dict(fixture["state_dict"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    sd = fixture["state_dict"]
    for name, param in model.state_dict().items():
        assert torch.equal(param, sd[name]), name


def test_fast_path_matches_tl3_and_reference(fixture: dict[str, Any]) -> None:
    model = loaded_model(fixture)
    tokens = fixture["tokens"]
    ref_logits, _ = reference_forward(fixture["state_dict"], fixture["config"], tokens)
    with torch.no_grad():
        assert not model._hooked_parts()
        logits = model(tokens)
        loss = model(tokens, return_type="loss")
    torch.testing.assert_close(logits, fixture["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, fixture["loss"], atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, reference_loss(ref_logits, tokens), atol=ATOL, rtol=0)


def test_hooked_path_matches_tl3_and_reference(fixture: dict[str, Any]) -> None:
    model = loaded_model(fixture)
    tokens = fixture["tokens"]
    ref_logits, ref_patterns = reference_forward(fixture["state_dict"], fixture["config"], tokens)
    with torch.no_grad():
        (logits, loss), cache = model.run_with_cache(tokens, return_type="both")
    torch.testing.assert_close(logits, fixture["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(loss, fixture["loss"], atol=ATOL, rtol=0)
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        torch.testing.assert_close(pattern, fixture["patterns"][layer], atol=ATOL, rtol=0)
        torch.testing.assert_close(pattern, ref_patterns[layer], atol=ATOL, rtol=0)


def test_wrong_config_is_refused() -> None:
    """A TL3 dict loaded into a model of another shape fails loudly, not silently."""
    fixture = load_fixture(FIXTURES[0])
    wrong = config_of(fixture).replace(d_vocab=fixture["config"]["d_vocab"] + 1)
    with pytest.raises(RuntimeError, match="W_E"):
        HookedTransformer(wrong).load_state_dict(dict(fixture["state_dict"]), strict=True)


def test_non_causal_mask_buffer_is_refused() -> None:
    fixture = load_fixture(FIXTURES[0])
    sd = dict(fixture["state_dict"])
    n = fixture["config"]["n_ctx"]
    sd["blocks.0.attn.mask"] = torch.ones(n, n, dtype=torch.bool)  # attends to the future
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.mask"):
        HookedTransformer(config_of(fixture)).load_state_dict(sd, strict=True)


# --- from_tl3: a bare state dict, its config inferred ---
def test_from_tl3_infers_the_config(fixture: dict[str, Any], tmp_path: Path) -> None:
    c = fixture["config"]
    fields = {"positional_embedding_type": c["positional_embedding_type"]}
    if c["act_fn"] is not None:
        fields["act_fn"] = c["act_fn"]
    path = tmp_path / "tl3.pt"
    torch.save(fixture["state_dict"], path)
    for source in (dict(fixture["state_dict"]), path):
        model = from_tl3(source, **fields)
        assert model.cfg == config_of(fixture)
        with torch.no_grad():
            torch.testing.assert_close(
                model(fixture["tokens"]), fixture["logits"], atol=ATOL, rtol=0
            )


def test_from_tl3_refuses_contradictions_and_non_tl3_dicts() -> None:
    sd = load_fixture(FIXTURES[0])["state_dict"]
    with pytest.raises(ValueError, match=r"d_model=64 \(weights say 32\)"):
        from_tl3(dict(sd), d_model=64)
    with pytest.raises(ValueError, match=r"no embed\.W_E"):
        from_tl3({"weight": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="dict of tensors"):
        from_tl3([1, 2])  # type: ignore[arg-type]
