"""``import circuits as transformer_lens``: TL3's names, and ``utils`` with TL3's definitions.

Expected values come from TransformerLens 3.5.1's documentation and its own unit tests
(tests/unit/test_utils.py, utilities/*.py docstrings), not from our implementation.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def test_import_circuits_stays_light() -> None:
    code = (
        "import sys, circuits\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_tl3_top_level_names() -> None:
    import transformer_lens.hook_points
    from transformer_lens.ActivationCache import ActivationCache as TLCache
    from transformer_lens.FactoredMatrix import FactoredMatrix as TLFactored

    import circuits as transformer_lens
    from circuits import (
        ActivationCache,
        FactoredMatrix,
        HookedTransformer,
        HookedTransformerConfig,
        HookPoint,
        head_detector,
        patching,
        utils,
    )

    assert ActivationCache is TLCache and FactoredMatrix is TLFactored
    assert HookPoint is transformer_lens.hook_points.HookPoint
    assert transformer_lens.HookedTransformer is HookedTransformer
    assert transformer_lens.HookedTransformerConfig is HookedTransformerConfig
    assert transformer_lens.utils is utils and transformer_lens.utilities is utils
    assert callable(patching.get_act_patch_resid_pre)
    assert callable(head_detector.detect_head)
    assert transformer_lens.TransformerLensKeyValueCache.init_cache is not None
    with pytest.raises(AttributeError):
        transformer_lens.NoSuchThing  # noqa: B018


@pytest.mark.parametrize(
    "args, expected",
    [  # TL3's get_act_name docstring and tests
        (("embed",), "hook_embed"),
        (("k", 6, "a"), "blocks.6.attn.hook_k"),
        (("scale", 4, "ln1"), "blocks.4.ln1.hook_scale"),
        (("pre", 2), "blocks.2.mlp.hook_pre"),
        (("pattern", 0), "blocks.0.attn.hook_pattern"),
        (("resid_pre", 3), "blocks.3.hook_resid_pre"),
        (("attn", 1), "blocks.1.attn.hook_pattern"),
        (("q", 0), "blocks.0.attn.hook_q"),
        (("result", 2), "blocks.2.attn.hook_result"),
        (("normalized", 1, "ln2"), "blocks.1.ln2.hook_normalized"),
    ],
)
def test_get_act_name(args: tuple, expected: str) -> None:
    from circuits import utils

    assert utils.get_act_name(*args) == expected


def test_tensor_helpers() -> None:
    from circuits import utils

    x = torch.arange(12.0).reshape(1, 3, 4)
    assert isinstance(utils.to_numpy(x), np.ndarray)
    assert np.array_equal(utils.to_numpy([1, 2]), np.array([1, 2]))
    assert utils.remove_batch_dim(x).shape == (3, 4)
    assert utils.remove_batch_dim(torch.zeros(2, 3)).shape == (2, 3)  # only a batch of 1
    big = torch.arange(100.0).reshape(10, 10)
    assert torch.equal(utils.get_corner(big, 3), big[:3, :3])
    assert utils.is_square(torch.ones(3, 3)) and not utils.is_square(torch.ones(3, 4))
    assert utils.is_lower_triangular(torch.ones(3, 3).tril())


def test_slice() -> None:
    from circuits import utils

    x = torch.arange(10)
    assert torch.equal(utils.Slice(3).apply(x), torch.tensor(3))
    assert torch.equal(utils.Slice((2, 5)).apply(x), torch.tensor([2, 3, 4]))
    assert torch.equal(utils.Slice([1, 7]).apply(x), torch.tensor([1, 7]))
    assert torch.equal(utils.Slice(None).apply(x), x)
    assert utils.Slice((1, 8, 2)).indices(10).tolist() == [1, 3, 5, 7]


def test_lm_loss_and_accuracy_follow_tl3_definitions() -> None:
    from circuits import utils

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 6), generator=g)
    # TL3: mean next-token cross-entropy; per_token gives [batch, pos - 1].
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    assert torch.allclose(utils.lm_cross_entropy_loss(logits, tokens), expected)
    assert utils.lm_cross_entropy_loss(logits, tokens, per_token=True).shape == (2, 5)
    correct = logits[:, :-1].argmax(-1) == tokens[:, 1:]
    assert torch.equal(utils.lm_accuracy(logits, tokens, per_token=True), correct)
    assert torch.allclose(utils.lm_accuracy(logits, tokens), correct.float().mean())


def test_get_device_is_the_best_available() -> None:
    from circuits import utils

    assert utils.get_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    utils.print_gpu_mem("step")  # prints on CUDA, says nothing otherwise: must not raise


def test_sample_logits_is_ours_and_refuses_bad_arguments() -> None:
    from circuits import utils

    logits = torch.tensor([[0.0, 5.0, 1.0]])
    assert utils.sample_logits(logits, temperature=0.0).tolist() == [1]
    for kwargs in (dict(temperature=-1.0), dict(top_k=0), dict(freq_penalty=float("inf"))):
        with pytest.raises(ValueError):
            utils.sample_logits(logits, **kwargs)


def test_tokenize_and_concatenate_and_test_prompt_on_the_standin(standin_hub, capsys) -> None:
    import datasets

    from circuits import HookedTransformer, utils

    model = HookedTransformer.from_pretrained("attn-only-2l", device="cpu")
    data = datasets.Dataset.from_dict({"text": ["The quick brown fox. " * 8] * 4})
    tokens = utils.tokenize_and_concatenate(
        data, model.tokenizer, max_length=16, num_proc=None, add_bos_token=True
    )
    batch = tokens[:]["tokens"]
    assert batch.shape[1] == 16 and bool((batch[:, 0] == model.tokenizer.bos_token_id).all())
    utils.test_prompt("The quick brown", " fox", model, prepend_space_to_answer=False)
    out = capsys.readouterr().out
    assert "Tokenized prompt" in out and "Ranks of the answer tokens" in out
