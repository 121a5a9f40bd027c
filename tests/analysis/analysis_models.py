"""Models for analysis tests: hand-built heads with known answers, a bridge twin, random models.

Hand-built layout of the residual stream (one-hot subspaces, so every answer is known):
tokens ``[0, V)``, positions ``[V, V + N)``, the previous-token head's output ``[V + N, 2V + N)``,
then two junk subspaces J1 (written by L0H1) and J2 (read by L1H1) that nothing else touches.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits import HookedTransformer, ModelConfig

V, N, J = 8, 16, 4  # vocabulary, context, junk width
SHARP = 40.0  # query scale: attention ~1 on the intended key


def _zero(model: HookedTransformer) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()


def _layout(model: HookedTransformer) -> None:
    with torch.no_grad():
        model.embed.W_E[:, :V] = torch.eye(V)
        model.pos_embed.W_pos[:, V : V + N] = torch.eye(N)
        model.unembed.W_U[:V, :V] = torch.eye(V)


def _previous_token_qk(attn: Any, head: int) -> None:
    """Query at position p matches key at position p - 1 (positional subspace)."""
    for p in range(N):
        attn.W_Q[head, V + p, p] = SHARP
        if p + 1 < N:
            attn.W_K[head, V + p, p + 1] = 1.0


def make_prev_copy_model() -> HookedTransformer:
    """One layer, two heads. L0H0 attends to the previous position and copies its token to the
    logits; L0H1 is random in the junk subspace."""
    cfg = ModelConfig(
        n_layers=1, d_model=2 * V + N + 2 * J, d_head=N, n_ctx=N, d_vocab=V, n_heads=2,
        attn_only=True, normalization_type=None,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    _zero(model)
    _layout(model)
    a = model.blocks[0].attn
    with torch.no_grad():
        _previous_token_qk(a, 0)
        a.W_V[0, :V, :V] = torch.eye(V)
        a.W_O[0, :V, :V] = torch.eye(V)
        _junk_head(a, 1, write=slice(2 * V + N, 2 * V + N + J), seed=1)
    return model.eval()


def _junk_head(attn: Any, head: int, write: slice, seed: int, read: slice | None = None) -> None:
    gen = torch.Generator().manual_seed(seed)
    rows = read if read is not None else slice(0, V)
    for name in ("W_Q", "W_K", "W_V"):
        w = getattr(attn, name)
        w[head, rows] = torch.randn(w[head, rows].shape, generator=gen)
    attn.W_O[head, :, write] = torch.randn(attn.W_O[head, :, write].shape, generator=gen)


def make_induction_model() -> HookedTransformer:
    """Two layers, two heads each. L0H0: previous-token head writing the previous token into
    its own subspace S. L1H0: induction head whose query reads the token and whose key reads S,
    copying the attended token to the logits. L0H1 writes only J1; L1H1 reads only J2."""
    S = V + N
    J1, J2 = slice(2 * V + N, 2 * V + N + J), slice(2 * V + N + J, 2 * V + N + 2 * J)
    cfg = ModelConfig(
        n_layers=2, d_model=2 * V + N + 2 * J, d_head=N, n_ctx=N, d_vocab=V, n_heads=2,
        attn_only=True, normalization_type=None,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    _zero(model)
    _layout(model)
    with torch.no_grad():
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        _previous_token_qk(a0, 0)
        a0.W_V[0, :V, :V] = torch.eye(V)
        a0.W_O[0, :V, S : S + V] = torch.eye(V)
        _junk_head(a0, 1, write=J1, seed=2)
        a1.W_Q[0, :V, :V] = SHARP * torch.eye(V)
        a1.W_K[0, S : S + V, :V] = torch.eye(V)
        a1.W_V[0, :V, :V] = torch.eye(V)
        a1.W_O[0, :V, :V] = torch.eye(V)
        _junk_head(a1, 1, write=J2, seed=3, read=J2)
    return model.eval()


def to_bridge(model: HookedTransformer) -> Any:
    """A TransformerLens 4 native model (``TransformerBridge.boot_native``) with our weights."""
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    c = model.cfg
    if c.positional_embedding_type != "standard":
        raise ValueError("the native bridge has no shortformer positions")
    bcfg = TransformerBridgeConfig(
        d_model=c.d_model, d_head=c.d_head, n_heads=c.n_heads, n_layers=c.n_layers,
        n_ctx=c.n_ctx, d_vocab=c.d_vocab, attn_only=c.attn_only, d_mlp=c.d_mlp,
        act_fn=c.act_fn, normalization_type=c.normalization_type, eps=c.eps, seed=0,
        device="cpu",
    )  # fmt: skip
    bridge = TransformerBridge.boot_native(bcfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bridge.load_state_dict(convert_tl_checkpoint(state, bridge.cfg), strict=True)
    bridge.to_tokens = lambda s, **kw: s  # no tokenizer: token ids pass through
    return bridge.eval()


def random_model(**overrides: Any) -> HookedTransformer:
    """A small random model with non-trivial biases and LayerNorm gains."""
    kwargs: dict[str, Any] = dict(n_layers=3, d_model=32, n_ctx=24, d_vocab=20, n_heads=4, seed=3)
    kwargs.update(overrides)
    model = HookedTransformer(ModelConfig(**kwargs))
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def full_copying(model, tokens, mask):
    """Share and top-1 of the copying score from the full ``[heads, batch, pos, V]`` direct-path
    logits (argmax: ties to the first column), and how many counted queries tie their maximum
    behind an earlier column: the reference the chunked computation is tested against.

    With ``d_vocab_out < d_vocab`` the weights are per head: queries whose attended token has
    no logit (``>= d_vocab_out``) are left out of that head's mean."""
    _, cache = model.run_with_cache(tokens)
    W_O, W_U = model.W_O.detach(), model.W_U.detach()
    n_out = W_U.shape[-1]
    w0 = mask.float().clone()
    w0[:, 0] = 0
    shares, tops, tied = [], [], 0
    for layer in range(model.cfg.n_layers):
        result = torch.einsum("bphe,hed->hbpd", cache[f"blocks.{layer}.attn.hook_z"], W_O[layer])
        x = result - result.mean(-1, keepdim=True)
        x = x / cache["ln_final.hook_scale"] * model.ln_final.w.detach()
        logits = x @ W_U
        gain = (logits - logits.mean(-1, keepdim=True)).relu()
        attended = cache[f"blocks.{layer}.attn.hook_pattern"].argmax(-1)
        tok = tokens.gather(1, attended.flatten(1)).view(attended.shape).transpose(0, 1)
        w = w0 * (tok < n_out)
        safe = tok.clamp_max(n_out - 1)
        on_token = logits.gather(-1, safe[..., None])[..., 0]
        tied += int(((on_token == logits.amax(-1)) & (logits.argmax(-1) != tok) & (w > 0)).sum())
        share = gain.gather(-1, safe[..., None])[..., 0] / gain.sum(-1)
        top = (logits.argmax(-1) == tok).float()
        shares.append((share * w).sum((1, 2)) / w.sum((1, 2)))
        tops.append((top * w).sum((1, 2)) / w.sum((1, 2)))
    return torch.stack(shares), torch.stack(tops), tied
