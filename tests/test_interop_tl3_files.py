"""from_tl3 on files: truncated, incomplete, unsafe or non-finite ones are one clear error."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import perturbed_model

from circuits.interop.tl3 import from_tl3, to_tl3_state_dict


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = to_tl3_state_dict(perturbed_model())
    torch.save(state, tmp_path / "tl3.pt")
    return tmp_path / "tl3.pt", state


def test_a_good_file_loads_with_the_same_logits(saved: tuple[Path, dict]) -> None:
    path, _ = saved
    ids = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(from_tl3(path)(ids), perturbed_model()(ids), atol=0, rtol=0)


def test_a_truncated_file_is_named(saved: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = saved
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"cut\.pt is not a readable state dict"):
        from_tl3(tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="no file"):
        from_tl3(tmp_path / "absent.pt")


def test_an_incomplete_or_misshapen_state_dict_names_the_tensor(
    saved: tuple[Path, dict], tmp_path: Path
) -> None:
    _, state = saved
    incomplete = {k: v for k, v in state.items() if k != "blocks.1.mlp.W_in"}
    torch.save(incomplete, tmp_path / "incomplete.pt")
    with pytest.raises(ValueError, match=r"Missing key.*blocks\.1\.mlp\.W_in"):
        from_tl3(tmp_path / "incomplete.pt")
    with pytest.raises(ValueError, match=r"size mismatch for blocks\.1\.attn\.W_Q"):
        from_tl3({**state, "blocks.1.attn.W_Q": torch.zeros(4, 32, 7)})
    with pytest.raises(ValueError, match=r"not a complete TransformerLens 3\.x state dict"):
        from_tl3({k: v for k, v in state.items() if k != "embed.W_E"})
    with pytest.raises(ValueError, match="not a tensor"):
        from_tl3({**state, "embed.W_E": 3})


def test_a_nan_weight_is_refused_by_name(saved: tuple[Path, dict]) -> None:
    _, state = saved
    w_u = state["unembed.W_U"].clone()
    w_u[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"unembed\.W_U contains NaN"):
        from_tl3({**state, "unembed.W_U": w_u})


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo the payload ran",))


def test_a_pickle_payload_is_refused_as_unsafe_without_torchs_advice(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"embed.W_E": _Payload()}, f)
    with pytest.raises(ValueError, match="refused as unsafe") as info:
        from_tl3(tmp_path / "evil.pt")
    out, err = capfd.readouterr()
    assert "payload ran" not in out + err
    assert "weights_only=False" not in str(info.value) + err
