"""Bad input, tried systematically (hypothesis): a ValueError or TypeError that names the
argument, never an IndexError from deep inside torch and never a quietly wrong answer.

Each property has a positive control next to it (valid input of the same shape works), so a
check that rejected everything would fail too.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import perturbed_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from circuits import HookedTransformer, ModelConfig, checkpoint
from circuits.analysis.ablation import parse_heads, run_with_ablation
from circuits.analysis.attribution import decompose_resid, direct_logit_attribution
from circuits.analysis.circuits import full_ov_circuit, k_composition_circuit, ov_circuit
from circuits.analysis.head_scores import attention_patterns
from circuits.checkpoint import CheckpointError
from circuits.files import FORMAT, write_files
from circuits.tasks import InductionTask, ShiftByOneTask
from circuits.training import TrainConfig

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MODEL = perturbed_model()  # 2 layers, 4 heads, d_vocab 20, n_ctx 24
V, N, L, H = MODEL.cfg.d_vocab, MODEL.cfg.n_ctx, MODEL.cfg.n_layers, MODEL.cfg.n_heads


def raises_naming(fn: Any, *names: str) -> None:
    """``fn()`` raises ValueError/TypeError whose message names one of ``names``."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    assert any(n in str(info.value) for n in names), f"{names} not in: {info.value}"


# --- tokens ---
TOKEN_ENTRY_POINTS = {
    "forward": lambda t: MODEL(t),
    "loss": lambda t: MODEL(t, return_type="loss"),
    "run_with_cache": lambda t: MODEL.run_with_cache(t),
    "to_tokens": lambda t: MODEL.to_tokens(t),
    "attention_patterns": lambda t: attention_patterns(MODEL, t),
    "decompose_resid": lambda t: decompose_resid(MODEL, t),
    "run_with_ablation": lambda t: run_with_ablation(MODEL, t, [(0, 0)]),
}
entry_points = st.sampled_from(sorted(TOKEN_ENTRY_POINTS))


@st.composite
def valid_tokens(draw: st.DrawFn) -> torch.Tensor:
    batch, pos = draw(st.integers(1, 3)), draw(st.integers(1, N))
    seed = draw(st.integers(0, 2**31))
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(seed))


@given(entry_points, valid_tokens(), st.sampled_from([torch.int64, torch.int32, torch.int16]))
@SETTINGS
def test_valid_tokens_work(entry: str, tokens: torch.Tensor, dtype: torch.dtype) -> None:
    with torch.no_grad():
        if entry == "loss" and tokens.shape[1] < 2:  # no next token to predict: refused, not NaN
            raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](tokens.to(dtype)), "2 positions")
            return
        TOKEN_ENTRY_POINTS[entry](tokens.to(dtype))


@given(entry_points, valid_tokens(), st.sampled_from([torch.float32, torch.float64, torch.bool]))
@SETTINGS
def test_non_integer_tokens(entry: str, tokens: torch.Tensor, dtype: torch.dtype) -> None:
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](tokens.to(dtype)), "tokens")


@given(entry_points, valid_tokens(), st.sampled_from([0, 3, 4]))
@SETTINGS
def test_wrong_rank(entry: str, tokens: torch.Tensor, rank: int) -> None:
    bad = tokens[0, 0] if rank == 0 else tokens.reshape(1, *tokens.shape, *[1] * (rank - 3))
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](bad), "tokens")


@given(entry_points, valid_tokens(), st.data())
@SETTINGS
def test_ids_out_of_range(entry: str, tokens: torch.Tensor, data: st.DataObject) -> None:
    bad_id = data.draw(st.one_of(st.integers(-(2**40), -1), st.integers(V, 2**40)))
    b = data.draw(st.integers(0, tokens.shape[0] - 1))
    p = data.draw(st.integers(0, tokens.shape[1] - 1))
    tokens = tokens.clone()
    tokens[b, p] = bad_id
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](tokens), "tokens")


@given(entry_points, st.integers(N + 1, 4 * N))
@SETTINGS
def test_too_long(entry: str, pos: int) -> None:
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](torch.zeros(2, pos, dtype=torch.long)), "n_ctx")


@given(entry_points, st.sampled_from([(0, 5), (3, 0), (0, 0), (0,)]))
@SETTINGS
def test_empty(entry: str, shape: tuple[int, ...]) -> None:
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry](torch.zeros(shape, dtype=torch.long)), "tokens")


@pytest.mark.parametrize("entry", sorted(set(TOKEN_ENTRY_POINTS) - {"to_tokens"}))
def test_not_a_tensor(entry: str) -> None:
    raises_naming(lambda: TOKEN_ENTRY_POINTS[entry]([[1, 2, 3]]), "tokens", "Tensor")


def test_strings_are_refused_by_to_tokens() -> None:
    raises_naming(lambda: MODEL.to_tokens("hello"), "token ids")


@given(valid_tokens(), st.data())
@SETTINGS
def test_bad_targets(tokens: torch.Tensor, data: st.DataObject) -> None:
    targets = tokens.clone()
    targets[0, 0] = data.draw(st.one_of(st.integers(-100, -1), st.integers(V, 10**6)))
    raises_naming(lambda: direct_logit_attribution(MODEL, tokens, targets), "targets")
    raises_naming(lambda: direct_logit_attribution(MODEL, tokens, tokens[:, :0]), "targets")


# --- layer and head indices ---
bad_index = st.one_of(
    st.integers(-(10**6), -1), st.integers(4, 10**6), st.booleans(), st.floats(0, 1)
)


@given(st.integers(0, L - 1), st.integers(0, H - 1))
@SETTINGS
def test_valid_heads_work(layer: int, head: int) -> None:
    assert ov_circuit(MODEL, layer, head).AB.shape == (MODEL.cfg.d_model, MODEL.cfg.d_model)
    assert full_ov_circuit(MODEL, layer).AB.shape == (H, V, V)
    assert parse_heads(MODEL, [f"L{layer}H{head}", (layer, head)]) == [(layer, head)] * 2


@given(bad_index, st.integers(0, H - 1))
@SETTINGS
def test_bad_layer(layer: Any, head: int) -> None:
    for fn in (
        lambda: ov_circuit(MODEL, layer, head),
        lambda: full_ov_circuit(MODEL, layer),
        lambda: parse_heads(MODEL, [(layer, head)]),
        lambda: k_composition_circuit(MODEL, 0, 0, layer, head),
        lambda: run_with_ablation(MODEL, torch.zeros(1, 4, dtype=torch.long), [(layer, head)]),
    ):
        raises_naming(fn, "layer")


@given(st.integers(0, L - 1), bad_index)
@SETTINGS
def test_bad_head(layer: int, head: Any) -> None:
    for fn in (
        lambda: ov_circuit(MODEL, layer, head),
        lambda: parse_heads(MODEL, [(layer, head)]),
        lambda: k_composition_circuit(MODEL, 0, head, 1, 0),
    ):
        raises_naming(fn, "head")
    raises_naming(lambda: parse_heads(MODEL, [f"L{layer}H{H + 3}"]), "head")


def test_unparseable_head_name() -> None:
    raises_naming(lambda: parse_heads(MODEL, ["layer1head0"]), "heads")


# --- configs ---
SIZES = ("n_layers", "d_model", "n_ctx", "d_vocab", "n_heads")
VALID = dict(n_layers=1, d_model=8, n_ctx=4, d_vocab=5, n_heads=2)


@given(st.sampled_from((*SIZES, "d_head", "d_mlp", "d_vocab_out")), st.integers(-(10**6), 0))
@SETTINGS
def test_non_positive_sizes(name: str, value: int) -> None:
    if name == "d_head" and value == -1:  # -1 is the "derive it" sentinel
        value = 0
    if name == "d_vocab_out" and value == -1:
        value = 0
    raises_naming(lambda: ModelConfig(**{**VALID, name: value}), name)


@given(st.sampled_from(SIZES), st.one_of(st.floats(), st.text(max_size=3), st.booleans()))
@SETTINGS
def test_non_integer_sizes(name: str, value: Any) -> None:
    raises_naming(lambda: ModelConfig(**{**VALID, name: value}), name)


@given(st.integers(1, 16), st.integers(1, 64))
@SETTINGS
def test_d_model_vs_heads(n_heads: int, d_model: int) -> None:
    make = lambda: ModelConfig(**{**VALID, "n_heads": n_heads, "d_model": d_model})
    if d_model % n_heads:
        raises_naming(make, "d_model", "n_heads")
    else:
        assert make().d_head * n_heads == d_model


@given(st.sampled_from(["act_fn", "normalization_type", "positional_embedding_type"]), st.text())
@SETTINGS
def test_unknown_names(field: str, value: str) -> None:
    valid = {
        "act_fn": ("gelu", "gelu_new", "relu"),
        "normalization_type": ("LN",),
        "positional_embedding_type": ("standard", "shortformer"),
    }
    assume(value not in valid[field])
    raises_naming(lambda: ModelConfig(**{**VALID, field: value}), field)


@given(st.text(min_size=1).filter(lambda k: k not in ModelConfig.__dataclass_fields__))
@SETTINGS
def test_unknown_config_fields(key: str) -> None:
    raises_naming(lambda: ModelConfig.from_dict({**VALID, key: 1}), "unknown model config field")


def test_attn_only_contradiction() -> None:
    raises_naming(lambda: ModelConfig(**VALID, attn_only=True, d_mlp=16), "d_mlp")


def test_model_needs_a_config() -> None:
    raises_naming(lambda: HookedTransformer(VALID), "cfg")  # type: ignore[arg-type]


@given(
    st.sampled_from(["steps", "batch_size", "eval_every", "probe_size", "checkpoint_every"]),
    st.integers(-(10**6), 0),
)
@SETTINGS
def test_train_config(name: str, value: int) -> None:
    extra = {"checkpoint_dir": "x"} if name == "checkpoint_every" else {}
    raises_naming(lambda: TrainConfig(**{name: value, **extra}), name)


@given(st.one_of(st.floats(max_value=0), st.just(float("nan")), st.just(float("inf"))))
@SETTINGS
def test_learning_rate(lr: float) -> None:
    raises_naming(lambda: TrainConfig(lr=lr), "lr")


@given(st.sampled_from(["d_vocab", "seq_len"]), st.integers(-100, 1))
@SETTINGS
def test_task_sizes(name: str, value: int) -> None:
    raises_naming(lambda: ShiftByOneTask(**{name: value}), name)
    raises_naming(lambda: InductionTask(**{name: value}), name, "max_period")


@given(st.integers(-100, 0))
@SETTINGS
def test_task_batch_size(batch_size: int) -> None:
    raises_naming(lambda: ShiftByOneTask().sample(batch_size, torch.Generator()), "batch_size")


# --- checkpoints: arbitrary bytes where a checkpoint should be ---
def forge(path: Path, files: dict[str, bytes]) -> Path:
    meta = {
        "format": FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "sha256": {name: checkpoint.sha256(data) for name, data in files.items()},
    }
    return write_files(path, {**files, "metadata.json": json.dumps(meta).encode()}, overwrite=True)


@given(st.binary(max_size=2000))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_garbage_weights_with_a_valid_hash(tmp_path: Path, data: bytes) -> None:
    config = json.dumps(MODEL.cfg.to_dict()).encode()
    path = forge(tmp_path / "ck", {"model.safetensors": data, "config.json": config})
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        checkpoint.load(path, HookedTransformer)


@given(st.one_of(st.binary(max_size=200), st.from_type(dict).map(lambda d: json.dumps(d).encode())))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_garbage_config_with_a_valid_hash(tmp_path: Path, data: bytes) -> None:
    path = forge(
        tmp_path / "ck", {"model.safetensors": save(dict(MODEL.state_dict())), "config.json": data}
    )
    with pytest.raises(CheckpointError, match=r"config\.json"):
        checkpoint.load(path, HookedTransformer)


@given(st.binary(max_size=300))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_garbage_metadata(tmp_path: Path, data: bytes) -> None:
    path = MODEL.save(Path(tempfile.mkdtemp(dir=tmp_path)) / "ck")
    (path / "metadata.json").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"metadata\.json"):
        checkpoint.load(path, HookedTransformer)
