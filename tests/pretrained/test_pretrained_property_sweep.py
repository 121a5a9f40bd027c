"""Property sweep (issue 20) over pretrained loading, text and interop: hostile names, arguments,
directories (configs with wrong values, truncated, corrupted, unsafe or non-finite weights),
text and models either raise our ``ValueError``/``TypeError`` (one line) or give a working
model with finite outputs; never a traceback from deep inside torch, transformers or the hub.
Valid inputs are drawn alongside hostile ones, so the "right answer" branch runs too (the
known-answer tests are the other files here)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import perturbed_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits import HookedTransformer, ModelConfig
from circuits.interop.bridge import from_bridge, to_bridge
from circuits.interop.gpt2 import from_gpt2, to_gpt2
from circuits.interop.tl3 import from_tl3, to_tl3_state_dict
from circuits.pretrained import from_pretrained, standin

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OURS = (ValueError, TypeError)


def ours_or_ok(call: Callable[[], Any], check: Callable[[Any], None] | None = None) -> None:
    """``call()`` raises one of our one-line errors, or returns something ``check`` accepts."""
    try:
        result = call()
    except OURS as e:
        assert type(e).__module__.startswith(("builtins", "circuits")), repr(e)
        assert "\n" not in str(e).strip(), str(e)
        return
    if check is not None:
        check(result)


def finite_model(model: Any) -> None:
    assert isinstance(model, HookedTransformer)
    ids = torch.arange(min(6, model.cfg.n_ctx))[None] % model.cfg.d_vocab
    with torch.no_grad():
        assert model(ids).isfinite().all()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep_cache")
    standin.build(root, ("attn-only-2l", "gelu-1l", "attn-only-2l-demo"))
    standin.build_gpt2(root, "gpt2")
    return root


def snapshot(cache: Path, repo: str) -> Path:
    base = cache / ("models--" + repo.replace("/", "--"))
    return base / "snapshots" / (base / "refs" / "main").read_text()


# --- from_pretrained: names and arguments ---
NAMES = st.sampled_from(
    ["attn-only-2l", "gelu-1l", "attn-only-2l-demo", "gpt2", "gpt2-small", "GPT2",
     "gpt2-xl", "solu-4l", "foo/..", "../..", "a/b", "", " ", "gpt-7", "/", "~", "x" * 300,
     "NeelNanda/Attn_Only_2L512W_C4_Code", 3, None, b"gpt2", ["gpt2"]]
)  # fmt: skip
KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "fold_ln": st.booleans(),
        "center_writing_weights": st.booleans(),
        "center_unembed": st.booleans(),
        "refactor_factored_attn_matrices": st.booleans(),
        "fold_value_biases": st.booleans(),
        "device": st.sampled_from([None, "cpu", "meta", "nonsense", "cuda:99", 3, "cpu:0"]),
        "dtype": st.sampled_from([torch.float32, "float32", "bf16", "int8", torch.int64, None]),
        "tokenizer": st.sampled_from([None, True, False, "gpt2", 3]),
        "n_devices": st.sampled_from([1, 2, 0, True]),
        "default_prepend_bos": st.sampled_from([None, True, False]),
        "default_padding_side": st.sampled_from([None, "left", "right", "up"]),
        "move_to_device": st.booleans(),
        "first_n_layers": st.sampled_from([None, 1]),
        "n_ctx": st.sampled_from([None, 8]),
        "trust_remote_code": st.sampled_from([False, True]),
        "revision": st.sampled_from([None, "main", "nope"]),
    },
)


@settings(**SETTINGS)  # type: ignore[arg-type]
@given(name=NAMES, kwargs=KWARGS)
def test_from_pretrained_on_hostile_names_and_arguments(
    cache: Path, name: Any, kwargs: dict[str, Any]
) -> None:
    def check(model: Any) -> None:
        if model.W_E.device.type != "meta" and model.W_E.dtype == torch.float32:
            finite_model(model)

    ours_or_ok(lambda: from_pretrained(name, cache_dir=cache, **kwargs), check)


# --- from_pretrained: hostile directories ---
HOSTILE_VALUES = [-1, 0, 10**9, 1e-300, "x", None, [], {}, True, 2.5, float("nan")]
ZOO_KEYS = [
    "n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab", "act_fn", "attn_only",
    "normalization", "shortformer_pos", "d_mlp", "tokenizer_name", "ln_eps",
]  # fmt: skip
GPT2_KEYS = [
    "n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "n_inner",
    "activation_function", "layer_norm_epsilon", "scale_attn_weights", "model_type",
]  # fmt: skip


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo the payload ran >&2",))


def _mutate_weights(path: Path, kind: str, fraction: float) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: int(len(data) * fraction)])
    elif kind == "flip":
        i = int((len(data) - 1) * fraction)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif kind == "delete":
        path.unlink()
    elif kind == "payload":
        with open(path, "wb") as f:
            pickle.dump({"embed.W_E": _Payload()}, f)
    elif kind == "empty":
        path.write_bytes(b"")


@settings(**SETTINGS)  # type: ignore[arg-type]
@given(
    which=st.sampled_from(["attn-only-2l", "gelu-1l", "gpt2"]),
    key=st.integers(0, 100),
    value=st.sampled_from([*HOSTILE_VALUES, "keep"]),
    weights=st.sampled_from(["keep", "truncate", "flip", "delete", "payload", "empty", "nan"]),
    fraction=st.floats(0, 1),
    config=st.sampled_from(["keep", "not json", "a list", "deleted"]),
)
def test_from_pretrained_on_hostile_directories(
    cache: Path,
    which: str,
    key: int,
    value: Any,
    weights: str,
    fraction: float,
    config: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from circuits.pretrained.zoo import repository

    repo = repository(which) or which
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "model"
        shutil.copytree(snapshot(cache, repo), directory)
        cfg_path = directory / "config.json"
        keys = GPT2_KEYS if which == "gpt2" else ZOO_KEYS
        if value != "keep":
            cfg = json.loads(cfg_path.read_text())
            cfg[keys[key % len(keys)]] = value
            cfg_path.write_text(json.dumps(cfg))
        if config == "not json":
            cfg_path.write_text("{not json")
        elif config == "a list":
            cfg_path.write_text("[1, 2]")
        elif config == "deleted":
            cfg_path.unlink()
        weight_file = directory / ("model.safetensors" if which == "gpt2" else "model_final.pth")
        if weights == "nan" and which != "gpt2":
            state = torch.load(weight_file, weights_only=True)
            state["embed.W_E"][0, 0] = float("nan")
            torch.save(state, weight_file)
        elif weights != "keep":
            _mutate_weights(weight_file, weights, fraction)
        ours_or_ok(lambda: from_pretrained(directory, cache_dir=cache), finite_model)
    assert "payload ran" not in capfd.readouterr().err


# --- text ---
TEXTS = st.one_of(
    st.text(max_size=40),
    st.lists(st.text(max_size=20), min_size=1, max_size=3),
    st.sampled_from(["The quick brown fox " * 30, "", [""], [], ["a", 3], 3, None, b"abc",
                     torch.tensor([1, 2]), torch.tensor([[1.5]]), [[1, 2], [3]], [[-1]],
                     torch.zeros(1, 4, dtype=torch.long, device="meta")]),
)  # fmt: skip


@pytest.fixture(scope="module")
def text_model(cache: Path) -> HookedTransformer:
    return from_pretrained("attn-only-2l", cache_dir=cache)


@settings(**SETTINGS)  # type: ignore[arg-type]
@given(
    text=TEXTS,
    method=st.sampled_from(["to_tokens", "to_str_tokens", "to_string", "forward", "tokenize"]),
    prepend_bos=st.sampled_from([None, True, False, "yes"]),
    padding_side=st.sampled_from([None, "left", "right", "middle"]),
)
def test_text_methods_on_hostile_input(
    text_model: HookedTransformer, text: Any, method: str, prepend_bos: Any, padding_side: Any
) -> None:
    import warnings

    m = text_model
    calls: dict[str, Callable[[], Any]] = {
        "to_tokens": lambda: m.to_tokens(text, prepend_bos=prepend_bos, padding_side=padding_side),
        "to_str_tokens": lambda: m.to_str_tokens(text, prepend_bos, padding_side),
        "to_string": lambda: m.to_string(text),
        "forward": lambda: m(text, prepend_bos=prepend_bos, padding_side=padding_side),
        "tokenize": lambda: m.tokenize(text, prepend_bos, padding_side),
    }

    def check(out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            assert out.isfinite().all()
        if method == "to_tokens":
            assert out.ndim == 2 and out.shape[1] <= m.cfg.n_ctx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # truncation warnings are expected
        ours_or_ok(calls[method], check)


# --- interop ---
CONFIG_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "attn_only": st.booleans(),
        "act_fn": st.sampled_from(["gelu", "gelu_new", "relu", "solu_ln", "silu"]),
        "normalization_type": st.sampled_from([None, "LN", "LNPre", "RMS"]),
        "positional_embedding_type": st.sampled_from(["standard", "shortformer", "rotary"]),
        "n_key_value_heads": st.sampled_from([None, 2]),
        "attn_scale": st.sampled_from([-1.0, 1.0, 2.0]),
        "d_vocab_out": st.sampled_from([-1, 30]),
        "d_head": st.sampled_from([-1, 4]),
    },
)


def _model_or_none(fields: dict[str, Any]) -> HookedTransformer | None:
    try:
        model = perturbed_model(**fields)
    except ValueError:
        return None  # a config ModelConfig itself refuses: not this sweep's subject
    if fields.get("zero_b_U", True):
        with torch.no_grad():
            model.unembed.b_U.zero_()
    return model


@settings(**SETTINGS)  # type: ignore[arg-type]
@given(
    fields=CONFIG_FIELDS,
    direction=st.sampled_from(["gpt2", "bridge", "tl3"]),
    junk=st.sampled_from([None, "gpt2", 3, {}, torch.zeros(2)]),
    use_junk=st.integers(0, 4),
)
def test_interop_round_trips_or_refuses(
    fields: dict[str, Any], direction: str, junk: Any, use_junk: int
) -> None:
    model = _model_or_none(fields) if use_junk else junk
    if use_junk and model is None:
        return
    ids = torch.arange(8)[None] % 20

    def from_tl3_with_fields(sd: Any) -> HookedTransformer:
        # What a bare state dict does not say (act_fn, positions, scale, folded norms): passed.
        if not isinstance(model, HookedTransformer):
            return from_tl3(sd)
        c = model.cfg
        return from_tl3(
            sd,
            act_fn=c.act_fn,
            positional_embedding_type=c.positional_embedding_type,
            attn_scale=c.attn_scale,
            normalization_type=c.normalization_type,
        )

    forward = {"gpt2": (to_gpt2, from_gpt2), "bridge": (to_bridge, from_bridge),
               "tl3": (to_tl3_state_dict, from_tl3_with_fields)}[direction]  # fmt: skip

    def round_trip() -> HookedTransformer:
        return forward[1](forward[0](model))  # type: ignore[no-any-return]

    def same(back: HookedTransformer) -> None:
        assert isinstance(model, HookedTransformer)
        with torch.no_grad():
            torch.testing.assert_close(back(ids), model(ids), atol=1e-4, rtol=0)

    ours_or_ok(round_trip, same)
    # and the reverse direction's input check, on whatever we were given
    ours_or_ok(lambda: forward[1](model))


def test_the_sweep_sees_both_branches(cache: Path) -> None:
    """The sweep is not vacuous: valid inputs do load, hostile ones are refused."""
    finite_model(from_pretrained("gpt2", cache_dir=cache))
    with pytest.raises(ValueError):
        from_pretrained("gpt2", cache_dir=cache, device="nonsense")
    assert isinstance(ModelConfig, type)
