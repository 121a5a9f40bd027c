"""The package follows the model's device.

On the CPU always; on the ``meta`` device (tensors without data: any hidden ``.cpu()``,
``.numpy()`` or copy back raises there) for every path that only computes tensors; on CUDA or
MPS when the machine has one (skipped cleanly otherwise), where results must equal the CPU's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer, TrainConfig, analysis, plots, train
from circuits.tasks import InductionTask

ACCELERATORS = [
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
    pytest.param(
        "mps",
        marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS device"),
    ),
]
DEVICES = [pytest.param("cpu"), *ACCELERATORS]


def tokens(batch: int = 2, pos: int = 12) -> torch.Tensor:
    return torch.randint(0, 20, (batch, pos), generator=torch.Generator().manual_seed(0))


def model_on(device: str) -> HookedTransformer:
    return perturbed_model(d_vocab=20, n_ctx=24).to(device)


def on(x: Any, device: str) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_cfg_device_tells_the_truth(device: str) -> None:
    model = model_on(device)
    assert torch.device(model.cfg.device).type == device
    assert all(p.device.type == device for p in model.parameters())
    # Every module's copy of the config agrees.
    assert all(
        torch.device(m.cfg.device).type == device for m in model.modules() if hasattr(m, "cfg")
    )
    model.to("cpu")
    assert model.cfg.device == "cpu"


@pytest.mark.parametrize("device", DEVICES)
def test_forward_cache_generate_and_processing_follow_the_model(device: str) -> None:
    cpu = model_on("cpu")
    model = model_on(device)
    ids = tokens()
    logits, cache = model.run_with_cache(ids)  # CPU ids are moved to the model
    assert on(logits, device) and on(cache["blocks.1.attn.hook_pattern"], device)
    torch.testing.assert_close(logits.cpu(), cpu(ids), atol=1e-4, rtol=0)
    kw = dict(stop_at_eos=False, verbose=False)  # no tokenizer: no eos id to stop at
    out = model.generate(ids, 4, do_sample=False, **kw)
    assert on(out, device)
    assert torch.equal(out.cpu(), cpu.generate(ids, 4, do_sample=False, **kw))
    assert torch.equal(model.generate(ids, 4, seed=1, **kw), model.generate(ids, 4, seed=1, **kw))
    model.process_weights_()
    assert all(p.device.type == device for p in model.parameters())
    assert torch.device(model.cfg.device).type == device
    exported = model.to_tl3_state_dict()
    assert all(v.device.type == device for v in exported.values())


@pytest.mark.parametrize("device", DEVICES)
def test_analysis_follows_the_model_and_agrees_with_the_cpu(device: str) -> None:
    ids = tokens()
    results: dict[str, dict[str, torch.Tensor]] = {}
    for where in ("cpu", device):
        model = model_on(where)
        patterns = analysis.attention_patterns(model, ids)
        targets = ids.roll(-1, dims=1)
        results[where] = {
            "patterns": patterns,
            "previous": analysis.previous_token_score(patterns),
            "K": analysis.composition_scores(model, "K"),
            "copying": analysis.copying_score(analysis.full_ov_circuit(model)),
            "dla": analysis.direct_logit_attribution(model, ids, targets).attributions,
            "lens": analysis.logit_lens(model, ids).logits,
            "decomposition": analysis.decompose_resid(model, ids).components,
        }
    for name, value in results[device].items():
        assert on(value, device), name
        torch.testing.assert_close(value.cpu(), results["cpu"][name], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_plots_from_a_model_on_the_device(device: str) -> None:
    model = model_on(device)
    ids = tokens(batch=1)
    fig = plots.attention_patterns(model, ids)
    reference = plots.attention_patterns(model_on("cpu"), ids)
    assert len(fig.data) == len(reference.data)
    for ours, theirs in zip(fig.data, reference.data, strict=True):
        torch.testing.assert_close(
            torch.as_tensor(ours.z), torch.as_tensor(theirs.z), atol=1e-5, rtol=0, equal_nan=True
        )
    patterns = analysis.attention_patterns(model, ids)
    assert plots.head_scores(analysis.previous_token_score(patterns)).data


def tiny_run(device: str | None, model_device: str = "cpu") -> tuple[HookedTransformer, Any]:
    model = perturbed_model(d_vocab=16, n_ctx=24).to(model_device)
    task = InductionTask(d_vocab=16, seq_len=24, min_period=3, max_period=10)
    cfg = TrainConfig(
        steps=4, batch_size=8, eval_every=2, probe_size=8, progress=False, device=device
    )
    return model, train(model, task, cfg)


def test_train_device_cpu_is_the_same_run() -> None:
    _, default = tiny_run(None)
    _, explicit = tiny_run("cpu")
    assert default.losses == explicit.losses


@pytest.mark.parametrize("device", ACCELERATORS)
def test_train_on_an_accelerator(device: str) -> None:
    model, result = tiny_run(device)
    assert all(p.device.type == device for p in model.parameters())
    _, cpu = tiny_run("cpu")
    # Same data stream and start: the first loss agrees (later ones drift with float order).
    assert abs(result.losses[0] - cpu.losses[0]) < 1e-4
    assert result.history[-1]["step"] == 4
    # A model already there trains there with device=None.
    model, _ = tiny_run(None, model_device=device)
    assert all(p.device.type == device for p in model.parameters())


def test_train_config_device_is_validated() -> None:
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="not-a-device")
    assert TrainConfig(device="cpu").to_dict()["device"] == "cpu"


# --- meta: shapes only, so any hidden copy to the CPU would raise ---
def test_meta_device_computes_without_copying_back() -> None:
    model = model_on("meta")
    assert model.cfg.device == "meta"
    ids = tokens()
    logits, cache = model.run_with_cache(ids)
    assert on(logits, "meta") and logits.shape == (2, 12, 20)
    assert on(cache["blocks.0.hook_resid_post"], "meta")
    assert model.generate(ids, 3, do_sample=False, stop_at_eos=False).shape == (2, 15)
    assert on(model.generate(ids, 3, top_k=4, seed=0, stop_at_eos=False), "meta")
    outputs = {
        "patterns": analysis.attention_patterns(model, ids),
        "K": analysis.composition_scores(model, "K"),
        "copying": analysis.copying_score(analysis.full_ov_circuit(model)),
        "lens": analysis.logit_lens(model, ids).logits,
        "decomposition": analysis.decompose_resid(model, ids).components,
        # (direct_logit_attribution is left out: it validates its cache by value, which a
        # tensor without data cannot answer; it is checked on the CPU and accelerators above.)
        "accumulated_bias": model.accumulated_bias(2),
    }
    for name, value in outputs.items():
        assert on(value, "meta"), name
    model.process_weights_()
    assert model.cfg.normalization_type == "LNPre"
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(v.device.type == "meta" for v in model.to_tl3_state_dict().values())
