"""The compiled attention kernel (circuits/training/native_attention.{c,py}): the same function as
a float64 reference, forward, backward and patterns, over head widths, sequence lengths that are
and are not multiples of 16, strided inputs; and every way of not having it falls back."""

from __future__ import annotations

import pytest
import torch

from circuits.training import native_attention as na
from circuits.training import stacked_attention
from circuits.training.stacked_attention import attention, attention_from_tables


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """The module as in a new process, building into an empty cache under tmp_path."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    monkeypatch.delenv("CIRCUITS_NATIVE", raising=False)
    monkeypatch.setattr(na, "_tried", False)
    monkeypatch.setattr(na, "_lib", None)
    monkeypatch.setattr(na, "_status", "not loaded yet")
    return tmp_path


def _lib():
    lib = na.load()
    assert lib is not None, na.status()  # CI has a C compiler: a missing build is a failure
    return lib


def _reference(q, k, v, batch, n, scale):
    G, bp, ne = q.shape
    p = bp // batch
    q4, k4, v4 = (x.view(G * batch, p, n, -1).transpose(1, 2) for x in (q, k, v))
    scores = q4 @ k4.transpose(-1, -2) * scale
    causal = torch.ones(p, p, dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    z = (pattern @ v4).transpose(1, 2).reshape(G, bp, ne)
    return z, pattern.reshape(G, batch, n, p, p)


def _inputs(G, batch, pos, n, e, packed, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if packed:  # layer 0's q, k, v: views into one [G, rows, 3, n * e] tensor
        base = torch.randn(G, batch * pos, 3, n * e, generator=gen, dtype=torch.float64)
        return base.unbind(2)
    return [torch.randn(G, batch * pos, n * e, generator=gen, dtype=torch.float64) for _ in "qkv"]


@pytest.mark.parametrize(
    ("e", "pos", "n", "packed"),
    [
        (16, 48, 2, True),
        (16, 48, 2, False),
        (16, 1, 1, False),
        (16, 7, 3, True),
        (16, 17, 2, False),
        (32, 33, 2, True),
        (48, 20, 1, False),
        (64, 64, 2, True),
    ],
)
def test_forward_and_backward_equal_the_float64_reference(e, pos, n, packed):
    lib = _lib()
    G, batch, scale = 2, 3, 1 / e**0.5
    q64, k64, v64 = (x.clone().requires_grad_(True) for x in _inputs(G, batch, pos, n, e, False))
    if packed:
        q64, k64, v64 = (
            x.requires_grad_(True) for x in torch.stack([q64, k64, v64], 2).detach().unbind(2)
        )
    dz = torch.randn(G, batch * pos, n * e, dtype=torch.float64)
    z64, _ = _reference(q64, k64, v64, batch, n, scale)
    z64.backward(dz)
    leaves = [x.detach().float().requires_grad_(True) for x in (q64, k64, v64)]
    if packed:  # the same strided layout, in float32
        base = torch.stack([x.detach().float() for x in (q64, k64, v64)], 2)
        leaves = [x.requires_grad_(True) for x in base.unbind(2)]
        assert leaves[0].stride(1) == 3 * n * e
    z = na.NativeAttention.apply(lib, *leaves, batch, n, scale)
    z.backward(dz.float())
    torch.testing.assert_close(z.double(), z64.detach(), rtol=0, atol=2e-6)
    for got, want in zip(leaves, (q64, k64, v64), strict=True):
        tol = 2e-6 * max(1.0, want.grad.abs().max().item())
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0, atol=tol)


def test_patterns_are_the_softmax_with_zeros_above_the_diagonal():
    lib = _lib()
    G, batch, pos, n, e = 2, 2, 19, 2, 16
    q, k, v = (x.float() for x in _inputs(G, batch, pos, n, e, True, seed=1))
    pattern = torch.full((G, batch, n, pos, pos), float("nan"))
    z, _ = na.forward(lib, q, k, v, batch, n, 0.25, pattern)
    z64, want = _reference(*(x.double() for x in (q, k, v)), batch, n, 0.25)
    torch.testing.assert_close(pattern.double(), want, rtol=0, atol=1e-6)
    assert (pattern.triu(1) == 0).all()
    torch.testing.assert_close(z.double(), z64, rtol=0, atol=2e-6)


def test_attention_uses_the_kernel_for_patterns_without_gradients(monkeypatch):
    _lib()
    G, batch, pos, n, e = 3, 2, 12, 2, 16
    q, k, v = (x.float() for x in _inputs(G, batch, pos, n, e, False, seed=2))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    calls = []
    real = stacked_attention.native_forward
    monkeypatch.setattr(
        stacked_attention, "native_forward", lambda *a: calls.append(a[-1]) or real(*a)
    )
    with torch.no_grad():
        patterns: list[torch.Tensor] = []
        z = attention(q, k, v, batch, n, 0.25, patterns)
    assert len(calls) == 1 and calls[0] is patterns[0]
    z64, want = _reference(*(x.double() for x in (q, k, v)), batch, n, 0.25)
    torch.testing.assert_close(z.double(), z64, rtol=0, atol=2e-6)
    torch.testing.assert_close(patterns[0].double(), want, rtol=0, atol=1e-6)


def test_unsupported_head_widths_use_pytorch():
    assert [w for w in range(1, 80) if na.supports(w)] == [16, 32, 48, 64]
    G, batch, pos, n, e = 2, 2, 10, 2, 8
    q, k, v = (x.float() for x in _inputs(G, batch, pos, n, e, False, seed=3))
    z = attention(q, k, v, batch, n, 0.3)
    z64, _ = _reference(*(x.double() for x in (q, k, v)), batch, n, 0.3)
    torch.testing.assert_close(z.double(), z64, rtol=0, atol=2e-6)


def test_builds_once_and_then_loads_from_the_cache(fresh):
    assert na.load() is not None
    assert na.status().startswith("native kernel (built ")
    built = list((fresh / "kernels").glob("attention-*.so"))
    assert len(built) == 1, built
    mtime = built[0].stat().st_mtime_ns
    na._tried = False
    assert na.load() is not None
    assert na.status().startswith("native kernel (cached ")
    assert built[0].stat().st_mtime_ns == mtime
    assert not list((fresh / "kernels").glob(".build-*")), "a temporary file was left behind"


def test_a_damaged_cache_file_is_rebuilt(fresh, monkeypatch):
    assert na.load() is not None
    (built,) = (fresh / "kernels").glob("attention-*.so")
    # The same name in another cache, damaged before anything loads it (a loaded library
    # is never written in place: builds land under a temporary name and are renamed).
    other = fresh / "other"
    (other / "kernels").mkdir(parents=True)
    damaged = other / "kernels" / built.name
    damaged.write_bytes(b"not a library")
    monkeypatch.setenv("CIRCUITS_CACHE", str(other))
    na._tried, na._lib = False, None
    assert na.load() is not None, na.status()
    assert na.status().startswith("native kernel (built "), na.status()
    assert damaged.stat().st_size > 1000


def test_no_compiler_falls_back_to_pytorch(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert na.load() is None
    assert "no C compiler" in na.status() and "/nonexistent/cc" in na.status()
    G, batch, pos, n, e = 2, 2, 9, 2, 16
    q, k, v = (x.float() for x in _inputs(G, batch, pos, n, e, True, seed=4))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    z = attention(q, k, v, batch, n, 0.25)  # the fused PyTorch kernel instead
    z64, _ = _reference(*(x.double() for x in (q, k, v)), batch, n, 0.25)
    torch.testing.assert_close(z.double(), z64, rtol=0, atol=2e-6)


def test_a_failing_compiler_falls_back_with_its_message(fresh, monkeypatch, tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: out of cheese' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    assert na.load() is None
    assert "out of cheese" in na.status()
    assert not list((fresh / "kernels").glob("*.so")), "a failed build left a file"


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("CIRCUITS_NATIVE", "0")
    assert na.load() is None
    assert "CIRCUITS_NATIVE=0" in na.status()


def test_the_self_check_rejects_a_wrong_kernel():
    lib = _lib()

    class Wrong:  # the real backward; the forward with its scale off by 1%
        circuits_attention_backward = lib.circuits_attention_backward

        @staticmethod
        def circuits_attention_forward(*args):
            return lib.circuits_attention_forward(*args[:7], args[7] * 1.01, *args[8:])

    assert na._self_check(lib) is None
    assert na._self_check(Wrong()) is not None


def _tables(G, batch, pos, n, e, vocab, seed):
    gen = torch.Generator().manual_seed(seed)
    by_token = torch.randn(G * vocab, 3 * n * e, generator=gen, dtype=torch.float64)
    by_pos = torch.randn(G, pos, 3 * n * e, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, vocab, (G, batch, pos), generator=gen)
    return by_token, by_pos, ids


def _looked_up(by_token, by_pos, ids, vocab):
    """The reference: the rows the first layer's lookup builds, ``[G, batch * pos, 3 ne]``."""
    G, batch, pos = ids.shape
    flat = (ids + torch.arange(G).view(G, 1, 1) * vocab).reshape(G, batch * pos)
    return by_token[flat] + by_pos.repeat(1, batch, 1)


@pytest.mark.parametrize(
    ("e", "pos", "n", "vocab"), [(16, 48, 2, 32), (16, 17, 3, 5), (32, 9, 1, 7)]
)
def test_attention_from_tables_equals_the_lookup_then_attention(e, pos, n, vocab):
    lib = _lib()
    G, batch, scale = 3, 2, 1 / e**0.5
    tables = [t.requires_grad_(True) for t in _tables(G, batch, pos, n, e, vocab, seed=5)[:2]]
    _, _, ids = _tables(G, batch, pos, n, e, vocab, seed=5)
    dz = torch.randn(G, batch * pos, n * e, dtype=torch.float64)
    packed = _looked_up(*tables, ids, vocab)
    z64, _ = _reference(*packed.split(n * e, -1), batch, n, scale)
    z64.backward(dz)
    tok32, pos32 = (t.detach().float().requires_grad_(True) for t in tables)
    z = na.TableAttention.apply(lib, tok32, pos32, ids, batch, n, scale)
    z.backward(dz.float())
    torch.testing.assert_close(z.double(), z64.detach(), rtol=0, atol=2e-6)
    for got, want in zip((tok32.grad, pos32.grad), tables, strict=True):
        # Sums over every position that reads a row: tolerances grow with the row's uses.
        tol = 1e-5 * max(1.0, want.grad.abs().max().item())
        torch.testing.assert_close(got.double(), want.grad, rtol=0, atol=tol)


def test_attention_from_tables_patterns_and_when_it_declines(monkeypatch):
    _lib()
    G, batch, pos, n, e, vocab = 2, 3, 11, 2, 16, 6
    by_token, by_pos, ids = (
        t.float() if t.is_floating_point() else t
        for t in _tables(G, batch, pos, n, e, vocab, seed=6)
    )
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    packed = _looked_up(by_token.double(), by_pos.double(), ids, vocab)
    z64, want = _reference(*packed.split(n * e, -1), batch, n, 0.3)
    with torch.no_grad():
        patterns: list[torch.Tensor] = []
        z = attention_from_tables(by_token, by_pos, ids, batch, n, 0.3, patterns)
    torch.testing.assert_close(z.double(), z64, rtol=0, atol=2e-6)
    torch.testing.assert_close(patterns[0].double(), want, rtol=0, atol=1e-6)
    # Patterns with gradients, several threads, or an unsupported width: the caller's lookup.
    assert attention_from_tables(by_token, by_pos, ids, batch, n, 0.3, []) is None
    narrow = _tables(G, batch, pos, 4, 8, vocab, seed=7)
    assert attention_from_tables(narrow[0].float(), narrow[1].float(), ids, batch, 4, 0.3) is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert attention_from_tables(by_token, by_pos, ids, batch, n, 0.3) is None


def test_a_cache_file_others_could_have_written_is_never_loaded(fresh):
    assert na.load() is not None
    (built,) = (fresh / "kernels").glob("attention-*.so")
    built.chmod(0o777)  # group- and world-writable: someone else could have replaced it
    na._tried, na._lib = False, None
    assert na.load() is None
    assert "refusing the cached kernel" in na.status() and "writable by other users" in na.status()


def test_a_link_in_the_cache_is_never_followed(fresh, tmp_path):
    assert na.load() is not None
    (built,) = (fresh / "kernels").glob("attention-*.so")
    elsewhere = tmp_path / "elsewhere.so"
    built.rename(elsewhere)
    built.symlink_to(elsewhere)
    na._tried, na._lib = False, None
    assert na.load() is None
    assert "symbolic link" in na.status()


def test_a_mistaken_cache_location_falls_back_and_writes_nothing(fresh, monkeypatch, tmp_path):
    from circuits import HookedTransformer
    from circuits.config import ModelConfig

    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    checkpoint = tmp_path / "ckpt"
    HookedTransformer(
        ModelConfig(n_layers=1, d_model=8, n_ctx=4, d_vocab=5, n_heads=1, d_head=8)
    ).save(checkpoint)
    before = sorted(p.name for p in checkpoint.iterdir())
    for place, says in ((plain, "not a folder"), (checkpoint, "inside the checkpoint")):
        monkeypatch.setenv("CIRCUITS_CACHE", str(place))
        na._tried, na._lib = False, None
        assert na.load() is None
        assert says in na.status(), na.status()
    assert plain.read_text() == "keep me"
    assert sorted(p.name for p in checkpoint.iterdir()) == before
    HookedTransformer.load(checkpoint)  # still a whole checkpoint
