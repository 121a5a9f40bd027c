"""TransformerLens 3's ``HookedTransformerConfig``: every field, TL3's defaults and derivations.

``HookedTransformer(HookedTransformerConfig(...))`` (or a dict of its fields) builds our model as
TL3 would: ``n_heads = d_model // d_head`` when not given, ``d_mlp = 4 * d_model``,
``initializer_range = 0.8 / sqrt(d_model)`` (1.0, a gain, for the other ``init_mode``\\ s),
``act_fn="relu"``, ``seed=None`` (weights from torch's global generator; a seed seeds Python,
NumPy and torch as TL3 does), ``device`` the best available one, ``dtype``, ``tokenizer_name``
(the tokenizer is loaded; ``d_vocab=-1`` is then taken from it). :meth:`to_model_config`
converts it to :class:`circuits.ModelConfig`, which the model keeps as ``model.cfg``.

A field whose feature circuits does not implement (mixture of experts, local attention, soft
caps, gated MLPs, parallel attention, RoPE scaling...) is refused at construction, in one
``ValueError`` naming every such field: never a model that silently computes something else.
"""

from __future__ import annotations

import dataclasses
import math
import pprint
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuits.config import ModelConfig

INIT_MODES = ("gpt2", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "muP")

# Fields whose non-default value asks for something our model does not compute: value that
# is fine (TL3's default) -> what the field would switch on.
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "use_local_attn": (False, "local attention"),
    "window_size": (None, "local attention"),
    "attn_types": (None, "local attention"),
    "n_devices": (1, "pipeline parallelism over several devices"),
    "scale_attn_by_inverse_layer_idx": (False, "attention scaled by 1/(layer+1)"),
    "final_rms": (False, "a final RMSNorm in a LayerNorm model"),
    "parallel_attn_mlp": (False, "parallel attention and MLP (GPT-J)"),
    "gated_mlp": (False, "gated MLPs"),
    "post_embedding_ln": (False, "a LayerNorm after the embedding"),
    "rotary_base_local": (None, "per-layer rotary bases"),
    "rotary_scaling_factor": (1.0, "RoPE scaling"),
    "load_in_4bit": (False, "4-bit weights"),
    "num_experts": (None, "mixture of experts"),
    "experts_per_token": (None, "mixture of experts"),
    "relative_attention_max_distance": (None, "relative attention (T5)"),
    "relative_attention_num_buckets": (None, "relative attention (T5)"),
    "decoder_start_token_id": (None, "encoder-decoder models"),
    "tie_word_embeddings": (False, "tied embeddings"),
    "use_normalization_before_and_after": (False, "normalization after each sub-layer"),
    "attn_scores_soft_cap": (-1.0, "attention soft caps"),
    "output_logits_soft_cap": (-1.0, "logit soft caps"),
    "use_NTK_by_parts_rope": (False, "NTK-by-parts RoPE"),
    "use_yarn_rope": (False, "YaRN RoPE"),
    "use_qk_norm": (False, "query/key normalization"),
    "ungroup_grouped_query_attention": (False, "ungrouped grouped-query attention"),
    "trust_remote_code": (False, "running a repository's own code (never done here)"),
    "uses_rms_norm": (False, "set normalization_type='RMS' instead"),
    "layer_norm_folding": (False, "folding at load time (use from_pretrained's fold_ln)"),
}
_ACT_FNS = ("gelu", "gelu_new", "relu", "solu_ln")
_POS = ("standard", "shortformer", "rotary")


@dataclass
class HookedTransformerConfig:
    """TransformerLens 3.5.1's config: the same fields, defaults and derivations.

    See TransformerLens's documentation for each field; circuits implements the dense
    decoder-only ones (everything :class:`circuits.ModelConfig` has, plus ``attention_dir``,
    ``init_mode``, ``dtype``, ``tokenizer_name``, ``default_prepend_bos``), and refuses the rest
    when set to anything but TL3's default.
    """

    d_model: int
    d_head: int
    n_layers: int
    n_ctx: int
    n_heads: int = -1
    d_mlp: int | None = None
    d_vocab: int = -1
    device: str | None = None
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    default_prepend_bos: bool = True
    positional_embedding_type: str = "standard"
    n_key_value_heads: int | None = None
    attn_only: bool = False
    gated_mlp: bool = False
    uses_rms_norm: bool = False
    eps: float = 1e-5
    layer_norm_folding: bool = False
    act_fn: str = "relu"
    normalization_type: str | None = "LN"
    num_experts: int | None = None
    experts_per_token: int | None = None
    final_rms: bool = False
    dtype: Any = torch.float32
    model_name: str = "custom"
    use_attn_scale: bool = True
    attn_scale: float = -1.0
    use_hook_mlp_in: bool = False
    use_attn_in: bool = False
    use_qk_norm: bool = False
    use_local_attn: bool = False
    ungroup_grouped_query_attention: bool = False
    original_architecture: str | None = None
    from_checkpoint: bool = False
    checkpoint_index: int | None = None
    checkpoint_label_type: str | None = None
    checkpoint_value: int | None = None
    tokenizer_name: str | None = None
    window_size: int | None = None
    attn_types: list[Any] | None = None
    init_mode: str = "gpt2"
    n_devices: int = 1
    attention_dir: str = "causal"
    seed: int | None = None
    initializer_range: float = -1.0
    init_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    d_vocab_out: int = -1
    parallel_attn_mlp: bool = False
    rotary_dim: int | None = None
    n_params: int | None = None
    use_hook_tokens: bool = False
    tokenizer_prepends_bos: bool | None = None
    post_embedding_ln: bool = False
    rotary_base: float = 10000
    rotary_base_local: float | None = None
    rotary_scaling_factor: float = 1.0
    trust_remote_code: bool = False
    rotary_adjacent_pairs: bool = False
    load_in_4bit: bool = False
    relative_attention_max_distance: int | None = None
    relative_attention_num_buckets: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_normalization_before_and_after: bool = False
    attn_scores_soft_cap: float = -1.0
    output_logits_soft_cap: float = -1.0
    use_NTK_by_parts_rope: bool = False
    NTK_by_parts_low_freq_factor: float = 1.0
    NTK_by_parts_high_freq_factor: float = 4.0
    NTK_by_parts_factor: float = 8.0
    NTK_original_ctx_len: int = 8192
    use_yarn_rope: bool = False
    yarn_factor: float = 1.0
    yarn_attention_factor: float = 1.0
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_original_max_position_embeddings: int = 4096
    norm_topk_prob: bool = False

    def __post_init__(self) -> None:
        unsupported = [
            f"{name}={getattr(self, name)!r}"
            for name, (default, _) in _UNSUPPORTED.items()
            if getattr(self, name) != default
        ]
        if unsupported:
            features = sorted({_UNSUPPORTED[s.split("=")[0]][1] for s in unsupported})
            raise ValueError(
                f"circuits does not implement {', '.join(unsupported)} "
                f"({'; '.join(features)}): leave these at TransformerLens's defaults"
            )
        for name in ("d_model", "d_head", "n_layers", "n_ctx"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_heads == -1:
            if self.d_model % self.d_head:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by d_head ({self.d_head})"
                )
            self.n_heads = self.d_model // self.d_head
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model  # TL3 sets it for attention-only models too
        if self.attention_dir not in ("causal", "bidirectional"):
            raise ValueError(
                f"attention_dir must be 'causal' or 'bidirectional', got {self.attention_dir!r}"
            )
        if self.init_mode not in INIT_MODES:
            raise ValueError(f"init_mode must be one of {INIT_MODES}, got {self.init_mode!r}")
        if not self.attn_only and self.act_fn not in _ACT_FNS:
            raise ValueError(
                f"act_fn={self.act_fn!r} is not implemented here; choose one of {_ACT_FNS}"
            )
        if self.positional_embedding_type not in _POS:
            raise ValueError(
                f"positional_embedding_type={self.positional_embedding_type!r} is not "
                f"implemented here; choose one of {_POS}"
            )
        if self.default_prepend_bos not in (True, False):
            raise ValueError(
                f"default_prepend_bos must be True or False, got {self.default_prepend_bos!r}"
            )
        self.dtype = _dtype(self.dtype)
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
                raise ValueError(f"seed must be None or an int >= 0, got {self.seed!r}")
            self.set_seed_everywhere(self.seed)
        if self.initializer_range < 0:
            gpt2 = self.init_mode == "gpt2"
            self.initializer_range = 0.8 / math.sqrt(self.d_model) if gpt2 else 1.0
        if self.d_vocab_out == -1:
            self.d_vocab_out = self.d_vocab
        if self.positional_embedding_type == "rotary" and self.rotary_dim is None:
            self.rotary_dim = self.d_head
        self.n_params = self.n_layers * self.d_model * self.d_head * self.n_heads * 4
        if not self.attn_only:
            self.n_params += self.n_layers * self.d_model * self.d_mlp * 2
        if self.device is None:
            from transformer_lens.utilities import get_device

            self.device = get_device()
        self.device = str(self.device)
        if self.use_attn_scale and self.attn_scale == -1.0:
            self.attn_scale = math.sqrt(self.d_head)

    # --- TL3's methods ---
    @classmethod
    def unwrap(cls, config: dict[str, Any] | HookedTransformerConfig) -> HookedTransformerConfig:
        """The config itself, or one built from a dict of fields."""
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, cls):
            return config
        raise TypeError(
            f"expected a HookedTransformerConfig or a dict, got {type(config).__name__}"
        )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> HookedTransformerConfig:
        fields = dataclasses.fields(cls)
        unknown = sorted(set(config_dict) - {f.name for f in fields})
        if unknown:
            raise ValueError(f"cfg: HookedTransformerConfig has no field(s) {', '.join(unknown)}")
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in config_dict]
        if missing:
            raise ValueError(f"cfg: HookedTransformerConfig needs {', '.join(missing)}")
        return cls(**config_dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__

    def __repr__(self) -> str:
        return "HookedTransformerConfig:\n" + pprint.pformat(self.to_dict())

    def set_seed_everywhere(self, seed: int) -> None:
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    def is_layer_norm_activation(self) -> bool:
        return self.act_fn is not None and self.act_fn.endswith("_ln")

    # --- to ours ---
    def to_model_config(self, d_vocab: int | None = None) -> ModelConfig:
        """The :class:`circuits.ModelConfig` of this architecture (``d_vocab`` if it is -1)."""
        vocab = self.d_vocab if self.d_vocab != -1 else d_vocab
        if vocab is None or vocab == -1:
            raise ValueError(
                "d_vocab is not set: give d_vocab, a tokenizer, or tokenizer_name "
                "(TransformerLens: 'Must provide a tokenizer if d_vocab is not provided')"
            )
        seed = self.seed
        if seed is None:  # TL3 draws from the global generator; so do we, through a seed
            seed = int(torch.randint(0, 2**62, ()).item())
        fields: dict[str, Any] = dict(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_ctx=self.n_ctx,
            d_vocab=vocab,
            n_heads=self.n_heads,
            d_head=self.d_head,
            attn_only=self.attn_only,
            d_mlp=None if self.attn_only else self.d_mlp,
            normalization_type=self.normalization_type,
            positional_embedding_type=self.positional_embedding_type,
            eps=self.eps,
            init_range=self.initializer_range if self.init_mode == "gpt2" else -1.0,
            seed=seed,
            use_attn_result=self.use_attn_result,
            d_vocab_out=self.d_vocab_out if self.d_vocab_out != -1 else vocab,
            use_split_qkv_input=self.use_split_qkv_input,
            use_attn_in=self.use_attn_in,
            use_hook_mlp_in=self.use_hook_mlp_in,
            use_hook_tokens=self.use_hook_tokens,
            n_key_value_heads=self.n_key_value_heads,
            attn_scale=self.attn_scale if self.use_attn_scale else 1.0,
            rotary_dim=self.rotary_dim,
            rotary_base=self.rotary_base,
            rotary_adjacent_pairs=self.rotary_adjacent_pairs,
            model_name=self.model_name,
        )
        if not self.attn_only:
            fields["act_fn"] = self.act_fn
        if self.attention_dir != "causal":
            if "attention_dir" not in {f.name for f in dataclasses.fields(ModelConfig)}:
                raise ValueError("attention_dir='bidirectional' is not available in this version")
            fields["attention_dir"] = self.attention_dir
        return ModelConfig(**fields)


def _dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (or its name), got {dtype!r}")
    return dtype


def reinit(model: Any, init_mode: str, gain: float) -> None:
    """Re-initialises the weight matrices (``W_*``) for TL3's non-GPT-2 ``init_mode``\\ s,
    from torch's global generator as TL3 does (its matrices are ``d_in x d_out``)."""
    from transformer_lens.utilities import (
        calc_fan_in_and_fan_out,
        init_kaiming_normal_,
        init_kaiming_uniform_,
        init_xavier_normal_,
        init_xavier_uniform_,
    )

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "W_" not in name:
                continue
            if init_mode == "xavier_uniform":
                init_xavier_uniform_(param, gain=gain)
            elif init_mode == "xavier_normal":
                init_xavier_normal_(param, gain=gain)
            elif init_mode == "kaiming_uniform":
                init_kaiming_uniform_(param, gain=gain, nonlinearity="relu", mode="fan_in")
            elif init_mode == "kaiming_normal":
                init_kaiming_normal_(param, gain=gain, nonlinearity="relu", mode="fan_in")
            elif init_mode == "muP":
                fan_in, _ = calc_fan_in_and_fan_out(param)
                scale = (
                    1.0 if "embed" in name else 1 / fan_in if "unembed" in name else fan_in**-0.5
                )
                torch.nn.init.normal_(param, std=scale)


def build_args(
    cfg: Any, tokenizer: Any = None
) -> tuple[ModelConfig, HookedTransformerConfig | None, Any]:
    """What ``HookedTransformer(cfg, tokenizer=...)`` builds: our config, the TL3 config (or
    None for a :class:`ModelConfig`), and the tokenizer (loaded from ``tokenizer_name``)."""
    if isinstance(cfg, ModelConfig):
        return cfg, None, tokenizer
    if isinstance(cfg, str):
        raise ValueError(
            "pass a config (HookedTransformerConfig, a dict of its fields, or a "
            "circuits.ModelConfig); to load a pretrained model use "
            "HookedTransformer.from_pretrained(name)"
        )
    if not isinstance(cfg, dict | HookedTransformerConfig):
        raise TypeError(
            "cfg must be a circuits.ModelConfig, a HookedTransformerConfig or a dict, got "
            f"{type(cfg).__name__}"
        )
    tl3 = HookedTransformerConfig.unwrap(cfg)
    if tokenizer is None and tl3.tokenizer_name is not None:
        from circuits.pretrained import load_tokenizer

        tokenizer = load_tokenizer(tl3.tokenizer_name)
    d_vocab = None
    if tokenizer is not None and tl3.d_vocab == -1:
        d_vocab = max(tokenizer.get_vocab().values()) + 1  # TL3's rule
    return tl3.to_model_config(d_vocab), tl3, tokenizer


def finish(
    model: Any,
    tl3: HookedTransformerConfig | None,
    tokenizer: Any,
    move_to_device: bool,
    default_padding_side: Any,
) -> None:
    """The rest of TL3's ``__init__``: init mode, tokenizer, dtype and device."""
    if tl3 is None:
        if tokenizer is not None:
            model.set_tokenizer(tokenizer, default_padding_side=default_padding_side)
        return
    if tl3.init_mode != "gpt2":
        reinit(model, tl3.init_mode, tl3.initializer_range)
    model.default_prepend_bos = tl3.default_prepend_bos
    if tokenizer is not None:
        model.set_tokenizer(
            tokenizer,
            default_padding_side=default_padding_side,
            default_prepend_bos=tl3.default_prepend_bos,
        )
    if tl3.dtype != torch.float32:
        model.to(tl3.dtype)
    if move_to_device:
        model.to(tl3.device)
