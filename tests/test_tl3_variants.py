"""Architecture variants load TransformerLens 3.x state dicts strictly and give TL3's numbers.

Fixtures in ``tests/fixtures/tl3_variants`` were written by real TransformerLens 3.9
(``make_tl3_fixtures.py --variants``): RMS and LNPre normalization, rotary positions (full and
partial ``rotary_dim``), ``solu_ln``, grouped-query attention, ``attn_scale != sqrt(d_head)``
and ``d_vocab_out != d_vocab``. Each is checked against TL3's logits, patterns and residual
stream, and against a plain-torch reference forward written below from TL3's weight layout
(no code shared with ``circuits``); the export back to TL3 (``to_tl3_state_dict``) must give
TL3's own keys, shapes, dtypes and buffer values.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from circuits import HookedTransformer, ModelConfig
from circuits.interop.tl3 import to_tl3_state_dict

HERE = Path(__file__).parent / "fixtures"
VARIANTS = sorted((HERE / "tl3_variants").glob("*.pt"))
BASE = sorted((HERE / "tl3").glob("*.pt"))
ATOL = 1e-5
# TL3 config fields that our ModelConfig need not have while they hold TL3's default.
TL3_DEFAULTS = {"use_attn_scale": True, "final_rms": False, "attn_scale": None}


def test_all_variant_fixtures_present() -> None:
    assert {p.stem for p in VARIANTS} == {
        "attn_scale_attn_only_2l",
        "d_vocab_out_1l",
        "gqa_2l",
        "lnpre_2l",
        "rms_2l",
        "rotary_2l",
        "rotary_partial_attn_only_2l",
        "solu_ln_2l",
    }


def config_of(fixture: dict[str, Any]) -> ModelConfig:
    """Our config from the TL3 one; a TL3 setting we have no field for fails by name."""
    c = dict(fixture["config"])
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    if c["act_fn"] is None:
        c.pop("act_fn")
    if math.isclose(c["attn_scale"], math.sqrt(c["d_head"])):
        c["attn_scale"] = None  # derived: leave it to the config
    fields: dict[str, Any] = {}
    for k, v in c.items():
        if k in known and v is not None:
            fields[k] = v
        elif k not in known and v not in (None, TL3_DEFAULTS.get(k)):
            raise AssertionError(f"ModelConfig has no field {k!r} for TL3's {k}={v!r}")
    fields["normalization_type"] = c["normalization_type"]
    return ModelConfig(**fields)


# --- an independent reference: TL3's forward pass, from its weight layout alone ---
def _norm(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, kind: Any, eps: float):
    if kind is None:
        return x
    if kind in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if kind == "LN":
        return x * sd[prefix + ".w"] + sd[prefix + ".b"]
    if kind == "RMS":
        return x * sd[prefix + ".w"]
    return x


def _rotate(x: torch.Tensor, c: dict[str, Any], sd: dict[str, torch.Tensor], p: str):
    """TL3's rotary: the first rotary_dim features, halves (i, i + r/2) paired."""
    r = c["rotary_dim"]
    pos = x.shape[1]
    rot, rest = x[..., :r], x[..., r:]
    half = r // 2
    flipped = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    sin = sd[p + "attn.rotary_sin"][:pos, None, :]
    cos = sd[p + "attn.rotary_cos"][:pos, None, :]
    return torch.cat([rot * cos + flipped * sin, rest], dim=-1)


def reference_forward(
    sd: dict[str, torch.Tensor], c: dict[str, Any], tokens: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits, per-layer patterns ``[batch, heads, q, k]`` and ``resid_post``."""
    act = {
        "relu": torch.relu,
        "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
        "solu_ln": lambda x: x * x.softmax(-1),
    }
    kind, eps = c["normalization_type"], c["eps"]
    pos = tokens.shape[1]
    x = sd["embed.W_E"][tokens]
    if c["positional_embedding_type"] == "standard":
        x = x + sd["pos_embed.W_pos"][:pos]
    future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=1)
    gqa = c.get("n_key_value_heads") is not None
    patterns, resids = [], []
    for layer in range(c["n_layers"]):
        p = f"blocks.{layer}."
        a = p + "attn." + ("_" if gqa else "")
        normed = _norm(x, sd, p + "ln1", kind, eps)
        q = torch.einsum("bpd,hde->bphe", normed, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("bpd,hde->bphe", normed, sd[a + "W_K"]) + sd[a + "b_K"]
        v = torch.einsum("bpd,hde->bphe", normed, sd[a + "W_V"]) + sd[a + "b_V"]
        if gqa:
            group = c["n_heads"] // c["n_key_value_heads"]
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        if c["positional_embedding_type"] == "rotary":
            q, k = _rotate(q, c, sd, p), _rotate(k, c, sd, p)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / c["attn_scale"]
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        patterns.append(pattern)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not c["attn_only"]:
            h = _norm(x, sd, p + "ln2", kind, eps) @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"]
            post = act[c["act_fn"]](h)
            if c["act_fn"] == "solu_ln":
                post = _norm(post, sd, p + "mlp.ln", kind, eps)
            x = x + post @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
        resids.append(x)
    x = _norm(x, sd, "ln_final", kind, eps)
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"], patterns, resids


@pytest.fixture(params=VARIANTS, ids=[p.stem for p in VARIANTS])
def fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return torch.load(request.param, weights_only=True)


def loaded_model(fixture: dict[str, Any]) -> HookedTransformer:
    model = HookedTransformer(config_of(fixture))
    result = model.load_state_dict(dict(fixture["state_dict"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


def test_reference_reproduces_tl3(fixture: dict[str, Any]) -> None:
    """The reference itself is right: it matches what TL3 computed."""
    logits, patterns, resids = reference_forward(
        fixture["state_dict"], fixture["config"], fixture["tokens"]
    )
    torch.testing.assert_close(logits, fixture["logits"], atol=ATOL, rtol=0)
    for ours, theirs in zip(patterns, fixture["patterns"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    for ours, theirs in zip(resids, fixture["resid"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_strict_load_keeps_every_value(fixture: dict[str, Any]) -> None:
    model = loaded_model(fixture)
    sd = fixture["state_dict"]
    for name, value in model.state_dict().items():
        assert name in sd, f"{name} is ours only"
        assert torch.equal(value, sd[name]), name


def test_logits_patterns_resid_match_tl3(fixture: dict[str, Any]) -> None:
    model = loaded_model(fixture)
    tokens = fixture["tokens"]
    with torch.no_grad():
        fast = model(tokens)  # no hooks: the fast path
        hooked, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(fast, fixture["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(hooked, fixture["logits"], atol=ATOL, rtol=0)
    assert fast.shape[-1] == fixture["config"]["d_vocab_out"]
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(
            cache["pattern", layer], fixture["patterns"][layer], atol=ATOL, rtol=0
        )
        torch.testing.assert_close(
            cache["resid_post", layer], fixture["resid"][layer], atol=ATOL, rtol=0
        )


def test_loss_matches_tl3(fixture: dict[str, Any]) -> None:
    model = loaded_model(fixture)
    tokens = fixture["tokens"]
    if fixture["loss"] is None:
        # d_vocab_out < d_vocab: some next tokens are no output; TL3 has no loss here either.
        assert model.cfg.d_vocab_out < model.cfg.d_vocab
        targets = tokens.clamp(max=model.cfg.d_vocab_out - 1)
        with torch.no_grad():
            loss = model(tokens, return_type="loss", targets=targets)
        expected = F.cross_entropy(fixture["logits"].flatten(0, 1), targets.flatten())
        torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)
        return
    with torch.no_grad():
        loss = model(tokens, return_type="loss")
    torch.testing.assert_close(loss, fixture["loss"], atol=ATOL, rtol=0)


# --- the other direction: our state dict as TL3 holds it ---
@pytest.mark.parametrize("path", BASE + VARIANTS, ids=[p.stem for p in BASE + VARIANTS])
def test_export_has_tl3_keys_shapes_dtypes_and_buffers(path: Path) -> None:
    """``to_tl3_state_dict`` of a model loaded from TL3's dict gives that dict back, buffers
    (``mask``, ``IGNORE``, ``rotary_sin/cos``) included: TL3's strict load then accepts it
    (run ``tests/fixtures/tl3_export.py`` in a TL3 environment for the load itself)."""
    fixture = torch.load(path, weights_only=True)
    if "resid" in fixture:
        model = loaded_model(fixture)
    else:
        from test_tl3_compat import config_of as base_config_of

        model = HookedTransformer(base_config_of(fixture))
        model.load_state_dict(dict(fixture["state_dict"]), strict=True)
    exported = to_tl3_state_dict(model)
    theirs = fixture["state_dict"]
    assert sorted(exported) == sorted(theirs)
    for key, value in theirs.items():
        assert exported[key].shape == value.shape, key
        assert exported[key].dtype == value.dtype, key
        assert torch.equal(exported[key], value), key


# --- round trip: our models, exported, loaded by real TL3 (tests/fixtures/tl3_export.py) ---
EXPORTS = sorted((HERE / "tl3_export").glob("*.pt"))


def _export_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tl3_export", HERE / "tl3_export.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_fixtures_present_and_checked_by_tl3() -> None:
    assert {p.stem for p in EXPORTS} == set(_export_script().MODELS)
    for path in EXPORTS:
        payload = torch.load(path, weights_only=True)
        # Written by the --check step, i.e. TL3 loaded the dict with strict=True and ran it.
        assert payload["tl3_version"].startswith("3."), path.stem


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_tl3_loads_our_export_and_agrees(path: Path) -> None:
    """The dict TL3 loaded with strict=True is still what we export for that model, and our
    logits are still the ones TL3 computed from it (to 1e-5). (Rebuilt from the stored weights,
    not from a seed, so that a change of our initialisation does not invalidate the fixture.)"""
    script = _export_script()
    payload = torch.load(path, weights_only=True)
    model = HookedTransformer(ModelConfig.from_dict(payload["our_config"])).eval()
    model.load_state_dict(dict(payload["state_dict"]), strict=True)
    exported = to_tl3_state_dict(model)
    assert sorted(exported) == sorted(payload["state_dict"])
    for key, value in payload["state_dict"].items():
        assert exported[key].dtype == value.dtype, key
        assert torch.equal(exported[key], value), key
    assert script.tl3_config(model.cfg) == payload["tl3_config"]
    with torch.no_grad():
        logits = model(payload["tokens"])
    torch.testing.assert_close(logits, payload["tl3_logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, payload["logits"], atol=ATOL, rtol=0)


def test_from_tl3_infers_variants(fixture: dict[str, Any]) -> None:
    """``from_tl3`` reads RMS, solu_ln, grouped-query and rotary off the weights."""
    from circuits.interop.tl3 import from_tl3

    c = fixture["config"]
    fields: dict[str, Any] = {}
    if c["normalization_type"] == "LNPre":
        fields["normalization_type"] = "LNPre"  # weightless: nothing in the dict says so
    if not math.isclose(c["attn_scale"], math.sqrt(c["d_head"])):
        fields["attn_scale"] = c["attn_scale"]
    model = from_tl3(dict(fixture["state_dict"]), **fields)
    assert model.cfg == config_of(fixture)
    with torch.no_grad():
        torch.testing.assert_close(model(fixture["tokens"]), fixture["logits"], atol=ATOL, rtol=0)
