"""Issue 20 on pretrained loading: hostile or broken files are one clear error, before any
allocation, and nothing shipped with a checkpoint runs; offline fails in seconds."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuits.pretrained import PretrainedError, from_pretrained
from circuits.pretrained.zoo import TOKENIZER

RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False}
ROOT = Path(__file__).resolve().parents[2]


def snapshot(cache: Path, repo: str) -> Path:
    root = cache / ("models--" + repo.replace("/", "--"))
    return root / "snapshots" / (root / "refs" / "main").read_text()


@pytest.fixture
def zoo_dir(zoo_cache: Path, tmp_path: Path) -> Path:
    """A writable copy of the attn-only-2l stand-in as a local directory."""
    src = snapshot(zoo_cache, "NeelNanda/Attn_Only_2L512W_C4_Code")
    shutil.copytree(src, tmp_path / "zoo")
    return tmp_path / "zoo"


@pytest.fixture
def gpt2_dir(gpt2_cache: Path, tmp_path: Path) -> Path:
    """A writable copy of the gpt2 stand-in (save_pretrained layout) as a local directory."""
    shutil.copytree(snapshot(gpt2_cache, "gpt2"), tmp_path / "gpt2", symlinks=False)
    return tmp_path / "gpt2"


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class _Payload:
    """Unpickling this runs a shell command (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


# --- security ---
def test_a_tokenizer_that_ships_code_is_refused_without_a_prompt(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20 (security 2): transformers asked on stdin, and a piped "y" ran the code."""
    evil = tmp_path / "evil_tokenizer"
    evil.mkdir()
    marker = tmp_path / "ran"
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    auto = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (evil / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "EvilTokenizer", "auto_map": auto})
    )
    _edit_json(zoo_dir / "config.json", tokenizer_name=str(evil))

    def no_prompt(*args: object) -> str:
        raise AssertionError("stdin was asked")

    monkeypatch.setattr(builtins, "input", no_prompt)
    with pytest.raises(PretrainedError, match=r"ships its own code.*refused"):
        from_pretrained(zoo_dir, **RAW)
    assert not marker.exists()
    # tokenizer=False still loads the weights (nothing of the tokenizer is read)
    assert from_pretrained(zoo_dir, tokenizer=False, **RAW).tokenizer is None


@pytest.mark.parametrize("where", ["zoo", "gpt2"])
def test_a_pickle_payload_is_refused_as_unsafe(
    where: str, zoo_dir: Path, gpt2_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 20 (security 3): our message, never torch's advice to switch the protection off."""
    marker = tmp_path / "ran"
    if where == "zoo":
        directory, name = zoo_dir, "model_final.pth"
    else:
        directory, name = gpt2_dir, "pytorch_model.bin"
        (gpt2_dir / "model.safetensors").unlink()
    with open(directory / name, "wb") as f:
        pickle.dump({"embed.W_E": _Payload(marker)}, f)
    with pytest.raises(PretrainedError, match="refused as unsafe") as info:
        from_pretrained(directory, **RAW)
    out, err = capfd.readouterr()
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value) + out + err
    assert name in str(info.value) and "\n" not in str(info.value)


def test_circuits_report_on_a_pickle_payload_says_unsafe(
    zoo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from circuits.cli import main

    marker = tmp_path / "ran"
    with open(zoo_dir / "model_final.pth", "wb") as f:
        pickle.dump({"embed.W_E": _Payload(marker)}, f)
    assert main(["report", str(zoo_dir), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "refused as unsafe" in err and "weights_only" not in err.replace("weights-only", "")
    assert not marker.exists() and not (tmp_path / "r.html").exists()


# --- resources ---
def test_a_gpt2_config_claiming_100000_layers_is_refused_before_allocation(
    gpt2_dir: Path,
) -> None:
    """Issue 20 (resource 5): a MemoryError after minutes at 4.5 GB."""
    import tracemalloc

    _edit_json(gpt2_dir / "config.json", n_layer=100_000)
    tracemalloc.start()
    try:
        with pytest.raises(PretrainedError, match=r"n_layer=100000 but the weights have 2"):
            from_pretrained(gpt2_dir, **RAW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # header and config only: nothing of the 100,000 layers


def test_a_zoo_config_claiming_100000_layers_is_refused(zoo_dir: Path) -> None:
    _edit_json(zoo_dir / "config.json", n_layers=100_000)
    with pytest.raises(PretrainedError, match=r"n_layers=100000 but the weights have 2"):
        from_pretrained(zoo_dir, **RAW)


def test_a_consistent_model_too_big_for_memory_is_refused_by_check_fits(
    gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuits.config import ModelConfig

    def tiny_machine(self: ModelConfig, *args: object, **kwargs: object) -> None:
        raise ValueError("this model does not fit: (a 1 kB machine)")

    monkeypatch.setattr(ModelConfig, "check_fits", tiny_machine)
    with pytest.raises(PretrainedError, match="does not fit"):
        from_pretrained(gpt2_dir, **RAW)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(n_embd=48), r"weights do not fit its config\.json: misshapen: wte\.weight"),
        (dict(vocab_size=999), r"misshapen: wte\.weight"),
        (dict(n_inner=7), r"mlp\.c_fc\.weight"),
        (dict(n_positions=8), r"wpe\.weight"),
        (dict(n_head=5), "not divisible"),
        (dict(activation_function="swish"), "activation_function='swish'"),
        (dict(n_layer="two"), "n_layers"),
    ],
)
def test_a_gpt2_config_that_contradicts_its_weights_is_named(
    gpt2_dir: Path, change: dict, match: str
) -> None:
    _edit_json(gpt2_dir / "config.json", **change)
    with pytest.raises(PretrainedError, match=match) as info:
        from_pretrained(gpt2_dir, **RAW)
    assert "\n" not in str(info.value)


# --- silent wrong answers ---
def test_one_nan_in_a_zoo_checkpoint_is_refused_by_name(zoo_dir: Path) -> None:
    """Issue 20 (silent 7): centring spread one NaN in W_U to every logit."""
    state = torch.load(zoo_dir / "model_final.pth", weights_only=True)
    state["unembed.W_U"][3, 5] = float("nan")
    torch.save(state, zoo_dir / "model_final.pth")
    with pytest.raises(PretrainedError, match=r"tensor unembed\.W_U contains NaN"):
        from_pretrained(zoo_dir)


def test_one_nan_in_a_gpt2_directory_is_refused_by_name(gpt2_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(gpt2_dir / "model.safetensors")
    state["transformer.h.1.mlp.c_proj.weight"][0, 0] = float("inf")
    save_file(state, gpt2_dir / "model.safetensors")
    with pytest.raises(PretrainedError, match=r"h\.1\.mlp\.c_proj\.weight contains NaN or inf"):
        from_pretrained(gpt2_dir)


# --- one line instead of a traceback ---
def test_a_zoo_config_without_d_mlp_is_named(zoo_cache: Path, tmp_path: Path) -> None:
    src = snapshot(zoo_cache, "NeelNanda/GELU_1L512W_C4_Code")
    shutil.copytree(src, tmp_path / "gelu")
    cfg = json.loads((tmp_path / "gelu" / "config.json").read_text())
    del cfg["d_mlp"]
    (tmp_path / "gelu" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match=r"missing \['d_mlp'\]"):
        from_pretrained(tmp_path / "gelu", **RAW)


@pytest.mark.parametrize("name", ["foo/..", "../x", "a/b/c/d", "", " "])
def test_names_that_are_no_repository_are_one_error(name: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        from_pretrained(name)
    assert "\n" not in str(info.value)


def test_a_truncated_safetensors_file_is_named(gpt2_dir: Path) -> None:
    data = (gpt2_dir / "model.safetensors").read_bytes()
    (gpt2_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match=r"model\.safetensors is truncated"):
        from_pretrained(gpt2_dir, **RAW)
    (gpt2_dir / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(PretrainedError, match="not a readable safetensors file"):
        from_pretrained(gpt2_dir, **RAW)


def test_a_pickled_pytorch_model_bin_of_tensors_loads(gpt2_dir: Path, gpt2_cache: Path) -> None:
    """The older layout (a weights-only pickle of tensors, GPT2Model names) is fine."""
    from safetensors.torch import load_file

    state = load_file(gpt2_dir / "model.safetensors")
    plain = {k.removeprefix("transformer."): v for k, v in state.items()}
    plain["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)  # the mask buffer older files hold
    (gpt2_dir / "model.safetensors").unlink()
    torch.save(plain, gpt2_dir / "pytorch_model.bin")
    model = from_pretrained(gpt2_dir, **RAW)
    reference = from_pretrained(snapshot(gpt2_cache, "gpt2"), **RAW)
    ids = torch.arange(10)[None]
    torch.testing.assert_close(model(ids), reference(ids), atol=0, rtol=0)


# --- offline ---
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CHILD = """
import sys, time
t = time.monotonic()
try:
    if sys.argv[1] == "report":
        from circuits.cli import main
        rc = main(["report", "attn-only-2l", "-o", sys.argv[2]])
        err = ""
    else:
        from circuits.pretrained import from_pretrained
        from_pretrained(sys.argv[1])
        rc, err = 0, ""
except Exception as e:
    rc, err = 1, f"{type(e).__name__}: {e}"
print(f"ELAPSED {time.monotonic() - t:.1f}")
print(err)
"""


@pytest.mark.parametrize("what", ["attn-only-2l", "gpt2", "report"])
def test_offline_with_nothing_cached_fails_in_seconds_naming_the_standin(
    what: str, tmp_path: Path
) -> None:
    """The hub unreachable (HF_ENDPOINT at a closed port), not in offline mode: huggingface_hub
    retried for ~40 s ("Retrying in 8s") and the error did not name data/standin_hub."""
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "HF_HUB_CACHE": str(tmp_path / "empty"),
    }
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    args = [sys.executable, "-c", CHILD, what, str(tmp_path / "r.html")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    elapsed = float(done.stdout.split("ELAPSED ")[1].split()[0])
    message = done.stdout.split("\n", 2)[1] if what != "report" else done.stderr.strip()
    assert elapsed < 15, (elapsed, done.stderr[-2000:])  # the retry loop took 25-40 s
    assert "Retrying" not in done.stderr
    assert "HF_HUB_CACHE=" in message and "standin_hub" in message, message
    assert len(message.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_the_standin_named_in_the_message_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the offline message promises: HF_HUB_CACHE=data/standin_hub loads attn-only-2l."""
    import huggingface_hub.constants

    from circuits.pretrained.hub import STANDIN_HUB

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(STANDIN_HUB))
    model = from_pretrained("attn-only-2l")
    assert model.tokenizer is not None and model.tokenizer.name_or_path
    assert snapshot(STANDIN_HUB, TOKENIZER).is_dir()
    assert model(model.to_tokens("Hello")).isfinite().all()
