"""A compiled causal-attention kernel for the stacked trainer's short sequences, on one CPU thread.

``native_attention.c`` (next to this file) computes causal softmax attention forward and
backward for heads of width 16, 32, 48 or 64, one (sequence, head) pair at a time in L1-sized
scratch. For the toy models the atlas trains (48 positions, heads of 16) it takes about half
the time of PyTorch's fused CPU kernel, which was half a training step (figures:
``bench/RESULTS.md``). :func:`load` has :mod:`circuits.training.native_build` build it (or
find it in the cache) on first use in a process, loads it with :mod:`ctypes` and checks it
against a float64 reference on small random problems; a library that fails the check, no
usable build, or ``CIRCUITS_NATIVE=0`` leaves :func:`load` returning None and the callers on
PyTorch's kernels (same function, slower). :func:`status` says which and why.

Layer 0 of a model without LayerNorm goes through :class:`TableAttention` (rows of Q, K, V read
as token-table plus position-table rows); other layers through :class:`NativeAttention`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from circuits.training.native_build import build

__all__ = [
    "NativeAttention",
    "TableAttention",
    "forward",
    "forward_tables",
    "load",
    "status",
    "supports",
]

HEAD_WIDTHS = (16, 32, 48, 64)

_lib: ctypes.CDLL | None = None
_status = "not loaded yet"
_tried = False
_load_lock = threading.Lock()


def supports(d_head: int) -> bool:
    """Whether the kernel handles heads of width ``d_head``."""
    return d_head in HEAD_WIDTHS


def status() -> str:
    """How attention runs in this process: the library's path, or why PyTorch's kernels."""
    return _status


class _Rows(ctypes.Structure):
    """``Rows`` of native_attention.c: a strided tensor, or a token table plus a position
    table (see there)."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("x", ctypes.c_void_p),
        ("rs", ctypes.c_int64),
        ("tok", ctypes.c_void_p),
        ("pos", ctypes.c_void_p),
        ("ids", ctypes.c_void_p),
        ("vocab", ctypes.c_int64),
        ("batch", ctypes.c_int64),
    ]


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    rows, ptr, i64, int_ = ctypes.POINTER(_Rows), ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    head: list[Any] = [rows, rows, rows, i64, int_, int_, int_, ctypes.c_float]
    lib.circuits_attention_forward.argtypes = [*head, ptr, ptr, ptr]
    lib.circuits_attention_backward.argtypes = [*head, ptr, ptr, rows, rows, rows]
    lib.circuits_attention_forward.restype = int_
    lib.circuits_attention_backward.restype = int_
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernel (built and checked on first call in a process), or None.

    None when ``CIRCUITS_NATIVE=0``, when no compiler is found or the build fails, or when
    the library disagrees with the float64 reference; :func:`status` says which.
    """
    global _lib, _status, _tried
    if _tried:
        return _lib
    with _load_lock:  # one build per process, whichever thread asks first
        if not _tried:
            _lib, _status = _load()
            _tried = True
    return _lib


def _load() -> tuple[ctypes.CDLL | None, str]:
    """:func:`load`'s work: ``(library or None, status)``."""
    if os.environ.get("CIRCUITS_NATIVE", "1") == "0":
        return None, "PyTorch kernels (CIRCUITS_NATIVE=0)"
    path, how = build()
    if path is None:
        return None, f"PyTorch kernels: {how}"
    try:
        lib = _bind(path)
    except OSError as e:  # a damaged cache file: build again under a fresh name
        path.unlink(missing_ok=True)
        path, how = build()
        if path is None:
            return None, f"PyTorch kernels: {how}"
        try:
            lib = _bind(path)
        except OSError as e2:
            return None, f"PyTorch kernels: cannot load {path} ({e}; {e2})"
    error = _self_check(lib)
    if error is not None:
        return None, f"PyTorch kernels: {path} failed its check ({error})"
    return lib, f"native kernel ({how})"


def _call(fn: Any, *args: Any) -> None:
    code = fn(*(a.data_ptr() if isinstance(a, Tensor) else a for a in args))
    if code != 0:
        raise MemoryError(f"the native attention kernel returned {code} (scratch allocation)")


def _strided(x: Tensor) -> tuple[Tensor, Any]:
    """``x [G, rows, >= n * e]`` (a contiguous copy unless its rows are evenly spaced with
    unit-stride features) and its ``Rows``."""
    if not (x.stride(2) == 1 and x.stride(0) == x.shape[1] * x.stride(1)):
        x = x.contiguous()
    return x, ctypes.byref(_Rows(x.data_ptr(), x.stride(1), None, None, None, 0, 0))


def _tables(tok: Tensor, pos: Tensor, ids: Tensor, batch: int, col: int) -> Any:
    """``Rows`` reading (or, for gradients, adding into) columns ``col:`` of the token table
    ``tok [G * vocab, width]`` and position table ``pos [G, pos, width]`` (both contiguous);
    ``ids [G * batch * pos]`` int64 token ids."""
    G = pos.shape[0]
    offset = col * tok.element_size()
    return ctypes.byref(
        _Rows(
            None,
            tok.shape[-1],
            tok.data_ptr() + offset,
            pos.data_ptr() + offset,
            ids.data_ptr(),
            tok.shape[0] // G,
            batch,
        )
    )


def _run_forward(
    lib: ctypes.CDLL,
    rows: tuple[Any, Any, Any],
    G: int,
    bp: int,
    batch: int,
    n_heads: int,
    d_head: int,
    scale: float,
    pattern: Tensor | None,
) -> tuple[Tensor, Tensor]:
    z = torch.empty(G, bp, n_heads * d_head)
    stats = torch.empty(G * bp, n_heads, 2)
    _call(
        lib.circuits_attention_forward,
        *rows, G * batch, bp // batch, n_heads, d_head, scale, z, stats, pattern,
    )  # fmt: skip
    return z, stats


def _run_backward(
    lib: ctypes.CDLL,
    rows: tuple[Any, Any, Any],
    grad_rows: tuple[Any, Any, Any],
    n_seq: int,
    pos: int,
    n_heads: int,
    d_head: int,
    scale: float,
    dz: Tensor,
    stats: Tensor,
) -> None:
    _call(
        lib.circuits_attention_backward,
        *rows, n_seq, pos, n_heads, d_head, scale, dz.contiguous(), stats, *grad_rows,
    )  # fmt: skip


def forward(
    lib: ctypes.CDLL,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    batch: int,
    n_heads: int,
    scale: float,
    pattern: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(z, stats)``: attention of ``[G, batch * pos, n_heads * d_head]`` inputs, and each
    query's score maximum and inverse normaliser ``[G * batch * pos, n_heads, 2]`` (what the
    backward needs). ``pattern``, if given, ``[G, batch, n_heads, pos, pos]`` float32
    contiguous, is filled in."""
    G, bp, ne = q.shape
    (q, rq), (k, rk), (v, rv) = (_strided(x) for x in (q, k, v))
    return _run_forward(lib, (rq, rk, rv), G, bp, batch, n_heads, ne // n_heads, scale, pattern)


def forward_tables(
    lib: ctypes.CDLL,
    by_token: Tensor,
    by_pos: Tensor,
    ids: Tensor,
    batch: int,
    n_heads: int,
    scale: float,
    pattern: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """As :func:`forward`, with ``q, k, v`` the columns ``[0:ne], [ne:2ne], [2ne:3ne]`` of
    ``by_token [G * vocab, 3 * ne]`` looked up by ``ids [G, batch, pos]`` plus ``by_pos [G,
    pos, 3 * ne]``: a first layer without LayerNorm, whose Q, K and V are those of the token
    embedding plus those of the position embedding. Never builds the ``[G, batch * pos, 3 *
    ne]`` tensor the lookup would."""
    G, b, p = ids.shape
    ne = by_token.shape[-1] // 3
    flat = ids.reshape(-1)
    rows = tuple(_tables(by_token, by_pos, flat, batch, c * ne) for c in range(3))
    return _run_forward(lib, rows, G, b * p, batch, n_heads, ne // n_heads, scale, pattern)


class NativeAttention(torch.autograd.Function):
    """Causal attention by the compiled kernel, with its own backward (see module doc).

    ``apply(lib, q, k, v, batch, n_heads, scale)`` on ``[G, batch * pos, n_heads * d_head]``
    float32 CPU tensors; returns ``z`` in the same layout (contiguous). Memory saved for the
    backward: the inputs and ``2 * n_heads`` floats per position.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lib: ctypes.CDLL,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        batch: int,
        n_heads: int,
        scale: float,
    ) -> Tensor:
        (q, _), (k, _), (v, _) = (_strided(x) for x in (q, k, v))
        z, stats = forward(lib, q, k, v, batch, n_heads, scale)
        ctx.save_for_backward(q, k, v, stats)
        ctx.shape = (lib, batch, n_heads, scale)
        return z

    @staticmethod
    def backward(ctx: Any, dz: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, stats = ctx.saved_tensors
        lib, batch, n_heads, scale = ctx.shape
        G, bp, ne = q.shape
        grads = [torch.empty(G, bp, ne) for _ in range(3)]
        rows, grad_rows = (tuple(_strided(x)[1] for x in xs) for xs in ((q, k, v), grads))
        _run_backward(
            lib, rows, grad_rows, G * batch, bp // batch, n_heads, ne // n_heads, scale, dz, stats
        )
        return None, *grads, None, None, None


class TableAttention(torch.autograd.Function):
    """:func:`forward_tables` with its backward, which adds the gradients of Q, K and V
    straight into gradients of the two tables (no ``[G, batch * pos, 3 * ne]`` tensor, no
    embedding backward).

    ``apply(lib, by_token, by_pos, ids, batch, n_heads, scale)``; returns ``z [G, batch * pos,
    n_heads * d_head]``. Memory saved for the backward: the tables, the ids and ``2 *
    n_heads`` floats per position.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lib: ctypes.CDLL,
        by_token: Tensor,
        by_pos: Tensor,
        ids: Tensor,
        batch: int,
        n_heads: int,
        scale: float,
    ) -> Tensor:
        by_token, by_pos, ids = by_token.contiguous(), by_pos.contiguous(), ids.contiguous()
        z, stats = forward_tables(lib, by_token, by_pos, ids, batch, n_heads, scale)
        ctx.save_for_backward(by_token, by_pos, ids, stats)
        ctx.shape = (lib, batch, n_heads, scale)
        return z

    @staticmethod
    def backward(ctx: Any, dz: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        by_token, by_pos, ids, stats = ctx.saved_tensors
        lib, batch, n_heads, scale = ctx.shape
        G, b, p = ids.shape
        ne = by_token.shape[-1] // 3
        flat = ids.reshape(-1)
        d_token, d_pos = torch.zeros_like(by_token), torch.zeros_like(by_pos)
        rows, grad_rows = (
            tuple(_tables(tok, pos, flat, batch, c * ne) for c in range(3))
            for tok, pos in ((by_token, by_pos), (d_token, d_pos))
        )
        _run_backward(lib, rows, grad_rows, G * b, p, n_heads, ne // n_heads, scale, dz, stats)
        return None, d_token, d_pos, None, None, None, None


def _reference(q: Tensor, k: Tensor, v: Tensor, batch: int, n: int, scale: float) -> Tensor:
    G, bp, ne = q.shape
    p = bp // batch
    q4, k4, v4 = (x.view(G * batch, p, n, -1).transpose(1, 2) for x in (q, k, v))
    scores = q4 @ k4.transpose(-1, -2) * scale
    causal = torch.ones(p, p, dtype=torch.bool).tril()
    z = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v4
    return z.transpose(1, 2).reshape(G, bp, ne)


def _self_check(lib: ctypes.CDLL) -> str | None:
    """Compares the library with a float64 reference on small random problems (strided inputs,
    and the token-plus-position tables; a sequence length that is not a multiple of 16); a
    description of the first mismatch, or None."""
    gen = torch.Generator().manual_seed(0)
    G, batch, pos, n, e, vocab = 2, 3, 21, 2, 16, 5
    ne = n * e
    by_token = torch.randn(G * vocab, 3 * ne, generator=gen, dtype=torch.float64)
    by_pos = torch.randn(G, pos, 3 * ne, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, vocab, (G, batch, pos), generator=gen)
    dz = torch.randn(G, batch * pos, ne, generator=gen, dtype=torch.float64)
    tables64 = [t.clone().requires_grad_(True) for t in (by_token, by_pos)]
    flat = (ids + torch.arange(G).view(G, 1, 1) * vocab).reshape(G, batch * pos)
    packed = tables64[0][flat] + tables64[1].repeat(1, batch, 1)  # [G, batch * pos, 3 ne]
    q, k, v = (x.detach().requires_grad_(True) for x in packed.split(ne, -1))
    z64 = _reference(q, k, v, batch, n, 0.25)
    z64.backward(dz)
    packed.backward(torch.cat([q.grad, k.grad, v.grad], -1))  # type: ignore[list-item]
    want = [z64.detach(), q.grad, k.grad, v.grad, *(t.grad for t in tables64)]
    # Strided: views into one packed float32 tensor, as a first layer with tables would be.
    q32, k32, v32 = (x.requires_grad_(True) for x in packed.detach().float().split(ne, -1))
    z = NativeAttention.apply(lib, q32, k32, v32, batch, n, 0.25)
    z.backward(dz.float())
    tok32, pos32 = (t.float().requires_grad_(True) for t in (by_token, by_pos))
    zt = TableAttention.apply(lib, tok32, pos32, ids, batch, n, 0.25)
    zt.backward(dz.float())
    got = [z, q32.grad, k32.grad, v32.grad, tok32.grad, pos32.grad]
    names = ["z", "dq", "dk", "dv", "d_by_token", "d_by_pos"]
    for name, g, ref in zip(names, got, want, strict=True):
        assert ref is not None
        if g is None or not torch.allclose(g.double(), ref, rtol=1e-4, atol=1e-5):
            return f"{name} differs from the float64 reference"
    if not torch.allclose(zt.double(), want[0], rtol=1e-4, atol=1e-5):
        return "z from the tables differs from the float64 reference"
    return None
