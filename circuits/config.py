"""Model configuration: a frozen dataclass, validated on construction, saved next to checkpoints.

Field names follow TransformerLens's ``HookedTransformerConfig`` so that configs read the same
and TransformerLens utilities that look at ``model.cfg`` find what they expect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from circuits.validation import check_fields, is_int, is_number

ActFn = Literal["gelu", "gelu_new", "relu", "solu_ln"]
NormType = Literal["LN", "LNPre", "RMS", "RMSPre"] | None
PosEmbedType = Literal["standard", "shortformer", "rotary"]

ACT_FNS: tuple[ActFn, ...] = get_args(ActFn)
NORM_TYPES: tuple[NormType, ...] = (None, *get_args(get_args(NormType)[0]))
POS_EMBED_TYPES: tuple[PosEmbedType, ...] = get_args(PosEmbedType)

# Fields a config derives from others when they are not given, and the value meaning "derive".
_DERIVED: dict[str, Any] = {
    "d_head": -1,
    "d_mlp": None,
    "init_range": -1.0,
    "d_vocab_out": -1,
    "attn_scale": -1.0,
    "rotary_dim": None,
}
# Runtime state, not architecture: never saved, never compared.
_RUNTIME = ("device",)


def _positive_int(name: str, value: Any) -> None:
    if not is_int(value):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _positive_float(name: str, value: Any) -> None:
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of a :class:`circuits.HookedTransformer`.

    Fields left at their defaults that are derived from others (``d_head``, ``d_mlp``,
    ``init_range``, ``d_vocab_out``, ``attn_scale``, ``rotary_dim``) are derived again by
    :meth:`replace` when what they derive from changes; fields given explicitly are kept.

    Args:
        n_layers: Number of transformer blocks.
        d_model: Width of the residual stream.
        n_ctx: Longest sequence the model accepts (rows of ``W_pos``).
        d_vocab: Number of token ids; valid ids are ``[0, d_vocab)``.
        n_heads: Attention heads per layer.
        d_head: Width of each head; defaults to ``d_model // n_heads``.
        attn_only: No MLPs (the framework paper's attention-only models).
        d_mlp: MLP hidden width; ``None`` for attention-only models, defaults to
            ``4 * d_model`` otherwise.
        act_fn: MLP non-linearity: "gelu" (exact erf), "gelu_new" (GPT-2's tanh form), "relu",
            "solu_ln" (``x * softmax(x)`` then a LayerNorm ``mlp.ln``, hooked at ``mlp.hook_mid``).
        normalization_type: ``None``, ``"LN"`` (pre-LayerNorm before each sub-layer and at the
            end), ``"RMS"`` (RMSNorm), or ``"LNPre"``/``"RMSPre"`` (the same without weights, as
            after folding them into the next layer).
        positional_embedding_type: "standard" adds ``W_pos`` to the residual stream;
            "shortformer" adds it to the inputs of queries and keys only, so positions never
            enter values or the residual stream; "rotary" rotates queries and keys by position
            (no ``W_pos``).
        eps: Normalization epsilon.
        init_range: Std of the normal initialisation of weight matrices; defaults to
            ``0.8 / sqrt(d_model)`` as in TransformerLens.
        seed: Seed of the weight initialisation.
        use_attn_result: Compute per-head outputs ``hook_result [batch pos n_heads d_model]``
            (costs memory; needed for per-head attribution).
        d_vocab_out: Output vocabulary; defaults to ``d_vocab``.
        use_split_qkv_input: Give each head its own copy of the residual stream for its query,
            key and value inputs: ``blocks.{l}.hook_q_input/k_input/v_input``
            ``[batch, pos, n_heads, d_model]`` (before ``ln1``), so they can be patched apart.
        use_attn_in: One copy per head shared by Q, K and V: ``blocks.{l}.hook_attn_in``
            ``[batch, pos, n_heads, d_model]``.
        use_hook_mlp_in: ``blocks.{l}.hook_mlp_in`` ``[batch, pos, d_model]`` (before ``ln2``).
        use_hook_tokens: ``hook_tokens`` ``[batch, pos]`` sees (and may change) the token ids.
        n_key_value_heads: Grouped-query attention: key/value heads shared by groups of
            ``n_heads // n_key_value_heads`` query heads; ``None`` for one per query head.
        attn_scale: Divisor of the attention scores; defaults to ``sqrt(d_head)``.
        rotary_dim: Features of each head rotated by rotary embeddings; defaults to ``d_head``.
        rotary_base: Base of the rotary frequencies.
        rotary_adjacent_pairs: Rotate adjacent feature pairs (GPT-J) instead of ``(i, i + r/2)``
            (GPT-NeoX, TransformerLens's default).
        attention_dir: "causal" (each position sees itself and earlier ones) or
            "bidirectional" (every position sees every other; TL3's ``attention_dir``).
        device: Where the model's weights are; kept up to date by the model (not saved).
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    n_heads: int
    d_head: int = -1
    attn_only: bool = False
    d_mlp: int | None = None
    act_fn: ActFn = "gelu"
    normalization_type: NormType = "LN"
    positional_embedding_type: PosEmbedType = "standard"
    eps: float = 1e-5
    init_range: float = -1.0
    seed: int = 0
    use_attn_result: bool = False
    d_vocab_out: int = -1
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    use_hook_tokens: bool = False
    n_key_value_heads: int | None = None
    attn_scale: float = -1.0
    rotary_dim: int | None = None
    rotary_base: float = 10000
    rotary_adjacent_pairs: bool = False
    attention_dir: Literal["causal", "bidirectional"] = "causal"
    # Fields TransformerLens utilities read from ``model.cfg``; fixed for our models.
    model_name: str = field(default="circuits", compare=False)
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        derived = frozenset(n for n, v in _DERIVED.items() if getattr(self, n) == v)
        object.__setattr__(self, "_derived", derived)
        for name in ("n_layers", "d_model", "n_ctx", "d_vocab", "n_heads"):
            _positive_int(name, getattr(self, name))
        for name in (
            "attn_only",
            "use_attn_result",
            "use_split_qkv_input",
            "use_attn_in",
            "use_hook_mlp_in",
            "use_hook_tokens",
            "rotary_adjacent_pairs",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.d_head == -1:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "pass d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        _positive_int("d_head", self.d_head)
        if self.d_vocab_out == -1:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        _positive_int("d_vocab_out", self.d_vocab_out)
        if self.attn_only:
            if self.use_hook_mlp_in:
                raise ValueError("use_hook_mlp_in needs an MLP; this model is attn_only")
            if self.d_mlp is not None:
                raise ValueError(
                    f"d_mlp={self.d_mlp} contradicts attn_only=True (attention-only models "
                    "have no MLP); drop d_mlp or set attn_only=False"
                )
        else:
            if self.d_mlp is None:
                object.__setattr__(self, "d_mlp", 4 * self.d_model)
            _positive_int("d_mlp", self.d_mlp)
        for name, allowed in (
            ("act_fn", ACT_FNS),
            ("normalization_type", NORM_TYPES),
            ("positional_embedding_type", POS_EMBED_TYPES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        _positive_float("eps", self.eps)
        if self.init_range == -1.0:
            object.__setattr__(self, "init_range", 0.8 / math.sqrt(self.d_model))
        _positive_float("init_range", self.init_range)
        if not is_int(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.n_key_value_heads is not None:
            _positive_int("n_key_value_heads", self.n_key_value_heads)
            if self.n_heads % self.n_key_value_heads:
                raise ValueError(
                    f"n_heads={self.n_heads} is not a multiple of "
                    f"n_key_value_heads={self.n_key_value_heads}"
                )
            if self.use_attn_in:
                raise ValueError(
                    "use_attn_in does not apply to grouped-query attention (keys and values "
                    "have fewer heads); use use_split_qkv_input"
                )
        if self.attn_scale == -1.0:
            object.__setattr__(self, "attn_scale", math.sqrt(self.d_head))
        _positive_float("attn_scale", self.attn_scale)
        if self.positional_embedding_type == "rotary" and self.rotary_dim is None:
            object.__setattr__(self, "rotary_dim", self.d_head)
        if self.rotary_dim is not None:
            _positive_int("rotary_dim", self.rotary_dim)
            if self.rotary_dim % 2 or self.rotary_dim > self.d_head:
                raise ValueError(
                    f"rotary_dim={self.rotary_dim} must be even and at most d_head={self.d_head}"
                )
        _positive_float("rotary_base", self.rotary_base)
        if self.attention_dir not in ("causal", "bidirectional"):
            raise ValueError(
                f"attention_dir must be 'causal' or 'bidirectional', got {self.attention_dir!r}"
            )
        if not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))

    # --- TransformerLens compatibility: read-only views its utilities look for ---
    @property
    def d_vocab_in(self) -> int:
        return self.d_vocab

    @property
    def dtype(self) -> Any:
        import torch  # lazy: configs are read by the CLI before torch is needed

        return torch.float32

    @property
    def default_prepend_bos(self) -> bool:
        return False

    @property
    def original_architecture(self) -> str:
        return "circuits.HookedTransformer"

    @property
    def tokenizer_name(self) -> None:
        return None

    @property
    def final_rms(self) -> bool:
        return False

    @property
    def use_attn_scale(self) -> bool:
        return True

    @property
    def parallel_attn_mlp(self) -> bool:
        return False

    @property
    def ungroup_grouped_query_attention(self) -> bool:
        return False

    @property
    def gated_mlp(self) -> bool:
        return False

    @property
    def n_devices(self) -> int:
        return 1

    @property
    def n_params(self) -> int:
        """Weight-matrix parameters (no biases, embeddings or norms), as TransformerLens counts
        them (``4 * n_heads * d_model * d_head`` per layer for attention, also with grouped-query
        attention, plus ``2 * d_model * d_mlp`` for the MLP)."""
        per_layer = 4 * self.n_heads * self.d_model * self.d_head
        if not self.attn_only:
            assert self.d_mlp is not None
            per_layer += 2 * self.d_model * self.d_mlp
        return self.n_layers * per_layer

    def n_params_estimate(self) -> int:
        """Every parameter the model will hold (embeddings, biases and norms included), computed
        from the shapes alone, before anything is allocated."""
        d, h, e, L = self.d_model, self.n_heads, self.d_head, self.n_layers
        kv = self.n_key_value_heads or h
        attn = 2 * h * d * e + h * e + 2 * kv * (d * e + e) + d
        norm = {None: 0, "LN": 2 * d, "RMS": d}.get(self.normalization_type, 0)
        mlp = 0
        if not self.attn_only:
            assert self.d_mlp is not None
            mlp = 2 * d * self.d_mlp + self.d_mlp + d + norm
            if self.act_fn == "solu_ln" and self.normalization_type == "LN":
                mlp += 2 * self.d_mlp
        embed = self.d_vocab * d + (
            0 if self.positional_embedding_type == "rotary" else self.n_ctx * d
        )
        unembed = d * self.d_vocab_out + self.d_vocab_out
        return embed + L * (attn + norm + mlp) + norm + unembed

    def memory_estimate(self, batch_size: int = 1, training: bool = True) -> int:
        """Rough bytes a float32 model needs: weights (plus gradients and two AdamW moments
        when ``training``) and the activations of one ``[batch_size, n_ctx]`` batch."""
        copies = 4 if training else 1
        weights = 4 * copies * self.n_params_estimate()
        # Vocabulary-wide activations exist once (the logits), not per layer: counting them per
        # layer refused GPT-2 small on a 24 GB machine.
        width = max(self.d_model, self.d_mlp or 0)
        per_token = self.n_layers * (8 * width + 3 * self.n_heads * self.n_ctx)
        per_token += 2 * max(width, self.d_vocab_out)
        activations = 4 * batch_size * self.n_ctx * per_token * (2 if training else 1)
        return weights + activations

    def check_fits(
        self, available_bytes: int | None = None, *, batch_size: int = 1, training: bool = False
    ) -> None:
        """Raises ``ValueError`` with the estimate when :meth:`memory_estimate` exceeds
        ``available_bytes`` (default: this machine's physical memory, when it can be read)."""
        if available_bytes is None:
            try:
                available_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (AttributeError, ValueError, OSError):
                return
        need = self.memory_estimate(batch_size, training)
        if need > available_bytes:
            gib = 2**30
            raise ValueError(
                f"this model does not fit: {self.n_params_estimate():,} parameters need about "
                f"{need / gib:,.1f} GiB{' to train' if training else ''}, more than the "
                f"{available_bytes / gib:,.1f} GiB available (d_model={self.d_model}, "
                f"n_layers={self.n_layers}, d_vocab={self.d_vocab}, n_ctx={self.n_ctx})"
            )

    def derived_fields(self) -> frozenset[str]:
        """Names of the fields this config derived rather than was given."""
        return self._derived  # type: ignore[attr-defined,no-any-return]

    # --- serialisation ---
    def to_dict(self) -> dict[str, Any]:
        """The fields, derived ones with their values (runtime fields like ``device`` left out)."""
        data = dataclasses.asdict(self)
        for name in _RUNTIME:
            data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Builds a config from a dict, rejecting unknown fields by name."""
        return cls(**check_fields(cls, data, "model config"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again).

        Fields this config derived are derived again from the new values (``replace(d_vocab=64)``
        also gives ``d_vocab_out=64``); fields given explicitly keep their values.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in self.derived_fields():
            values[name] = _DERIVED[name]
        if self.attn_only and changes.get("attn_only") is False and "d_mlp" not in changes:
            values["d_mlp"] = None
        if changes.get("attn_only") is True and "d_mlp" not in changes:
            values["d_mlp"] = None
        values.update(changes)
        return type(self)(**values)
