"""bf16-stored weights, float32 arithmetic: the linear layer and embedding lookup of a model whose matrices are
kept in bfloat16 (as Llama-family checkpoints ship them) while every activation stays float32.

bf16 -> float32 is exact (a 16-bit shift), so ``linear(x, W_bf16)`` computes the float32 products that
``F.linear(x, W_bf16.float())`` does, summed in another order, without the float32 copy: half the bytes read per
product, which is what a matrix-vector product on a CPU costs (decoding one token reads every weight once). torch
has no such kernel on CPUs without native bf16 (``F.linear`` on bf16 weights converts and computes in bf16), so
the product for a few rows (decoding) runs in the compiled ``_bf16_kernels``; many rows (a prompt) are
compute-bound and go to torch's float32 matrix product a block of upcast rows of ``W`` at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmlab.models._compiled import load_kernels, run_slices

#: at most this many rows of x go through the compiled kernel; more go to torch's float32 GEMM (upcast blocks)
KERNEL_MAX_ROWS = 16
#: rows of W upcast at a time for the GEMM path (at most this x in x 4 bytes of float32 temporary)
GEMM_BLOCK_ROWS = 4096
#: a product is split over threads only when W has at least this many elements (smaller ones: threads cost more)
_THREAD_MIN_ELEMENTS = 1 << 20

_kernels = None


def kernels():
    """The compiled module (loaded once; a one-line error if the package was installed without it)."""
    global _kernels
    if _kernels is None:
        _kernels = load_kernels("_bf16_kernels")
    return _kernels


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, threads: int | None = None) -> Tensor:
    """``x @ weight.T + bias`` in float32 for float32 ``x`` (..., in) and a bfloat16 ``weight`` (out, in) kept
    in bf16 (a float32 ``bias`` (out,) or None); CPU tensors. ``threads``: slices of W's rows computed on
    threads of their own (default 1, whatever ``torch.get_num_threads()`` says: see below)."""
    if x.dtype != torch.float32 or weight.dtype != torch.bfloat16 or x.device.type != "cpu" or weight.device.type != "cpu":
        raise TypeError(f"bf16.linear takes float32 x and bfloat16 weight on the CPU, got {x.dtype} x, "
                        f"{weight.dtype} weight on {x.device}/{weight.device}")
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} features, weight {tuple(weight.shape)} takes {in_features}")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (out_features,)):
        raise TypeError(f"bias must be float32 ({out_features},), got {bias.dtype} {tuple(bias.shape)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features).contiguous()  # (N, in)
    rows = x2.shape[0]
    if rows > KERNEL_MAX_ROWS:
        return _gemm(x2, weight, bias).view(*lead, out_features)
    if not weight.is_contiguous():
        weight = weight.contiguous()
    y = torch.empty(rows, out_features, dtype=torch.float32)  # (N, out)
    if rows == 0:
        return y.view(*lead, out_features)
    b = bias.contiguous() if bias is not None else None
    k = kernels()
    args = (x2.data_ptr(), rows, in_features, weight.data_ptr(), b.data_ptr() if b is not None else 0,
            y.data_ptr(), out_features)
    # one thread unless asked: slices on Python threads beside torch's OpenMP workers (which spin between their
    # own parallel regions) made 2-thread decoding slower than 1-thread (0.5B shape, batch 1: 9.0 vs 11.35 tok/s)
    n = threads if threads is not None else 1
    n = max(1, min(n, out_features // 64)) if weight.numel() >= _THREAD_MIN_ELEMENTS else 1
    if n == 1:
        k.linear_rows(*args, 0, out_features)
    else:
        step = -(-out_features // n)
        step += -step % 4  # whole blocks of four rows per slice

        def part(s: int) -> None:
            k.linear_rows(*args, min(s * step, out_features), min((s + 1) * step, out_features))

        run_slices(part, n, (), name="lmlab-bf16")
    return y.view(*lead, out_features)


def _gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Many rows: torch's float32 matrix product on blocks of W's rows upcast (exact) one block at a time."""
    out_features = weight.shape[0]
    if out_features <= GEMM_BLOCK_ROWS:
        return torch.nn.functional.linear(x, weight.float(), bias)
    y = torch.empty(x.shape[0], out_features, dtype=torch.float32)
    for j in range(0, out_features, GEMM_BLOCK_ROWS):
        k = min(j + GEMM_BLOCK_ROWS, out_features)
        y[:, j:k] = torch.nn.functional.linear(x, weight[j:k].float(), bias[j:k] if bias is not None else None)
    return y


def embedding(ids: Tensor, weight: Tensor) -> Tensor:
    """Rows ``ids`` (...) of a bf16 embedding ``weight`` (V, C) as float32 (..., C) (exact)."""
    return torch.nn.functional.embedding(ids, weight).float()
