"""Model configuration: a frozen dataclass, validated on construction, saved next to checkpoints.

Field names follow TransformerLens's ``HookedTransformerConfig`` so that configs read the same
and TransformerLens utilities that look at ``model.cfg`` find what they expect.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ActFn = Literal["gelu", "gelu_new", "relu"]
NormType = Literal["LN"] | None
PosEmbedType = Literal["standard", "shortformer"]

ACT_FNS = ("gelu", "gelu_new", "relu")
NORM_TYPES = (None, "LN")
POS_EMBED_TYPES = ("standard", "shortformer")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of a :class:`circuits.HookedTransformer`.

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
        act_fn: MLP non-linearity: "gelu" (exact erf), "gelu_new" (GPT-2's tanh form), "relu".
        normalization_type: ``None`` or ``"LN"`` (pre-LayerNorm before each sub-layer and at
            the end).
        positional_embedding_type: "standard" adds ``W_pos`` to the residual stream;
            "shortformer" adds it to the inputs of queries and keys only, so positions never
            enter values or the residual stream.
        eps: LayerNorm epsilon.
        init_range: Std of the normal initialisation of weight matrices; defaults to
            ``0.8 / sqrt(d_model)`` as in TransformerLens.
        seed: Seed of the weight initialisation.
        use_attn_result: Compute per-head outputs ``hook_result [batch pos n_heads d_model]``
            (costs memory; needed for per-head attribution).
        d_vocab_out: Output vocabulary; defaults to ``d_vocab``.
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    n_heads: int
    d_head: int = -1
    attn_only: bool = False
    d_mlp: int | None = None
    act_fn: str = "gelu"
    normalization_type: str | None = "LN"
    positional_embedding_type: str = "standard"
    eps: float = 1e-5
    init_range: float = -1.0
    seed: int = 0
    use_attn_result: bool = False
    d_vocab_out: int = -1
    # Fields TransformerLens utilities read from ``model.cfg``; fixed for our models.
    model_name: str = field(default="circuits", compare=False)

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_ctx", "d_vocab", "n_heads"):
            _positive_int(name, getattr(self, name))
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
        for name in ("attn_only", "use_attn_result"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.attn_only:
            if self.d_mlp is not None:
                raise ValueError(
                    f"d_mlp={self.d_mlp} contradicts attn_only=True (attention-only models "
                    "have no MLP); drop d_mlp or set attn_only=False"
                )
        else:
            if self.d_mlp is None:
                object.__setattr__(self, "d_mlp", 4 * self.d_model)
            _positive_int("d_mlp", self.d_mlp)
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"unknown act_fn {self.act_fn!r}; choose one of {ACT_FNS}")
        if self.normalization_type not in NORM_TYPES:
            raise ValueError(
                f"unknown normalization_type {self.normalization_type!r}; choose one of "
                f"{NORM_TYPES}"
            )
        if self.positional_embedding_type not in POS_EMBED_TYPES:
            raise ValueError(
                f"unknown positional_embedding_type {self.positional_embedding_type!r}; "
                f"choose one of {POS_EMBED_TYPES}"
            )
        if not (isinstance(self.eps, int | float) and self.eps > 0):
            raise ValueError(f"eps must be a positive float, got {self.eps!r}")
        if self.init_range == -1.0:
            object.__setattr__(self, "init_range", 0.8 / math.sqrt(self.d_model))
        if not (isinstance(self.init_range, int | float) and self.init_range > 0):
            raise ValueError(f"init_range must be positive, got {self.init_range!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    # --- TransformerLens compatibility: read-only views its utilities look for ---
    @property
    def d_vocab_in(self) -> int:
        return self.d_vocab

    @property
    def n_key_value_heads(self) -> None:
        return None

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def dtype(self) -> Any:
        import torch  # lazy: configs are read by the CLI before torch is needed

        return torch.float32

    @property
    def use_split_qkv_input(self) -> bool:
        return False

    @property
    def use_hook_mlp_in(self) -> bool:
        return False

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
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head)

    @property
    def parallel_attn_mlp(self) -> bool:
        return False

    @property
    def n_params(self) -> int:
        """Weight-matrix parameters (no biases, embeddings or norms), as TransformerLens counts."""
        per_layer = 4 * self.n_heads * self.d_model * self.d_head
        if not self.attn_only:
            assert self.d_mlp is not None
            per_layer += 2 * self.d_model * self.d_mlp
        return self.n_layers * per_layer

    # --- serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Builds a config from a dict, rejecting unknown fields by name."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)

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
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
