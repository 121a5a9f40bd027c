"""Zoo and GPT-2 shapes built in-process (random weights): fast exact patching equals one hooked
forward per unit, and the working memory stays in budget (peak RSS of a child process)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from circuits.benchmarks import shapes
from circuits.discovery import Problem, exact_patching
from circuits.discovery.benchmark import naive_exact_patching
from circuits.tasks import repeated_tokens


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "level"), [("attn-only-2l", "edge"), ("gelu-4l", "node"), ("gpt2-small", "node")]
)
def test_fast_exact_patching_equals_the_naive_loop_at_full_size(shape: str, level: str) -> None:
    model = shapes.build(shape)
    probe = repeated_tokens(2, 6, model.cfg.d_vocab, seed=0)
    problem = Problem.build(model, probe, level=level)
    fast = exact_patching(problem).scores.double()
    torch.testing.assert_close(fast, naive_exact_patching(problem), atol=1e-5, rtol=0)


CHILD = """
import resource, torch
from circuits.benchmarks import shapes
from circuits.discovery import Problem, edge_attribution, exact_patching
from circuits.tasks import repeated_tokens
model = shapes.build({shape!r})
probe = repeated_tokens(4, {length}, model.cfg.d_vocab, seed=0)
problem = Problem.build(model, probe)
{call}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_gb(shape: str, length: int, call: str) -> float:
    """Peak RSS (GB, model included) of a fresh process that builds the problem and runs
    ``call``."""
    code = CHILD.format(shape=shape, length=length, call=call)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1e6


@pytest.mark.slow
def test_attn_only_2l_exact_patching_and_eap_ig_fit_in_2_gb() -> None:
    call = "exact_patching(problem); edge_attribution(problem, ig_steps=5)"
    assert _peak_gb("attn-only-2l", 32, call) < 2.0


@pytest.mark.slow
def test_gpt2_small_edge_attribution_fits_in_3_gb() -> None:
    assert _peak_gb("gpt2-small", 16, "edge_attribution(problem)") < 3.0
