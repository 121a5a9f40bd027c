"""A tuned lens (Belrose et al. 2023): one affine translator per layer before the logit lens.

Translator ``l`` maps the residual stream before layer ``l`` to ``h + A_l h + b_l`` (``A_l``,
``b_l`` zero-initialised, so an untrained tuned lens *is* the logit lens), then reads it through
the final LayerNorm (recomputed) and the unembedding. It is trained on the model's own task
data to minimise ``KL(final || lens)``; the model stays frozen. Saved as
``tuned_lens.safetensors`` + ``tuned_lens.json`` in a directory, e.g. next to a checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from tqdm.auto import tqdm

from circuits.analysis.final_ln import full_final_ln
from circuits.analysis.logit_lens import LensResult, accumulated_resid, resid_names, unembed
from circuits.analysis.protocol import HookedModel, check_model
from circuits.losses import kl_divergence
from circuits.validation import check_cache, check_int, check_tokens

WEIGHTS, META = "tuned_lens.safetensors", "tuned_lens.json"
FORMAT = "circuits.tuned_lens/1"


class TunedLens(nn.Module):
    """Per-layer affine translators for ``n_layers`` residual points (``"{l}_pre"``).

    Args:
        n_layers: Layers of the model (one translator before each).
        d_model: Residual width.
    """

    def __init__(self, n_layers: int, d_model: int):
        check_int(n_layers, "n_layers", 1)
        check_int(d_model, "d_model", 1)
        super().__init__()
        self.n_layers, self.d_model = n_layers, d_model
        linears = [nn.Linear(d_model, d_model) for _ in range(n_layers)]
        for t in linears:  # zero: the untrained tuned lens is the logit lens
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)
        self.translators = nn.ModuleList(linears)

    @classmethod
    def for_model(cls, model: HookedModel) -> TunedLens:
        check_model(model)
        return cls(model.cfg.n_layers, model.cfg.d_model)

    def translate(
        self, resid: Float[Tensor, "n_layers ... d_model"]
    ) -> Float[Tensor, "n_layers ... d_model"]:
        """``h + A_l h + b_l`` for the stacked residuals before each layer."""
        if not isinstance(resid, Tensor) or not resid.is_floating_point():
            raise TypeError(f"resid must be a float tensor, got {type(resid).__name__}")
        if resid.ndim < 2 or resid.shape[0] != self.n_layers or resid.shape[-1] != self.d_model:
            raise ValueError(
                f"resid must be [{self.n_layers}, ..., {self.d_model}], got {tuple(resid.shape)}"
            )
        return torch.stack([h + t(h) for h, t in zip(resid, self.translators, strict=True)])

    def _check_model(self, model: HookedModel) -> None:
        check_model(model)
        if (model.cfg.n_layers, model.cfg.d_model) != (self.n_layers, self.d_model):
            raise ValueError(
                f"model has n_layers={model.cfg.n_layers}, d_model={model.cfg.d_model}; the "
                f"lens was built for {self.n_layers}, {self.d_model}"
            )

    def lens(
        self, model: HookedModel, tokens: Int[Tensor, "batch pos"], cache: Any = None
    ) -> LensResult:
        """Tuned-lens logits at ``"{l}_pre"`` for every layer, plus the model's output.

        The result forms logits only where read, in chunks (:class:`LensResult`); memory
        O(point batch pos d_model) beyond the forward pass.
        """
        check_model(model)
        self._check_model(model)
        tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
        with torch.no_grad():
            if cache is None:
                names = set(resid_names(model))
                _, cache = model.run_with_cache(
                    tokens, names_filter=lambda n: n in names, return_type=None
                )
            else:
                check_cache(model, tokens, cache, resid_names(model))
            resid, labels = accumulated_resid(model, cache)
            normed = full_final_ln(model, torch.cat([self.translate(resid[:-1]), resid[-1:]]))
        unembedding = (model.W_U.detach(), model.b_U.detach())
        return LensResult(None, labels, normed=normed, final_normed=normed[-1], unembed=unembedding)

    def fit(
        self,
        model: HookedModel,
        task: Any,
        steps: int = 300,
        batch_size: int = 32,
        lr: float = 1e-2,
        seed: int = 0,
        progress: bool = False,
    ) -> list[float]:
        """Trains the translators on ``task`` batches (``task.sample``); the model is frozen.

        Returns the loss (sum over layers of the mean ``KL(final || lens)``) at every step.
        Memory: each step's lens logits with their gradients, O(n_layers batch_size n_ctx
        d_vocab): fit on small batches for a large vocabulary.
        """
        check_model(model)
        self._check_model(model)
        check_int(steps, "steps", 1)
        check_int(batch_size, "batch_size", 1)
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not callable(getattr(task, "sample", None)):
            raise TypeError(f"task must have sample(batch_size, generator), got {task!r}")
        gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        for _ in tqdm(range(steps), disable=not progress, desc="tuned lens", leave=False):
            tokens = check_tokens(
                task.sample(batch_size, gen).tokens, model.cfg.d_vocab, model.cfg.n_ctx
            )
            with torch.no_grad():
                final, cache = _resid_cache(model, tokens)
                resid, _ = accumulated_resid(model, cache)
            lens = unembed(model, self.translate(resid[:-1]))
            kl = kl_divergence(final, lens).mean(dim=(1, 2))  # [n_layers]
            loss = kl.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    def save(self, directory: str | Path) -> None:
        """Writes ``tuned_lens.safetensors`` and ``tuned_lens.json`` into ``directory``.

        Each file is written atomically; the JSON goes last, so a lens whose JSON exists is whole.
        """
        from circuits.files import write_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        write_file(directory / WEIGHTS, safetensors_bytes(tensors))
        meta = {"format": FORMAT, "n_layers": self.n_layers, "d_model": self.d_model}
        write_file(directory / META, (json.dumps(meta, indent=2) + "\n").encode())

    @classmethod
    def load(cls, directory: str | Path, model: HookedModel) -> TunedLens:
        """Reads a lens saved by :meth:`save`, checking it fits ``model``."""
        check_model(model)
        directory = Path(directory)
        for name in (WEIGHTS, META):
            if not (directory / name).is_file():
                raise ValueError(f"{directory}: no {name} (no tuned lens saved here)")
        try:
            meta = json.loads((directory / META).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{directory / META}: not valid JSON ({e})") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory / META}: unknown format {meta.get('format')!r}")
        try:
            lens = cls(meta["n_layers"], meta["d_model"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{directory / META}: bad n_layers/d_model ({e})") from e
        lens._check_model(model)
        lens.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
        return lens.eval()


def _resid_cache(model: HookedModel, tokens: Tensor, cache: Any = None) -> tuple[Tensor, Any]:
    if cache is not None:
        check_cache(model, tokens, cache, resid_names(model))
        return model(tokens).detach(), cache
    final, cache = model.run_with_cache(
        tokens, names_filter=lambda n: n.endswith(("hook_resid_pre", "hook_resid_post"))
    )
    return final.detach(), cache
