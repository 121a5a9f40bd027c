"""Property sweep (issue 10 acceptance): every public analysis function, fed hostile inputs
(wrong shapes and dtypes, out-of-range ids and layers, mismatched caches, degenerate weights,
non-models), either raises our ``ValueError``/``TypeError`` or returns finite numbers; never an
``IndexError``, ``RuntimeError``, ``AttributeError``, ``KeyError`` from deep inside, and never a
NaN. Valid inputs are drawn alongside hostile ones, so the "right answer" branch runs too (the
known-answer tests live in the other analysis test files).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from analysis_models import random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformer_lens.FactoredMatrix import FactoredMatrix

import circuits.analysis as A
from circuits.tasks import Batch, InductionTask, repeated_tokens

N_CTX, V = 8, 6


def _models() -> dict[str, Any]:
    ln_mlp = random_model(n_layers=2, d_model=8, n_ctx=N_CTX, d_vocab=V, n_heads=2)
    attn = random_model(
        n_layers=2, d_model=8, n_ctx=N_CTX, d_vocab=V, n_heads=2, attn_only=True,
        normalization_type=None,
    )  # fmt: skip
    degenerate = random_model(n_layers=2, d_model=4, d_head=6, n_ctx=N_CTX, d_vocab=V, n_heads=2)
    with torch.no_grad():
        degenerate.blocks[0].attn.W_O.zero_()  # heads that write nothing
        degenerate.blocks[1].attn.W_Q[0].zero_()
    return {"ln_mlp": ln_mlp, "attn_only": attn, "degenerate": degenerate}


MODELS = _models()
NOT_MODELS = ["model", None, 3, torch.zeros(2, 2)]


def _hostile_tokens() -> list[Any]:
    good = torch.randint(0, V, (2, N_CTX), generator=torch.Generator().manual_seed(0))
    return [
        good.float(),
        good.float() + 0.9,
        good.bool(),
        good[None],  # 3-D
        good[:0],  # empty batch
        good[:, :0],  # no positions
        torch.zeros(2, N_CTX + 1, dtype=torch.long),  # longer than n_ctx
        torch.full((2, 4), V),  # id out of range
        torch.full((2, 4), -1),
        torch.tensor(3),  # 0-D
        good.tolist(),
        None,
        "0 1 2",
    ]


HOSTILE_TOKENS = _hostile_tokens()


@st.composite
def valid_tokens(draw: st.DrawFn, batch: int | None = None, pos: int | None = None) -> Any:
    b = batch if batch is not None else draw(st.integers(1, 3))
    p = pos if pos is not None else draw(st.integers(1, N_CTX))
    seed = draw(st.integers(0, 2**16))
    return torch.randint(0, V, (b, p), generator=torch.Generator().manual_seed(seed))


def mix(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``hostile`` one time in four: with several arguments, all-valid calls stay common."""
    return st.integers(0, 3).flatmap(lambda i: hostile if i == 0 else valid)


def pick(valid: list[Any], hostile: list[Any]) -> st.SearchStrategy[Any]:
    return mix(st.sampled_from(valid), st.sampled_from(hostile))


def tokens_st(**kw: Any) -> st.SearchStrategy[Any]:
    return mix(valid_tokens(**kw), st.sampled_from(HOSTILE_TOKENS))


def model_st() -> st.SearchStrategy[Any]:
    return mix(st.sampled_from(list(MODELS.values())), st.sampled_from(NOT_MODELS))


INTS = mix(st.integers(0, 1), st.sampled_from([-1, 2, 4, 1.0, 0.5, True, None, "1"]))
OPT_INTS = st.one_of(st.none(), INTS)


@st.composite
def cache_for(draw: st.DrawFn, model: Any, tokens: Any) -> Any:
    """None, the cache of ``tokens``, or a mismatched / filtered / non-cache object."""
    kind = draw(st.sampled_from(["none", "own", "other", "batch1", "filtered", "junk"]))
    if kind == "none" or (
        not isinstance(model, A.protocol.HookedModel.__class__)
        and not hasattr(model, "run_with_cache")
    ):
        return None
    ok = isinstance(tokens, torch.Tensor) and tokens.ndim == 2 and tokens.numel() > 0
    ok = ok and tokens.dtype == torch.long and int(tokens.min()) >= 0
    ok = ok and int(tokens.max()) < V and tokens.shape[1] <= N_CTX
    if kind == "junk" or not ok:
        return draw(st.sampled_from([{}, "cache", 3, {"hook_embed": 1}]))
    if kind == "own":
        return model.run_with_cache(tokens)[1]
    if kind == "other":
        return model.run_with_cache((tokens + 1) % V)[1]
    if kind == "batch1":
        return model.run_with_cache(tokens[:1])[1]
    return model.run_with_cache(tokens, names_filter=lambda n: "resid_pre" in n)[1]


@functools.cache
def _metric_st() -> st.SearchStrategy[Any]:
    return pick(
        [lambda logits: logits[..., 0].mean(), A.masked_loss(torch.zeros(2, N_CTX).long())],
        [
            lambda logits: logits.mean(-1),  # not a scalar
            lambda logits: torch.tensor(float("nan")),
            "loss",
            A.masked_loss(torch.full((2, N_CTX), V + 3)),  # ids out of the logits' range
        ],
    )


HEADS = st.lists(
    mix(
        st.one_of(st.tuples(st.integers(0, 1), st.integers(0, 1)), st.sampled_from(["L1H0"])),
        st.sampled_from([(2, 0), (0, -1), "L9H0", "bad", "L1H", 3, (1, 0, 0), (0.0, 1)]),
    ),
    max_size=3,
)


@functools.cache
def _probe_st() -> st.SearchStrategy[Any]:
    good = repeated_tokens(2, N_CTX // 2, V, seed=1)
    return pick(
        [None, good],
        [
            dataclasses.replace(good, repeat_length=None),
            dataclasses.replace(good, repeat_length=N_CTX),
            dataclasses.replace(good, repeat_length=2.0),
            dataclasses.replace(good, targets=good.targets + V),
            dataclasses.replace(good, targets=good.targets.float()),
            dataclasses.replace(good, mask=good.mask[:1]),
            dataclasses.replace(good, tokens=good.tokens - 1),
            Batch(torch.zeros(2, N_CTX + 2, dtype=torch.long), good.targets, good.mask, 3),
            "probe",
        ],
    )


@functools.cache
def _patterns_st() -> st.SearchStrategy[Any]:
    good = A.attention_patterns(MODELS["ln_mlp"], torch.arange(N_CTX)[None] % V)
    hostile = [good[0], good.long(), good * torch.nan, good[..., :0, :0], good[..., :3], "p"]
    return pick([good, good[:1, :1]], hostile)


@functools.cache
def _circuit_st() -> st.SearchStrategy[Any]:
    m = MODELS["ln_mlp"]
    return pick(
        [A.full_ov_circuit(m, 1, 0), A.ov_circuit(m), A.qk_circuit(m, 0, 1)],
        [
            FactoredMatrix(torch.randn(5, 2), torch.randn(2, 3)),  # not square
            torch.eye(3),
            None,
        ],
    )


@functools.cache
def _lens_result() -> A.LensResult:
    return A.logit_lens(MODELS["ln_mlp"], torch.arange(N_CTX)[None] % V)


@functools.cache
def _attribution() -> A.LogitAttribution:
    t = torch.arange(N_CTX)[None] % V
    return A.direct_logit_attribution(MODELS["ln_mlp"], t, t)


@functools.cache
def _composition() -> A.CompositionScores:
    return A.all_composition_scores(MODELS["ln_mlp"], n_samples=4)


class _Task:
    """A task whose batches may not fit the model."""

    def __init__(self, d_vocab: int):
        self.d_vocab = d_vocab

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        t = torch.randint(0, self.d_vocab, (batch_size, N_CTX), generator=generator)
        return Batch(t, t, torch.ones_like(t, dtype=torch.bool))


# Each case draws its arguments (valid and hostile mixed) and makes one call.
Case = Callable[[st.DataObject], Any]


def _in_threads(threads: Any) -> int:
    with A.torch_threads(threads):
        return torch.get_num_threads()


def _model_tokens(data: st.DataObject) -> tuple[Any, Any]:
    return data.draw(model_st()), data.draw(tokens_st())


CASES: dict[str, Case] = {
    "ablation_effects": lambda d: A.ablation_effects(
        d.draw(model_st()),
        d.draw(tokens_st(batch=2, pos=N_CTX)),
        d.draw(_metric_st()),
        d.draw(pick(["zero", "mean"], ["other", None])),
        d.draw(st.one_of(st.none(), tokens_st())),
        d.draw(st.booleans()),
    ),
    "ablation_hooks": lambda d: A.ablation_hooks(
        *_model_tokens(d),
        d.draw(HEADS),
        d.draw(pick(["zero", "mean"], [0, "x"])),
        d.draw(st.one_of(st.none(), tokens_st())),
        d.draw(st.booleans()),
    ),
    "run_with_ablation": lambda d: A.run_with_ablation(
        *_model_tokens(d),
        d.draw(HEADS),
        d.draw(st.sampled_from(["zero", "mean"])),
        d.draw(st.one_of(st.none(), tokens_st())),
    ),
    "patch_heads": lambda d: A.patch_heads(
        d.draw(model_st()),
        d.draw(tokens_st()),
        d.draw(tokens_st()),
        d.draw(_metric_st()),
        d.draw(pick(["noising", "denoising"], ["both"])),
    ),
    "masked_loss": lambda d: A.masked_loss(
        d.draw(tokens_st(batch=2, pos=N_CTX)),
        d.draw(pick([None, torch.ones(2, N_CTX)], [torch.ones(3, 3), "m"])),
    )(d.draw(pick([torch.randn(2, N_CTX, V)], [torch.randn(2, 3, V), "logits"]))),
    "decompose_resid": lambda d: _with_cache(d, lambda m, t, c: A.decompose_resid(m, t, c)),
    "direct_logit_attribution": lambda d: _with_cache(
        d,
        lambda m, t, c: A.direct_logit_attribution(
            m, t, d.draw(tokens_st()), d.draw(st.one_of(st.none(), tokens_st())), c
        ),
    ),
    "LogitAttribution": lambda d: _attribution_methods(d),
    "Decomposition": lambda d: A.decompose_resid(MODELS["attn_only"], d.draw(tokens_st())),
    "circuit_stats": lambda d: A.circuit_stats(d.draw(model_st()), d.draw(st.booleans())),
    "CircuitStats": lambda d: A.circuit_stats(d.draw(model_st())),
    "copying_score": lambda d: A.copying_score(d.draw(_circuit_st())),
    "diagonal_accuracy": lambda d: A.diagonal_accuracy(
        d.draw(_circuit_st()), d.draw(INTS), d.draw(pick([1, 2], [0, -1, 1.5]))
    ),
    "full_ov_circuit": lambda d: _circuit_call(d, A.full_ov_circuit),
    "full_qk_circuit": lambda d: _circuit_call(d, A.full_qk_circuit),
    "full_ov_spectrum": lambda d: _circuit_call(d, A.full_ov_spectrum),
    "full_qk_spectrum": lambda d: _circuit_call(d, A.full_qk_spectrum),
    "AblationRun": lambda d: A.run_with_ablation(*_model_tokens(d), d.draw(HEADS)).logits,
    "torch_threads": lambda d: _in_threads(d.draw(pick([None, 1, 2], [0, -1, 1.5, "2", True]))),
    "ov_circuit": lambda d: _circuit_call(d, A.ov_circuit),
    "qk_circuit": lambda d: _circuit_call(d, A.qk_circuit),
    "positional_qk_circuit": lambda d: _circuit_call(d, A.positional_qk_circuit),
    "positional_attention": lambda d: A.positional_attention(
        d.draw(model_st()), d.draw(INTS), d.draw(INTS), d.draw(st.booleans())
    ),
    "k_composition_circuit": lambda d: A.k_composition_circuit(
        d.draw(model_st()), d.draw(INTS), d.draw(INTS), d.draw(INTS), d.draw(INTS)
    ),
    "composition_scores": lambda d: A.composition_scores(
        d.draw(model_st()), d.draw(pick(["Q", "K", "V"], ["X", 1])), d.draw(st.booleans())
    ),
    "all_composition_scores": lambda d: A.all_composition_scores(
        d.draw(model_st()), d.draw(pick([2, 4], [1, 0, 2.5])), d.draw(INTS)
    ),
    "random_baseline": lambda d: A.random_baseline(
        d.draw(pick([4, 8], [0, -1, 4.0])),
        d.draw(pick([2, 12], [0, 2.0])),
        d.draw(pick([2, 3], [1, 0])),
        d.draw(pick([0, 1], [-1, 0.5])),
    ),
    "CompositionScores": lambda d: _composition_methods(d),
    "attention_patterns": lambda d: A.attention_patterns(*_model_tokens(d)),
    "previous_token_score": lambda d: A.previous_token_score(d.draw(_patterns_st())),
    "current_token_score": lambda d: A.current_token_score(d.draw(_patterns_st())),
    "first_token_score": lambda d: A.first_token_score(d.draw(_patterns_st())),
    "induction_score": lambda d: A.induction_score(d.draw(_patterns_st()), d.draw(INTS)),
    "duplicate_token_score": lambda d: A.duplicate_token_score(
        d.draw(_patterns_st()), d.draw(INTS)
    ),
    "copying_score_activations": lambda d: _with_cache(
        d,
        lambda m, t, c: A.copying_score_activations(
            m,
            t,
            c,
            d.draw(st.sampled_from([None, torch.ones(2, N_CTX), torch.zeros(2, N_CTX)])),
            d.draw(pick(["share", "top1"], ["mean"])),
        ),
    ),
    "evaluate": lambda d: A.evaluate(d.draw(model_st()), d.draw(_probe_st())),
    "head_scores": lambda d: A.head_scores(d.draw(model_st()), d.draw(_probe_st())),
    "find_heads": lambda d: A.find_heads(
        d.draw(model_st()),
        d.draw(pick(["induction", "previous_token"], ["nope", 3])),
        d.draw(pick([0.4, 0.0], [float("nan"), "0.4", True])),
        d.draw(_probe_st()),
        d.draw(pick([None], [{}, {"induction": torch.zeros(5, 5)}, "s"])),
    ),
    "loss_by_position": lambda d: _loss_by_position(d),
    "in_context_learning_score": lambda d: A.in_context_learning_score(
        *_model_tokens(d),
        d.draw(OPT_INTS),
        d.draw(OPT_INTS),
        d.draw(st.one_of(st.none(), tokens_st())),
        d.draw(st.sampled_from([None, torch.ones(2, N_CTX), torch.zeros(2, N_CTX)])),
    ),
    "logit_lens": lambda d: _with_cache(
        d,
        lambda m, t, c: A.logit_lens(
            m,
            t,
            d.draw(pick([False, True], [1])),
            d.draw(pick(["recompute", "cached"], ["x"])),
            c,
        ),
    ),
    "accumulated_resid": lambda d: _with_cache(
        d, lambda m, t, c: A.accumulated_resid(m, c, d.draw(st.booleans()))
    ),
    "LensResult": lambda d: _lens_methods(d),
    "TunedLens": lambda d: _tuned_lens(d),
    "get_weights": lambda d: A.get_weights(d.draw(model_st()), d.draw(st.booleans())),
    "head_name": lambda d: A.head_name(d.draw(INTS), d.draw(INTS)),
    "parse_head_name": lambda d: A.parse_head_name(
        d.draw(pick(["L1H0", "L12H3"], ["L1", "l1h0", "L-1H0", 3, None]))
    ),
    "HookedModel": lambda d: A.protocol.check_model(d.draw(model_st())),
    "apply_final_ln": lambda d: _with_cache(
        d, lambda m, t, c: A.apply_final_ln(m, d.draw(_resid_st(t)), c)
    ),
    "full_final_ln": lambda d: A.full_final_ln(
        d.draw(model_st()), d.draw(pick([torch.randn(3, 8)], [torch.randn(3, 5), "x", None]))
    ),
    "get_score": lambda d: A.get_score(d.draw(pick(["induction", "copying"], ["nope", 3]))),
    "score_names": lambda d: A.score_names(d.draw(st.booleans())),
    "registered_scores": lambda d: A.registered_scores(),
    "unregister_score": lambda d: A.unregister_score(d.draw(st.sampled_from(["nope", 3, None]))),
    "register_score": lambda d: _register(d),
    "HeadScore": lambda d: _head_score(d),
    "ScoreContext": lambda d: _with_cache(
        d, lambda m, t, c: A.ScoreContext(m, repeated_tokens(1, 4, V), c, torch.zeros(1)).patterns
    ),
}


def _resid_st(tokens: Any) -> st.SearchStrategy[Any]:
    shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else (2, 3)
    return pick([torch.randn(*shape, 8), torch.randn(4, *shape, 8)], [torch.randn(8), "x"])


HOSTILE_FIELDS = {
    "label": [3],
    "probe": ["sometimes"],
    "hooks": ["attn.hook_pattern", [3]],
    "min_layer": [-1, 0.5],
    "direction": ["up"],
    "bounds": [(1.0, 0.0), "unit"],
}


def _score_fields(data: st.DataObject) -> dict[str, Any]:
    name = data.draw(st.sampled_from(sorted(HOSTILE_FIELDS)))
    return (
        {name: data.draw(st.sampled_from(HOSTILE_FIELDS[name]))} if data.draw(st.booleans()) else {}
    )


def _register(data: st.DataObject) -> Any:
    name = data.draw(pick(["sweep_score"], ["induction", "accuracy", "a b", 3]))
    fn = data.draw(pick([lambda c: c.patterns[..., 0, 0].mean(1)], [None, "f"]))
    spec = A.register_score(name, fn, **_score_fields(data))
    A.unregister_score(name)  # only reached for a new, valid score
    return spec.best(torch.zeros(2, 2))


def _head_score(data: st.DataObject) -> Any:
    spec = A.HeadScore("sweep", lambda c: c, **_score_fields(data))
    scores = data.draw(pick([torch.rand(2, 3)], [torch.rand(0, 3), "s"]))
    return spec.best(scores), spec.met(scores, 0.5), spec.top_head(scores)


def _with_cache(data: st.DataObject, call: Callable[[Any, Any, Any], Any]) -> Any:
    model, tokens = _model_tokens(data)
    return call(model, tokens, data.draw(cache_for(model, tokens)))


def _circuit_call(data: st.DataObject, fn: Callable[..., Any]) -> Any:
    return fn(
        data.draw(model_st()), data.draw(OPT_INTS), data.draw(OPT_INTS), data.draw(st.booleans())
    )


def _attribution_methods(data: st.DataObject) -> Any:
    attr = _attribution()
    if data.draw(st.booleans()):
        return attr[data.draw(pick(["L1H0", "embed"], ["L7H7", 3, None]))]
    return attr.per_head(data.draw(INTS), data.draw(INTS))


def _composition_methods(data: st.DataObject) -> Any:
    scores = _composition()
    mode = data.draw(st.sampled_from(["Q", "K", "V", "X"]))
    which = data.draw(st.sampled_from(["raw", "excess", "top_sources"]))
    if which == "top_sources":
        return scores.top_sources(mode, data.draw(INTS), data.draw(INTS), data.draw(INTS))
    return getattr(scores, which)(mode)


def _lens_methods(data: st.DataObject) -> Any:
    lens = _lens_result()
    which = data.draw(st.sampled_from(["top_k", "target_prob", "target_rank", "kl_to_final"]))
    if which == "top_k":
        return lens.top_k(data.draw(st.one_of(INTS, st.sampled_from([V, V + 1, 100]))))
    if which == "kl_to_final":
        return lens.kl_to_final()
    targets = data.draw(tokens_st(batch=1, pos=N_CTX))
    return getattr(lens, which)(targets)


def _tuned_lens(data: st.DataObject) -> Any:
    which = data.draw(st.sampled_from(["init", "lens", "fit", "translate"]))
    if which == "init":
        return A.TunedLens(data.draw(INTS), data.draw(pick([8], [0, -2, 8.0])))
    model = data.draw(model_st())
    lens = A.TunedLens(2, data.draw(pick([8], [4])))
    if which == "translate":
        return lens.translate(
            data.draw(st.sampled_from([torch.randn(2, 3, 8), torch.randn(3, 8), "r"]))
        )
    if which == "lens":
        tokens = data.draw(tokens_st())
        return lens.lens(model, tokens, data.draw(cache_for(model, tokens)))
    task = data.draw(pick([_Task(V)], [_Task(V + 5), "task"]))
    return lens.fit(
        model,
        task,
        data.draw(pick([1], [0, 1.5])),
        2,
        data.draw(pick([1e-2], [-1.0, float("nan")])),
    )


def _loss_by_position(data: st.DataObject) -> Any:
    model, tokens = _model_tokens(data)
    targets = data.draw(st.one_of(st.none(), tokens_st()))
    mask = data.draw(pick([None, torch.ones(2, N_CTX), torch.zeros(2, N_CTX)], ["m"]))
    out = A.loss_by_position(model, tokens, targets, mask)
    # Documented: NaN exactly where the mask counts no sequence; finite everywhere else.
    counted = torch.as_tensor(mask).bool()
    counted = (counted[:, :-1] if targets is None else counted).any(0) if mask is not None else None
    if counted is not None:
        assert torch.equal(out.isnan(), ~counted), (out, counted)
        return out[counted]
    return out


def _assert_finite(value: Any, where: str = "result") -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            assert bool(torch.isfinite(value).all()), f"non-finite {where}: {value}"
    elif isinstance(value, float):
        assert value == value and abs(value) != float("inf"), f"non-finite {where}: {value}"
    elif isinstance(value, FactoredMatrix):
        _assert_finite(value.A, where + ".A")
        _assert_finite(value.B, where + ".B")
    elif isinstance(value, dict):
        for k, v in value.items():
            _assert_finite(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _assert_finite(v, f"{where}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _assert_finite(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, torch.nn.Module):
        for name, p in value.named_parameters():
            _assert_finite(p.detach(), f"{where}.{name}")


def test_every_public_analysis_name_is_swept():
    # Classes are swept through their methods (or the functions that build them).
    assert set(A.__all__) - set(CASES) == set(), "add a case for each new public name"


@pytest.mark.parametrize("name", sorted(CASES))
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_inputs_give_our_errors_or_finite_answers(name: str, data: st.DataObject) -> None:
    try:
        result = CASES[name](data)
    except (ValueError, TypeError) as e:
        assert str(e), f"{name}: empty error message"
        # Ours: not a torch/Python internals message about indexing or unpacking.
        for internal in ("index out of range", "not enough values to unpack", "object is not"):
            assert internal not in str(e), f"{name}: {type(e).__name__}: {e}"
        return
    _assert_finite(result, name)


def test_sweep_reaches_the_happy_path():
    """The sweep's strategies include valid calls: check a few give the known-good answer."""
    model = MODELS["ln_mlp"]
    t = torch.arange(N_CTX)[None] % V
    _, cache = model.run_with_cache(t)
    torch.testing.assert_close(
        A.logit_lens(model, t, cache=cache).logits[-1], model(t), atol=1e-5, rtol=1e-5
    )
    assert InductionTask  # the task module stays importable alongside the analysis
