r"""The negative log-likelihood of a linear softmax head, computed in cache-sized row chunks (forward and backward).

For hidden states $h_i$ (N, H), a head $z_i = W h_i + b$ (V logits) and targets $y_i$,

$$\mathrm{nll}_i = \log \sum_v e^{z_{i,v}} - z_{i,y_i}, \qquad
\frac{\partial\, \mathrm{nll}_i}{\partial z_i} = \mathrm{softmax}(z_i) - \mathbf{1}_{y_i}.$$

``-log_softmax(head(h)).gather(y)`` computes the same numbers (up to float rounding, ~1e-7 relative) but holds the
(N, V) logits, their log-softmax and its gradient in memory: 25.6 MB each for a 64 x 20 batch over 5,000 tokens,
several passes through memory per step. :func:`linear_nll` projects ``chunk_rows`` rows at a time (about 1 MiB
of logits on a CPU), keeps only the log-normaliser of each row and recomputes the chunk's logits in the backward
pass, so every elementwise pass runs in the cache. SeqGAN's MLE, policy-gradient and NLL evaluations use it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def default_chunk_rows(vocab_size: int, device: torch.device) -> int:
    """Rows per chunk: ~256K logits (1 MiB) on a CPU, ~64M on an accelerator (few kernel launches)."""
    return max(1, (1 << (18 if device.type == "cpu" else 26)) // max(1, vocab_size))


class _LinearNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int) -> Tensor:
        n = hidden.shape[0]
        nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk_rows):
            h = hidden[s : s + chunk_rows]
            z = (torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()).float()  # (r, V)
            lse[s : s + h.shape[0]] = l = torch.logsumexp(z, dim=-1)  # (r,)
            nll[s : s + h.shape[0]] = l - z.gather(1, targets[s : s + chunk_rows, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_rows = chunk_rows
        return nll  # (N,)

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        r = ctx.chunk_rows
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if (need_b and bias is not None) else None
        for s in range(0, hidden.shape[0], r):
            h = hidden[s : s + r]
            z = (torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()).float()  # (r, V)
            p = z.sub_(lse[s : s + r, None]).exp_()  # softmax (r, V)
            p.scatter_add_(1, targets[s : s + r, None], p.new_full((h.shape[0], 1), -1.0))  # - one-hot
            p.mul_(grad[s : s + r, None].float())
            p = p.to(weight.dtype)
            if grad_h is not None:
                grad_h[s : s + r] = p @ weight
            if grad_w is not None:
                grad_w.addmm_(p.t(), h)
            if grad_b is not None:
                grad_b.add_(p.sum(0))
        return grad_h, grad_w, grad_b, None, None


def linear_nll(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int = 0) -> Tensor:
    """``-log_softmax(hidden @ weight.T + bias).gather(targets)`` per row: (N, H), (V, H), (V,), (N,) -> (N,) float32.

    Differentiable in ``hidden``, ``weight`` and ``bias``; ``chunk_rows`` = 0 picks :func:`default_chunk_rows`.
    """
    if not chunk_rows:
        chunk_rows = default_chunk_rows(weight.shape[0], hidden.device)
    return _LinearNLL.apply(hidden, weight, bias, targets.reshape(-1), chunk_rows)
