"""What analysis functions need from a model: the :class:`HookedModel` protocol.

Our :class:`~circuits.HookedTransformer`, a TransformerLens ``HookedTransformer`` and a
``TransformerBridge`` all satisfy it: a ``cfg`` with ``n_layers/n_heads/d_model/d_head/
d_vocab/n_ctx`` (and optionally ``attn_only``, ``normalization_type``,
``positional_embedding_type``), TransformerLens's stacked weight properties, ``run_with_cache``
and ``run_with_hooks``. :func:`check_model` is the cheap runtime check every public analysis
function makes first, so passing something else is a ``TypeError`` naming the problem rather
than an ``AttributeError`` from deep inside.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

CFG_FIELDS = ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx")


class HookedModel(Protocol):
    """A TransformerLens-style model (structural type; nothing to inherit)."""

    @property
    def cfg(self) -> Any: ...

    @property
    def blocks(self) -> Any: ...  # per-layer modules (``blocks[l].ln1`` for ``fold_ln``)

    @property
    def W_Q(self) -> Tensor: ...

    @property
    def W_K(self) -> Tensor: ...

    @property
    def W_V(self) -> Tensor: ...

    @property
    def W_O(self) -> Tensor: ...

    @property
    def b_O(self) -> Tensor: ...

    @property
    def W_E(self) -> Tensor: ...

    @property
    def W_pos(self) -> Tensor: ...

    @property
    def W_U(self) -> Tensor: ...

    @property
    def b_U(self) -> Tensor: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...


def check_model(model: object) -> None:
    """Raises TypeError unless ``model`` looks like a :class:`HookedModel` (cheap: no weights read).

    Raises:
        TypeError: No ``cfg`` with positive int ``n_layers, n_heads, d_model, d_head, d_vocab,
            n_ctx``, or no ``run_with_cache``.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not callable(getattr(model, "run_with_cache", None)):
        raise TypeError(
            "model must be a TransformerLens-style model (circuits.HookedTransformer, "
            f"HookedTransformer or TransformerBridge), got {type(model).__name__}"
        )
    for name in CFG_FIELDS:
        value = getattr(cfg, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise TypeError(f"model.cfg.{name} must be a positive int, got {value!r}")
