"""from_pretrained on stand-ins of the toy-model zoo (published layout), with the hub offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from circuits import HookedTransformer
from circuits.pretrained import PretrainedError, from_pretrained, known_names
from circuits.pretrained.zoo import REPOSITORIES, TOKENIZER, config_from_neel

RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False}


def snapshot(cache: Path, name: str) -> Path:
    """The cache snapshot directory of a zoo name or a repository id."""
    from circuits.pretrained.zoo import repository

    repo = repository(name) or name
    root = cache / ("models--" + repo.replace("/", "--"))
    return root / "snapshots" / (root / "refs" / "main").read_text()


def reference_forward(sd: dict[str, torch.Tensor], c: dict, tokens: torch.Tensor) -> torch.Tensor:
    """Neel's toy-model forward from the published config keys and state dict alone."""

    def layer_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        if c["normalization"] != "LN":
            return x
        x = x - x.mean(-1, keepdim=True)
        x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        return x * sd[prefix + ".w"] + sd[prefix + ".b"]

    pos = tokens.shape[1]
    pos_emb = sd["pos_embed.W_pos"][:pos]
    x = sd["embed.W_E"][tokens] + (0 if c["shortformer_pos"] else pos_emb)
    future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=1)
    for layer in range(c["n_layers"]):
        p = f"blocks.{layer}."
        normed = layer_norm(x, p + "ln1")
        qk_in = normed + pos_emb if c["shortformer_pos"] else normed
        q = torch.einsum("bpd,hde->bphe", qk_in, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("bpd,hde->bphe", qk_in, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("bpd,hde->bphe", normed, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(c["d_head"])
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not c["attn_only"]:
            h = layer_norm(x, p + "ln2") @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"]
            if c["act_fn"] == "gelu":
                h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
            else:  # solu_ln: x * softmax(x), then a LayerNorm over d_mlp
                h = layer_norm(h * torch.softmax(h, dim=-1), p + "mlp.ln")
            x = x + h @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    return layer_norm(x, "ln_final") @ sd["unembed.W_U"] + sd["unembed.b_U"]


@pytest.mark.parametrize("name", ["attn-only-2l", "attn-only-2l-demo", "gelu-1l", "solu-2l"])
def test_a_standin_loads_strictly_and_matches_a_reference_forward(
    zoo_cache: Path, name: str
) -> None:
    files = snapshot(zoo_cache, name)
    cfg_json = json.loads((files / "config.json").read_text())
    sd = torch.load(files / "model_final.pth", weights_only=True)
    model = from_pretrained(name, cache_dir=zoo_cache, **RAW)
    # strict: every tensor of the file is used (the mask buffers are consumed), none is missing
    ours = model.state_dict()
    assert {k for k in sd if not k.endswith(("attn.mask", "attn.IGNORE"))} == set(ours)
    tokens = torch.randint(
        0, cfg_json["d_vocab"], (3, 20), generator=torch.Generator().manual_seed(0)
    )
    expected = reference_forward(sd, cfg_json, tokens)
    torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)
    assert model.cfg.positional_embedding_type == (
        "shortformer" if cfg_json["shortformer_pos"] else "standard"
    )


@pytest.mark.parametrize("name", ["attn-only-2l", "gelu-1l", "solu-2l"])
def test_weight_processing_keeps_log_probs(zoo_cache: Path, name: str) -> None:
    raw = from_pretrained(name, cache_dir=zoo_cache, **RAW)
    processed = from_pretrained(name, cache_dir=zoo_cache)  # TransformerLens's defaults
    assert processed.cfg.normalization_type == "LNPre"
    tokens = torch.randint(0, raw.cfg.d_vocab, (2, 24), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        processed(tokens).log_softmax(-1), raw(tokens).log_softmax(-1), atol=1e-4, rtol=0
    )
    # the writing weights really were centred (TransformerLens's center_writing_weights)
    assert processed.W_E.mean(-1).abs().max() < 1e-5
    assert raw.W_E.mean(-1).abs().max() > 1e-3


def test_shortformer_models_skip_folding_with_a_warning(zoo_cache: Path) -> None:
    with pytest.warns(UserWarning, match="shortformer"):
        model = from_pretrained("attn-only-2l-demo", cache_dir=zoo_cache)
    assert model.cfg.normalization_type is None


def test_names_aliases_and_repositories_resolve(zoo_cache: Path) -> None:
    a = from_pretrained("attn-only-2l", cache_dir=zoo_cache, tokenizer=False, **RAW)
    b = from_pretrained("Attn-Only-2L-C4-Code", cache_dir=zoo_cache, tokenizer=False, **RAW)
    c = from_pretrained("NeelNanda/Attn_Only_2L512W_C4_Code", cache_dir=zoo_cache, **RAW)
    for other in (b, c):
        for k, v in a.state_dict().items():
            assert torch.equal(v, other.state_dict()[k])
    assert a.tokenizer is None and c.tokenizer is not None
    assert "attn-only-2l" in known_names() and len(known_names()) == len(REPOSITORIES)


def test_a_local_directory_in_the_zoo_layout_loads(zoo_cache: Path) -> None:
    model = from_pretrained(snapshot(zoo_cache, "gelu-1l"), cache_dir=zoo_cache, **RAW)
    assert model.cfg.act_fn == "gelu" and model.tokenizer is not None


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(PretrainedError, match=r"unknown model 'gpt-7'.*attn-only-2l.*solu-4l"):
        from_pretrained("gpt-7")


def test_offline_and_not_cached_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match="not in the Hugging Face cache") as info:
        from_pretrained("attn-only-3l", cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_a_corrupt_weights_file_is_named(zoo_cache: Path, tmp_path: Path) -> None:
    src = snapshot(zoo_cache, "attn-only-2l")
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    (tmp_path / "model_final.pth").write_bytes((src / "model_final.pth").read_bytes()[:500])
    with pytest.raises(PretrainedError, match=r"model_final\.pth"):
        from_pretrained(tmp_path)
    (tmp_path / "model_final.pth").write_bytes((src / "model_final.pth").read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "d_model": 48}))
    with pytest.raises(PretrainedError, match=r"do not fit its config\.json"):
        from_pretrained(tmp_path)


def test_a_directory_that_is_no_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match=r"no config\.json"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(PretrainedError, match="neither"):
        from_pretrained(tmp_path)


def test_the_zoo_configs_convert_as_transformer_lens_does() -> None:
    # attn-only-2l's published architecture (TransformerLens's model table)
    cfg = config_from_neel(
        {
            "d_model": 512, "n_layers": 2, "d_mlp": 2048, "d_head": 64, "n_heads": 8,
            "n_ctx": 1024, "d_vocab": 48262, "act_fn": "solu_ln", "attn_only": True,
            "normalization": "LN", "shortformer_pos": False,
            "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits",
        }
    )  # fmt: skip
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab) == (
        2,
        512,
        8,
        64,
        48262,
    )
    assert cfg.attn_only and cfg.normalization_type == "LN"
    assert cfg.positional_embedding_type == "standard" and cfg.attn_scale == 8.0
    with pytest.raises(ValueError, match="missing"):
        config_from_neel({"d_model": 4})


def test_our_checkpoint_directory_loads(tmp_path: Path) -> None:
    from circuits import ModelConfig

    model = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10))
    model.save(tmp_path / "ck")
    loaded = from_pretrained(tmp_path / "ck", **RAW)
    tokens = torch.randint(0, 10, (2, 8))
    torch.testing.assert_close(loaded(tokens), model(tokens))


def test_a_local_gpt2_checkpoint_loads_with_its_tokenizer(zoo_cache: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuits.pretrained import load_tokenizer

    tok = load_tokenizer(snapshot(zoo_cache, TOKENIZER))
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=len(tok))
    ).eval()
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path, **RAW)
    tokens = model.to_tokens("The quick brown fox")
    with torch.no_grad():
        expected = hf(tokens).logits
    torch.testing.assert_close(model(tokens), expected, atol=1e-4, rtol=1e-4)


def test_an_attn_only_shortformer_model_with_layernorm_loads_and_processes(
    zoo_cache: Path, tmp_path: Path
) -> None:
    """The framework paper's attention-only models: shortformer positions and LayerNorm."""
    src = snapshot(zoo_cache, "attn-only-2l")
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "shortformer_pos": True}))
    (tmp_path / "model_final.pth").write_bytes((src / "model_final.pth").read_bytes())
    raw = from_pretrained(tmp_path, cache_dir=zoo_cache, **RAW)
    assert raw.cfg.positional_embedding_type == "shortformer"
    assert raw.cfg.normalization_type == "LN"
    sd = torch.load(tmp_path / "model_final.pth", weights_only=True)
    tokens = torch.randint(0, cfg["d_vocab"], (2, 16), generator=torch.Generator().manual_seed(2))
    expected = reference_forward(sd, {**cfg, "shortformer_pos": True}, tokens)
    torch.testing.assert_close(raw(tokens), expected, atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="shortformer"):
        processed = from_pretrained(tmp_path, cache_dir=zoo_cache)
    torch.testing.assert_close(
        processed(tokens).log_softmax(-1), raw(tokens).log_softmax(-1), atol=1e-4, rtol=0
    )
