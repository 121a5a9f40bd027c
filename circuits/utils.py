"""TransformerLens 3's ``utils`` module, so ``from transformer_lens import utils`` code runs.

``import circuits as transformer_lens`` then ``transformer_lens.utils.get_act_name("pattern", 0)``.
TransformerLens 4 removed ``transformer_lens.utils`` but kept its functions, with the same
names and definitions, in ``transformer_lens.utilities``: they are re-exported from there (so
they are TransformerLens's own code, not copies). ``sample_logits`` is the one exception: it is
ours (:func:`circuits.model.sampling.sample_logits`) behind TL3's positional signature, because
TransformerLens's silently inverts the distribution for a negative temperature and crashes
inside torch for ``top_k=0``.

Importing this module imports TransformerLens (and torch); ``import circuits`` alone does not.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import (
    USE_DEFAULT_VALUE,
    LocallyOverridenDefaults,
    Slice,
    SliceInput,
    calc_fan_in_and_fan_out,
    check_structure,
    clear_huggingface_cache,
    composition_scores,
    download_file_from_hf,
    filter_dict_by_prefix,
    gelu_fast,
    gelu_new,
    get_act_name,
    get_attention_mask,
    get_corner,
    get_cumsum_along_dim,
    get_dataset,
    get_device,
    get_input_with_manually_prepended_bos,
    get_nested_attr,
    get_offset_position_ids,
    get_tokenizer_with_bos,
    get_tokens_with_bos_removed,
    init_kaiming_normal_,
    init_kaiming_uniform_,
    init_xavier_normal_,
    init_xavier_uniform_,
    is_library_available,
    is_lower_triangular,
    is_square,
    keep_single_column,
    lm_accuracy,
    lm_cross_entropy_loss,
    override_or_use_default_value,
    print_gpu_mem,
    remove_batch_dim,
    repeat_along_head_dimension,
    set_nested_attr,
    solu,
    test_prompt,
    to_numpy,
    tokenize_and_concatenate,
    transpose,
    warn_if_mps,
)

# pytest would collect a module-level ``test_prompt`` in a test file that star-imports us.
test_prompt.__test__ = False  # type: ignore[attr-defined]


def sample_logits(
    final_logits: Float[Tensor, "batch d_vocab"],
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    tokens: Int[Tensor, "batch pos"] | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """One sampled id per row, TL3's ``utils.sample_logits`` (greedy for ``temperature=0``).

    The arguments are validated first (``temperature >= 0``, ``1 <= top_k <= d_vocab``,
    ``0 < top_p <= 1``, finite ``freq_penalty >= 0``, finite logits) with one ``ValueError``.
    """
    from circuits.model.sampling import sample_logits as _sample

    return _sample(
        final_logits,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        freq_penalty=freq_penalty,
        tokens=tokens,
        generator=generator,
    )


def __getattr__(name: str) -> Any:
    # TL3 code sometimes reaches for a helper TL4 still has under transformer_lens.utilities.
    import transformer_lens.utilities as tl_utilities

    if hasattr(tl_utilities, name):
        return getattr(tl_utilities, name)
    raise AttributeError(f"module 'circuits.utils' has no attribute {name!r}")


__all__ = [
    "USE_DEFAULT_VALUE",
    "LocallyOverridenDefaults",
    "Slice",
    "SliceInput",
    "calc_fan_in_and_fan_out",
    "check_structure",
    "clear_huggingface_cache",
    "composition_scores",
    "download_file_from_hf",
    "filter_dict_by_prefix",
    "gelu_fast",
    "gelu_new",
    "get_act_name",
    "get_attention_mask",
    "get_corner",
    "get_cumsum_along_dim",
    "get_dataset",
    "get_device",
    "get_input_with_manually_prepended_bos",
    "get_nested_attr",
    "get_offset_position_ids",
    "get_tokenizer_with_bos",
    "get_tokens_with_bos_removed",
    "init_kaiming_normal_",
    "init_kaiming_uniform_",
    "init_xavier_normal_",
    "init_xavier_uniform_",
    "is_library_available",
    "is_lower_triangular",
    "is_square",
    "keep_single_column",
    "lm_accuracy",
    "lm_cross_entropy_loss",
    "override_or_use_default_value",
    "print_gpu_mem",
    "remove_batch_dim",
    "repeat_along_head_dimension",
    "sample_logits",
    "set_nested_attr",
    "solu",
    "test_prompt",
    "to_numpy",
    "tokenize_and_concatenate",
    "transpose",
    "warn_if_mps",
]
