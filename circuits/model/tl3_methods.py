"""TransformerLens 3 methods of :class:`circuits.HookedTransformer` that its core does not need.

``from_pretrained`` / ``from_pretrained_no_processing`` (classmethods over
:func:`circuits.pretrained.from_pretrained`), ``all_composition_scores``, ``all_head_labels``,
``load_and_process_state_dict``, the single weight-processing steps (``fold_layer_norm``,
``center_writing_weights``, ``center_unembed``, ``fold_value_biases``,
``refactor_factored_attn_matrices``: each returns a new state dict),
``tokens_to_residual_directions`` on strings, ``to(..., print_details=)``,
``to_tokens(ids, prepend_bos=True)``, and TL3's ``check_hooks_to_add``: a hook added by name at
a hook point that a config switch leaves silent is refused, naming the switch.

A mixin that never imports the model class (it reaches the model through ``self``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.model import processing
from circuits.model.processing import StateDict

# Hook-point name endings that only fire when a config switch is on: switch, its setter.
_SWITCHED = (
    (("attn.hook_result",), "use_attn_result", "model.set_use_attn_result(True)"),
    (
        ("hook_q_input", "hook_k_input", "hook_v_input"),
        "use_split_qkv_input",
        "model.set_use_split_qkv_input(True)",
    ),
    (("hook_attn_in",), "use_attn_in", "model.set_use_attn_in(True)"),
    (("hook_mlp_in",), "use_hook_mlp_in", "model.set_use_hook_mlp_in(True)"),
    (("hook_tokens",), "use_hook_tokens", "use_hook_tokens=True in the config"),
)


def switched_off(cfg: Any, name: str) -> str | None:
    """Why hook point ``name`` never fires under ``cfg`` (the switch to turn on), or None."""
    for endings, switch, how in _SWITCHED:
        if name.endswith(endings) and not getattr(cfg, switch, False):
            return f"{switch} is False: turn it on with {how}"
    return None


def _best_device(kwargs: dict[str, Any]) -> dict[str, Any]:
    """TL3's default device for pretrained models: the best available one."""
    if kwargs.get("device") is None and kwargs.get("move_to_device", True):
        from transformer_lens.utilities import get_device

        kwargs = {**kwargs, "device": get_device()}
    return kwargs


class TL3Mixin:
    """TransformerLens 3's remaining methods (see the module docstring)."""

    cfg: Any
    tokenizer: Any
    hook_dict: dict[str, Any]
    mod_dict: dict[str, Any]

    # --- loading ---
    @classmethod
    def from_pretrained(cls, model_name: str, *args: Any, **kwargs: Any) -> Any:
        """TL3's ``HookedTransformer.from_pretrained``: :func:`circuits.pretrained.from_pretrained`
        (TL3's signature, names and defaults), except that ``device`` defaults to the best
        available one (``utils.get_device()``), as in TL3."""
        from circuits.pretrained import from_pretrained

        return from_pretrained(model_name, *args, **_best_device(kwargs))

    @classmethod
    def from_pretrained_no_processing(cls, model_name: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`from_pretrained` with every weight-processing step off (TL3's wrapper)."""
        from circuits.pretrained import from_pretrained_no_processing

        return from_pretrained_no_processing(model_name, *args, **_best_device(kwargs))

    def load_and_process_state_dict(
        self,
        state_dict: StateDict,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        refactor_factored_attn_matrices: bool = False,
    ) -> None:
        """Loads a TL3-format state dict (strictly), then processes the weights in place."""
        self.load_state_dict(state_dict, strict=True)  # type: ignore[attr-defined]
        self.process_weights_(  # type: ignore[attr-defined]
            fold_ln=fold_ln,
            center_writing_weights=center_writing_weights,
            center_unembed=center_unembed,
            fold_value_biases=fold_value_biases,
            refactor_factored_attn_matrices=refactor_factored_attn_matrices,
        )

    # --- weight processing, step by step (the model's own is process_weights_) ---
    def fold_layer_norm(
        self,
        state_dict: StateDict,
        fold_biases: bool = True,
        center_weights: bool = True,
    ) -> StateDict:
        """See :func:`circuits.model.processing.fold_layer_norm` (returns a new state dict)."""
        return processing.fold_layer_norm(state_dict, self.cfg, fold_biases, center_weights)

    def center_writing_weights(self, state_dict: StateDict) -> StateDict:
        """See :func:`circuits.model.processing.center_writing_weights`."""
        return processing.center_writing_weights(state_dict, self.cfg)

    def center_unembed(self, state_dict: StateDict) -> StateDict:
        """See :func:`circuits.model.processing.center_unembed`."""
        return processing.center_unembed(state_dict)

    def fold_value_biases(self, state_dict: StateDict) -> StateDict:
        """See :func:`circuits.model.processing.fold_value_biases`."""
        return processing.fold_value_biases(state_dict, self.cfg)

    def refactor_factored_attn_matrices(self, state_dict: StateDict) -> StateDict:
        """See :func:`circuits.model.processing.refactor_factored_attn_matrices`."""
        return processing.refactor_factored_attn_matrices(state_dict, self.cfg)

    # --- analysis helpers ---
    def all_composition_scores(
        self, mode: str
    ) -> Float[Tensor, "n_layers n_heads n_layers n_heads"]:
        """Q-, K- or V-composition scores of every head pair ``[L1, H1, L2, H2]``, zero unless
        ``L1 < L2`` (TL3's definition, through TransformerLens's ``composition_scores``).

        Memory: ``(n_layers * n_heads)^2`` products of factored ``d_model`` matrices, computed
        through their ``d_head``-sized factors.
        """
        from transformer_lens.utilities import composition_scores

        left = self.OV  # type: ignore[attr-defined]
        if mode == "Q":
            right = self.QK  # type: ignore[attr-defined]
        elif mode == "K":
            right = self.QK.T  # type: ignore[attr-defined]
        elif mode == "V":
            right = self.OV  # type: ignore[attr-defined]
        else:
            raise ValueError(f"mode must be one of ['Q', 'K', 'V'] not {mode!r}")
        scores = composition_scores(left, right, broadcast_dims=True)
        layers = torch.arange(self.cfg.n_layers, device=scores.device)
        later = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(later, scores, torch.zeros_like(scores))

    def all_head_labels(self) -> list[str]:
        """``["L0H0", "L0H1", ...]``, layer-major."""
        heads = range(self.cfg.n_heads)
        return [f"L{layer}H{h}" for layer in range(self.cfg.n_layers) for h in heads]

    def tokens_to_residual_directions(self, tokens: Any) -> Float[Tensor, "... d_model"]:
        """``W_U[:, token]``: for ids, or a string that is one token (``" cat"``)."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)  # type: ignore[attr-defined]
        return super().tokens_to_residual_directions(tokens)  # type: ignore[misc]

    # --- devices and text ---
    def to(self, *args: Any, print_details: bool = False, **kwargs: Any) -> Any:
        """``nn.Module.to``; ``print_details=True`` prints the move, as TL3 does by default."""
        if print_details:
            print("Moving model to device / dtype:", *args, *kwargs.values())
        return super().to(*args, **kwargs)  # type: ignore[misc]

    def to_tokens(
        self,
        input: Any,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Any:
        """TL3's ``to_tokens``; on token ids, ``prepend_bos=True`` prepends the BOS id."""
        from circuits.model.text import is_text

        tokens = super().to_tokens(  # type: ignore[misc]
            input, prepend_bos, padding_side, move_to_device, truncate
        )
        if is_text(input) or not prepend_bos:
            return tokens
        tokenizer = self._require_tokenizer("prepend_bos=True on token ids")  # type: ignore[attr-defined]
        bos = torch.full_like(tokens[:, :1], tokenizer.bos_token_id)
        out = torch.cat([bos, tokens], dim=1)
        if out.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"with the BOS the ids are {out.shape[1]} long, over n_ctx")
        return out

    # --- hooks: TL3's check_hooks_to_add, for names given explicitly ---
    def check_hooks_to_add(
        self,
        hook_point: Any,
        hook_point_name: str,
        hook: Callable[..., Any],
        dir: str = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> None:
        """Refuses a hook at a point that never fires (``ValueError`` naming the switch)."""
        why = switched_off(self.cfg, hook_point_name)
        if why is not None:
            raise ValueError(f"cannot add a hook at {hook_point_name}: it never fires, {why}")

    def add_hook(self, name: Any, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """TL's ``add_hook``; a name filter skips the points that never fire, a name that is
        not a hook point (or one switched off) is an error naming the way to turn it on."""
        if isinstance(name, str):
            self._check_hook_name(name)
            return super().add_hook(name, hook, *args, **kwargs)  # type: ignore[misc]
        if callable(name):
            cfg = self.cfg
            wanted = name

            def name_filter(n: str) -> bool:
                return bool(wanted(n)) and switched_off(cfg, n) is None

            return super().add_hook(name_filter, hook, *args, **kwargs)  # type: ignore[misc]
        raise TypeError(f"a hook's name must be a str or a filter function, got {name!r}")

    def _enable_hook_with_name(self, name: str, hook: Callable[..., Any], dir: Any) -> None:
        # run_with_hooks / hooks() with a name: the same check as add_hook.
        self._check_hook_name(name)
        self.check_hooks_to_add(self.mod_dict[name], name, hook, dir=dir)
        super()._enable_hook_with_name(name, hook, dir)  # type: ignore[misc]

    def _enable_hooks_for_points(
        self, hook_points: Any, enabled: Callable[[str], bool], hook: Any, dir: Any
    ) -> None:
        cfg = self.cfg
        live = [(n, hp) for n, hp in hook_points if switched_off(cfg, n) is None]
        super()._enable_hooks_for_points(live, enabled, hook, dir)  # type: ignore[misc]

    def get_caching_hooks(self, names_filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        # run_with_cache: points that never fire are left out (a filter may match them); one
        # named explicitly is an error, as for add_hook.
        explicit = [names_filter] if isinstance(names_filter, str) else names_filter
        if isinstance(explicit, list | tuple):
            for name in explicit:
                self._check_hook_name(name)
                self.check_hooks_to_add(self.mod_dict[name], name, lambda x: x)
        cache, fwd, bwd = super().get_caching_hooks(names_filter, *args, **kwargs)  # type: ignore[misc]
        cfg = self.cfg
        fwd = [(n, h) for n, h in fwd if switched_off(cfg, n) is None]
        bwd = [(n, h) for n, h in bwd if switched_off(cfg, n) is None]
        return cache, fwd, bwd

    def _check_hook_name(self, name: str) -> None:
        if name in self.mod_dict and name in self.hook_dict:
            return
        why = switched_off(self.cfg, name)
        if why is not None:
            raise ValueError(f"there is no hook point {name}: {why}")
        raise ValueError(
            f"there is no hook point {name!r} in this model (see model.hook_dict for the names)"
        )
