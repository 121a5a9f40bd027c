"""The fast path (no hooks attached) and the hooked path compute the same function.

The fast path fuses the Q/K/V projections, skips every hook call and runs attention either with
``scaled_dot_product_attention`` (one thread, or long sequences) or with a single
``baddbmm``-softmax-``bmm`` (several threads); the hooked path spells attention out so each
intermediate can be read or patched. Logits, gradients and short training runs must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS
from helpers import perturbed_model as eval_model

from circuits import HookedTransformer, ModelConfig
from circuits.model import fast_path
from circuits.model.fast_path import EXPLICIT_ATTENTION_MAX_POS
from circuits.tasks import ShiftByOneTask
from circuits.training import TrainConfig, train


def perturbed_model(**overrides: object) -> HookedTransformer:
    """The fast path runs in train mode only (eval mode is the hooked path's answer)."""
    return eval_model(**overrides).train()


ALL_CONFIGS = {
    **CONFIGS,
    "relu_ln": dict(act_fn="relu"),
    "attn_only_shortformer": dict(
        attn_only=True, normalization_type=None, positional_embedding_type="shortformer"
    ),
}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs the test on one thread (fused kernel) and on two (explicit attention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@contextmanager
def hooked(model: HookedTransformer) -> Iterator[list[str]]:
    """Forces the hooked path with identity hooks on every hook point; yields the names seen."""
    seen: list[str] = []

    def record(x: torch.Tensor, hook: object) -> None:
        seen.append(hook.name)  # type: ignore[attr-defined]

    with model.hooks(fwd_hooks=[(lambda name: True, record)]):
        yield seen


@contextmanager
def spying(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts calls of the fast path's attention and of the fused SDPA kernel."""
    calls = {"fast": 0, "sdpa": 0}
    fused, sdpa = fast_path.attention, F.scaled_dot_product_attention

    def fast_spy(*args: torch.Tensor) -> torch.Tensor:
        calls["fast"] += 1
        return fused(*args)

    def sdpa_spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls["sdpa"] += 1
        return sdpa(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fast_path, "attention", fast_spy)
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa_spy)
    yield calls


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_logits_agree(name: str, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    model = perturbed_model(**ALL_CONFIGS[name])
    tokens = torch.randint(
        0, model.cfg.d_vocab, (3, 17), generator=torch.Generator().manual_seed(1)
    )
    n_layers = model.cfg.n_layers
    with torch.no_grad(), spying(monkeypatch) as calls:
        fast = model(tokens)
        assert calls["fast"] == n_layers  # the fast path really ran...
        assert calls["sdpa"] == (n_layers if threads == 1 else 0)  # ...with this kernel
        with hooked(model) as seen:
            slow = model(tokens)
        assert calls["fast"] == n_layers  # ...and not on the hooked path
    assert "blocks.1.attn.hook_pattern" in seen
    assert fast.shape == slow.shape == (3, 17, model.cfg.d_vocab)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_long_sequences_use_the_fused_kernel_on_any_thread_count(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = EXPLICIT_ATTENTION_MAX_POS + 2
    model = perturbed_model(attn_only=True, normalization_type=None, n_ctx=n)
    tokens = torch.randint(0, 20, (2, n), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), spying(monkeypatch) as calls:
        fast = model(tokens)
        with hooked(model):
            slow = model(tokens)
    assert calls == {"fast": 2, "sdpa": 2}
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["attn_only", "full_ln", "shortformer", "gelu_new_result"])
def test_gradients_agree(name: str, threads: int) -> None:
    model = perturbed_model(**ALL_CONFIGS[name])
    tokens = torch.randint(
        0, model.cfg.d_vocab, (4, 20), generator=torch.Generator().manual_seed(2)
    )

    def grads(use_hooks: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        if use_hooks:
            with hooked(model):
                loss = model(tokens, return_type="loss")
        else:
            loss = model(tokens, return_type="loss")
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast, slow = grads(False), grads(True)
    assert fast.keys() == slow.keys() == {n for n, _ in model.named_parameters()}
    for n in fast:
        torch.testing.assert_close(fast[n], slow[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("name", ["attn_only", "full_ln", "shortformer"])
def test_a_hook_on_one_layer_leaves_the_other_layers_fused(
    name: str, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = perturbed_model(**ALL_CONFIGS[name], n_layers=3)
    tokens = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fast = model(tokens)
        with hooked(model):
            _, full_cache = model.run_with_cache(tokens)
        with spying(monkeypatch) as calls:
            mixed, cache = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_pattern")
    assert calls["fast"] == 2  # layers 0 and 2
    assert list(cache.keys()) == ["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(mixed, fast, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        cache["blocks.1.attn.hook_pattern"], full_cache["blocks.1.attn.hook_pattern"]
    )


def test_a_plain_torch_hook_also_selects_the_hooked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = perturbed_model(attn_only=True, normalization_type=None)
    tokens = torch.randint(0, 20, (2, 8))
    seen = []
    handle = model.blocks[0].attn.hook_pattern.register_forward_hook(
        lambda module, args, out: seen.append(out.shape)
    )
    try:
        with torch.no_grad(), spying(monkeypatch) as calls:
            model(tokens)
    finally:
        handle.remove()
    assert seen == [(2, 4, 8, 8)] and calls["fast"] == 1  # layer 0 hooked, layer 1 fast


@pytest.mark.slow
@pytest.mark.parametrize("n_threads", [1, 2])
def test_training_through_either_path_converges_the_same_way(n_threads: int) -> None:
    """Same init and data: the loss curves agree early and both solve the task."""
    task = ShiftByOneTask(d_vocab=16, seq_len=16)
    cfg = TrainConfig(
        steps=150, batch_size=32, lr=1e-2, eval_every=50, progress=False, threads=n_threads
    )
    config = ModelConfig(
        n_layers=1, d_model=32, n_heads=2, n_ctx=16, d_vocab=16, attn_only=True,
        normalization_type=None,
    )  # fmt: skip
    fast_model, hooked_model = HookedTransformer(config), HookedTransformer(config)
    # A permanent identity hook keeps the hooked path on for every training step.
    hooked_model.add_hook("hook_embed", lambda x, hook: x, is_permanent=True)
    fast, slow = train(fast_model, task, cfg), train(hooked_model, task, cfg)
    assert len(fast.losses) == len(slow.losses) == 150
    early = torch.tensor(fast.losses[:20]) - torch.tensor(slow.losses[:20])
    assert early.abs().max() < 1e-4
    for result in (fast, slow):
        assert result.losses[-1] < 0.25 * result.losses[0]
        assert result.final["accuracy"] > 0.9
    assert abs(fast.final["accuracy"] - slow.final["accuracy"]) < 0.05
    # Float rounding differs between the paths, so late curves drift apart, but not far.
    late_fast, late_slow = (sum(r.losses[-20:]) / 20 for r in (fast, slow))
    assert abs(late_fast - late_slow) < 0.1 * max(late_fast, late_slow) + 0.01


@contextmanager
def counting_embeddings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """Records the weight shape of every ``F.embedding`` call: the token embedding's, plus the
    projected table's when layer 0 reads Q, K and V from tables."""
    shapes: list[tuple[int, ...]] = []
    embedding = F.embedding

    def spy(tokens: torch.Tensor, weight: torch.Tensor, *args: object, **kw: object) -> object:
        shapes.append(tuple(weight.shape))
        return embedding(tokens, weight, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "embedding", spy)
    yield shapes


TABLES = dict(attn_only=True, normalization_type=None, n_ctx=32)  # d_vocab 20, 4 heads of 8


def test_layer_zero_projects_from_embedding_tables(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without LayerNorm, layer 0's Q, K and V come from (W_E @ W)[tokens] + (W_pos @ W)[:pos]:
    same logits and same gradients as the hooked path, which projects every position."""
    model = perturbed_model(**TABLES)
    tokens = torch.randint(0, 20, (8, 32), generator=torch.Generator().manual_seed(5))

    def run(use_hooks: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        if use_hooks:
            with hooked(model):
                logits = model(tokens)
        else:
            logits = model(tokens)
        logits.pow(2).mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    with counting_embeddings(monkeypatch) as shapes:
        fast, fast_grads = run(use_hooks=False)
    assert shapes == [(20, 32), (20, 3 * 4 * 8)]  # W_E, then the [d_vocab, 3 * heads * d_head]
    slow, slow_grads = run(use_hooks=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "overrides, batch",
    [
        (dict(TABLES, normalization_type="LN"), 8),  # ln1 sits between embedding and layer 0
        (dict(TABLES, positional_embedding_type="shortformer"), 8),
        (TABLES, 1),  # 20 + 32 table rows against 32 positions: projecting directly is cheaper
    ],
    ids=["layernorm", "shortformer", "few_tokens"],
)
def test_embedding_tables_only_where_exact_and_cheaper(
    overrides: dict, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = perturbed_model(**overrides)
    tokens = torch.randint(0, 20, (batch, 32), generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), counting_embeddings(monkeypatch) as shapes:
        model(tokens)
    assert shapes == [(20, 32)]


def test_a_hook_on_the_embeddings_is_seen_by_layer_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook that changes the positional embedding must reach layer 0: no tables then."""
    model = perturbed_model(**TABLES)
    tokens = torch.randint(0, 20, (8, 32), generator=torch.Generator().manual_seed(8))
    no_positions = perturbed_model(**TABLES)
    with torch.no_grad():
        no_positions.pos_embed.W_pos.zero_()
        expected = no_positions(tokens)
        with counting_embeddings(monkeypatch) as shapes:
            patched = model.run_with_hooks(
                tokens, fwd_hooks=[("hook_pos_embed", lambda x, hook: torch.zeros_like(x))]
            )
    assert shapes == [(20, 32)]
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=1e-5)
