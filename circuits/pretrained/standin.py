"""Small stand-ins for the zoo, in its exact published layout, for machines with no network.

A stand-in repository has the files of the real one (``config.json`` in Neel Nanda's format with
``tokenizer_name``, ``normalization``, ``shortformer_pos`` and training settings;
``model_final.pth``, a TransformerLens-format state dict with its ``attn.mask``/``attn.IGNORE``
buffers) at toy size, and the tokenizer repository has ``tokenizer.json``,
``tokenizer_config.json`` and ``special_tokens_map.json`` of a byte-level BPE tokenizer built with
``tokenizers`` from a tiny corpus. They are written into a Hugging Face cache directory laid out as
``huggingface_hub`` lays it out (``models--ORG--NAME/refs/main``, ``snapshots/REV/``), so
:func:`circuits.pretrained.from_pretrained` loads them through the same code as the real models,
with the hub offline. Tests and the notebooks use them; their weights mean nothing unless
``trained=True`` (a 2-layer attention-only stand-in trained on repeated random tokens, so it has
previous-token and induction heads to find).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from circuits.pretrained.zoo import TOKENIZER, repository

CORPUS = """\
In the beginning the model knew nothing. Then it read the text, and the text repeated itself.
A head that attends to the previous token copies where it came from; a head in the next layer
reads that and attends to the token after the earlier copy of the current one. That is induction.
The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again.
Numbers too: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30.
Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly
normal, thank you very much. def f(x): return x + 1  # code is text as well
"""
BOS = "<|endoftext|>"
# Toy sizes; the real zoo models are d_model 512, 8 heads of 64, d_mlp 2048, n_ctx 1024.
SIZES = {"d_model": 32, "d_head": 8, "n_heads": 4, "d_mlp": 64, "n_ctx": 64}


def _snapshot(cache_dir: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Writes ``files`` as one snapshot of ``repo`` in a hub cache; returns the snapshot dir."""
    revision = hashlib.sha1(b"".join(files[k] for k in sorted(files))).hexdigest()
    root = cache_dir / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot


def tokenizer_files(vocab_size: int = 320) -> dict[str, bytes]:
    """The files of a small byte-level BPE tokenizer in the zoo tokenizer's saved format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": BOS,
        "unk_token": BOS,
        "add_bos_token": False,
        "model_max_length": SIZES["n_ctx"],
    }
    special = {"bos_token": BOS, "eos_token": BOS, "unk_token": BOS}
    return {
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": json.dumps(config, indent=2).encode(),
        "special_tokens_map.json": json.dumps(special, indent=2).encode(),
    }


def neel_config(name: str, d_vocab: int) -> dict[str, Any]:
    """A zoo ``config.json`` for ``name`` at toy size (the real keys, training ones included)."""
    repo = repository(name)
    if repo is None:
        raise ValueError(f"{name!r} is not a zoo name")
    kind = name.split("-")[0]
    layers = int(re.search(r"(\d+)L", repo).group(1))  # type: ignore[union-attr]
    demo = "Shortformer" in repo
    return {
        "n_layers": layers,
        **SIZES,
        "d_vocab": d_vocab,
        "act_fn": "gelu" if kind == "gelu" else "solu_ln",
        "attn_only": kind == "attn",
        "normalization": None if demo else "LN",
        "shortformer_pos": demo,
        "tokenizer_name": TOKENIZER,
        "model_name": repo.split("/")[-1],
        # Training settings the real configs carry; loading must ignore them.
        "lr": 1e-3,
        "batch_size": 32,
        "seed": 0,
        "use_bfloat16": False,
    }


def neel_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s weights as the zoo saves them: TransformerLens names plus the mask buffers."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_ctx = model.cfg.n_ctx
    for layer in range(model.cfg.n_layers):
        state[f"blocks.{layer}.attn.mask"] = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
        state[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-1e5)
    return state


def build(
    cache_dir: str | Path,
    names: tuple[str, ...] = ("attn-only-2l", "gelu-1l", "solu-1l"),
    *,
    seed: int = 0,
    trained: bool = False,
) -> Path:
    """Writes stand-ins of ``names`` and their tokenizer into the hub cache ``cache_dir``.

    Args:
        cache_dir: A Hugging Face hub cache directory (``HF_HUB_CACHE``).
        names: Zoo names to stand in for.
        seed: Seed of the weights.
        trained: Train attention-only 2-layer stand-ins on repeated random tokens first.

    Returns:
        ``cache_dir``.
    """
    import io

    from circuits.config import ModelConfig
    from circuits.model import HookedTransformer
    from circuits.pretrained.zoo import config_from_neel

    cache = Path(cache_dir)
    tok_files = tokenizer_files()
    _snapshot(cache, TOKENIZER, tok_files)
    d_vocab = len(json.loads(tok_files["tokenizer.json"])["model"]["vocab"])
    for i, name in enumerate(names):
        cfg_json = neel_config(name, d_vocab)
        cfg: ModelConfig = config_from_neel(cfg_json).replace(seed=seed + i)
        model = HookedTransformer(cfg)
        _randomise_biases(model, seed + i)
        if trained and cfg.attn_only and cfg.n_layers == 2:
            _train_induction(model, seed + i)
        buffer = io.BytesIO()
        torch.save(neel_state_dict(model), buffer)
        files = {
            "config.json": json.dumps(cfg_json, indent=2).encode(),
            "model_final.pth": buffer.getvalue(),
        }
        repo = repository(name)
        assert repo is not None
        _snapshot(cache, repo, files)
    return cache


# A toy GPT-2 (the real gpt2 is 12 layers of 768; distilgpt2 6).
GPT2_SIZES: dict[str, Any] = {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 64}


def build_gpt2(cache_dir: str | Path, repo: str = "gpt2", *, seed: int = 0) -> Path:
    """Writes a toy ``GPT2LMHeadModel`` saved by ``transformers`` (``save_pretrained``: its
    ``config.json``, ``model.safetensors`` with the tied ``lm_head`` left out, as the hub's
    ``gpt2`` holds them) and a GPT-2-style tokenizer as the hub repository ``repo`` in the
    cache ``cache_dir``. Returns the snapshot directory.
    """
    import tempfile

    from transformers import GPT2Config, GPT2LMHeadModel

    tok_files = tokenizer_files()
    d_vocab = len(json.loads(tok_files["tokenizer.json"])["model"]["vocab"])
    # The hub's gpt2 tokenizer_config.json names no class: config.json's model_type decides.
    tok_files["tokenizer_config.json"] = json.dumps(
        {"model_max_length": GPT2_SIZES["n_positions"]}, indent=2
    ).encode()
    del tok_files["special_tokens_map.json"]
    torch.manual_seed(seed)
    bos = json.loads(tok_files["tokenizer.json"])["model"]["vocab"][BOS]
    config = GPT2Config(vocab_size=d_vocab, bos_token_id=bos, eos_token_id=bos, **GPT2_SIZES)
    hf = GPT2LMHeadModel(config).eval()
    _randomise_biases(hf, seed)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return _snapshot(Path(cache_dir), repo, {**files, **tok_files})


def _randomise_biases(model: Any, seed: int) -> None:
    """Non-zero biases and LayerNorm weights, so parity tests see every parameter at work."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".b", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", ".bias")):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".w") or (name.endswith(".weight") and p.ndim == 1):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))


def _train_induction(model: Any, seed: int) -> None:
    from circuits.tasks import InductionTask
    from circuits.training import TrainConfig, train

    cfg = model.cfg
    task = InductionTask(
        d_vocab=cfg.d_vocab, seq_len=cfg.n_ctx, min_period=8, max_period=cfg.n_ctx // 2, seed=seed
    )
    targets = {"induction": 0.5, "previous_token": 0.5}
    train(
        model,
        task,
        TrainConfig(
            lr=1e-2, steps=2000, eval_every=25, progress=False, target_accuracy=0.9, targets=targets
        ),
    )
    model.eval()
