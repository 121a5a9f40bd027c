"""TL3 methods and ``HookedTransformer.from_pretrained`` on the shipped stand-in (offline).

Definitions from TransformerLens 3.5.1's HookedTransformer.py: ``all_composition_scores``
(``||left @ right||_F / (||left||_F ||right||_F)`` with left = OV of the earlier head and right
= QK, QK^T or OV of the later one, zero unless the first layer is earlier),
``all_head_labels`` (``L{l}H{h}``), ``tokens_to_residual_directions`` (``W_U[:, token]``),
``load_and_process_state_dict`` (load, then process), ``from_pretrained_no_processing``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer


@pytest.fixture
def standin(standin_hub) -> HookedTransformer:
    return HookedTransformer.from_pretrained("attn-only-2l")


def test_from_pretrained_classmethods(standin: HookedTransformer) -> None:
    assert isinstance(standin, HookedTransformer) and not standin.training
    assert standin.cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")  # TL3
    raw = HookedTransformer.from_pretrained_no_processing("attn-only-2l", device="cpu")
    assert raw.cfg.normalization_type == "LN" and standin.cfg.normalization_type == "LNPre"
    tokens = standin.to_tokens("The quick brown fox").cpu()
    # Processing leaves the log-probabilities unchanged (TL3's claim for fold/centre).
    lp = standin.cpu()(tokens).log_softmax(-1)
    torch.testing.assert_close(lp, raw(tokens).log_softmax(-1), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="checkpoint_index"):
        HookedTransformer.from_pretrained("attn-only-2l", checkpoint_index=3)


def test_load_and_process_state_dict(standin_hub) -> None:
    raw = HookedTransformer.from_pretrained_no_processing("attn-only-2l", device="cpu")
    processed = HookedTransformer.from_pretrained("attn-only-2l", device="cpu")
    fresh = HookedTransformer(raw.cfg)
    fresh.load_and_process_state_dict(raw.state_dict())
    tokens = processed.to_tokens("Numbers too: 1 2 3").cpu()
    torch.testing.assert_close(fresh(tokens), processed(tokens), atol=1e-5, rtol=0)
    assert fresh.cfg.normalization_type == processed.cfg.normalization_type


def test_all_composition_scores_follow_tl3_definition() -> None:
    model = perturbed_model(n_layers=3, d_model=16, n_heads=2).requires_grad_(False)
    OV = model.W_V @ model.W_O  # [layer, head, d_model, d_model]
    QK = model.W_Q @ model.W_K.transpose(-1, -2)

    def score(left: torch.Tensor, right: torch.Tensor) -> float:
        return float((left @ right).norm() / (left.norm() * right.norm()))

    for mode, right in (("Q", QK), ("K", QK.transpose(-1, -2)), ("V", OV)):
        scores = model.all_composition_scores(mode)
        assert scores.shape == (3, 2, 3, 2)
        for l1, h1, l2, h2 in [(0, 1, 1, 0), (0, 0, 2, 1), (1, 1, 2, 1)]:
            expected = score(OV[l1, h1], right[l2, h2])
            assert abs(float(scores[l1, h1, l2, h2]) - expected) < 1e-5
        assert float(scores[1, 0, 1, 1]) == 0 and float(scores[2, 0, 0, 0]) == 0
    with pytest.raises(ValueError, match="mode"):
        model.all_composition_scores("X")


def test_head_labels_and_residual_directions(standin: HookedTransformer) -> None:
    model = perturbed_model(n_layers=2, n_heads=4)
    assert model.all_head_labels() == [f"L{a}H{h}" for a in range(2) for h in range(4)]
    token = standin.to_str_tokens("The quick", prepend_bos=False)[1]  # one token's text
    direction = standin.tokens_to_residual_directions(token)
    assert torch.equal(direction, standin.W_U[:, standin.to_single_token(token)])
    ids = torch.tensor([3, 5])
    assert torch.equal(standin.tokens_to_residual_directions(ids), standin.W_U[:, ids].T)


def test_to_print_details_input_to_embed_and_to_tokens_on_ids(
    standin: HookedTransformer, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.to("cpu", print_details=True)
    assert "cpu" in capsys.readouterr().out
    resid, tokens, short, _ = standin.input_to_embed("hello there", prepend_bos=False)
    assert torch.equal(tokens, standin.to_tokens("hello there", prepend_bos=False))
    assert resid.shape == (1, tokens.shape[1], standin.cfg.d_model) and short is None
    _, _, _, left_mask = standin.input_to_embed(["a", "hello there"], padding_side="left")
    assert left_mask is not None and left_mask[0, 0] == 0 and left_mask[1].all()
    ids = standin.to_tokens("hello", prepend_bos=False)
    with_bos = standin.to_tokens(ids, prepend_bos=True)
    assert torch.equal(with_bos, standin.to_tokens("hello", prepend_bos=True))
    assert torch.equal(standin.to_tokens(ids), ids)
    with pytest.raises(ValueError, match="tokenizer"):
        perturbed_model().to_tokens(torch.tensor([[1, 2]]), prepend_bos=True)
