"""Compiled kernels for GloVe: co-occurrence counting and the AdaGrad epoch (Pennington et al., 2014).

The Python driver is :mod:`lmlab.models.glove`. Conventions:

* Tokens come as an ``int32`` array in which ``-1`` ends a sentence (see :mod:`lmlab.models.word2vec`).
* Counting: word ``j`` at distance ``d <= window`` from word ``i`` (same sentence) adds ``1/d`` to ``X[i, j]``
  and to ``X[j, i]`` (symmetric window). Pairs of the ``K`` most frequent words accumulate in a dense
  ``K x K`` float64 block; the others are appended as (key = i * V + j, weight) to a bounded buffer that the
  driver aggregates and spills to disk.
* Training: ``J = sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 / 2`` with ``f(x) = min(1, (x/x_max)^alpha)``,
  one AdaGrad step per non-zero entry, Hogwild over threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True)
def count_cooccurrences(tokens, start, window, vocab_size, dense, dense_k, buf_keys, buf_vals, buf_len):
    """Scan ``tokens[start:]``; return ``(next_start, buf_len)``. Stops early when the buffer is nearly full
    (then ``next_start < len(tokens)`` and the driver flushes the buffer and calls again)."""
    n = len(tokens)
    cap = len(buf_keys)
    p = start
    # the sentence containing p starts after the last -1 before p
    sent_start = p
    while sent_start > 0 and tokens[sent_start - 1] != -1:
        sent_start -= 1
    while p < n:
        w = tokens[p]
        if w < 0:
            sent_start = p + 1
            p += 1
            continue
        if buf_len + 2 * window > cap:
            return p, buf_len
        lo = p - window
        if lo < sent_start:
            lo = sent_start
        for q in range(lo, p):
            c = tokens[q]
            weight = 1.0 / (p - q)
            if w < dense_k and c < dense_k:
                dense[w, c] += weight
                dense[c, w] += weight
            else:
                buf_keys[buf_len] = np.int64(w) * vocab_size + c
                buf_vals[buf_len] = weight
                buf_keys[buf_len + 1] = np.int64(c) * vocab_size + w
                buf_vals[buf_len + 1] = weight
                buf_len += 2
        p += 1
    return p, buf_len


@njit(cache=True)
def aggregate_sorted(keys, vals):
    """Sum ``vals`` over equal ``keys``; returns sorted unique keys and their float64 sums."""
    order = np.argsort(keys, kind="mergesort")
    n = len(keys)
    out_k = np.empty(n, dtype=np.int64)
    out_v = np.empty(n, dtype=np.float64)
    m = -1
    last = np.int64(-1)
    for t in range(n):
        i = order[t]
        k = keys[i]
        if m >= 0 and k == last:
            out_v[m] += vals[i]
        else:
            m += 1
            out_k[m] = k
            out_v[m] = vals[i]
            last = k
    return out_k[: m + 1], out_v[: m + 1]


@njit(cache=True)
def shuffle_in_place(order, state):
    """Fisher-Yates with a splitmix64 stream seeded by ``state``."""
    n = len(order)
    z = np.uint64(state)
    for i in range(n - 1, 0, -1):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        r = z
        r = (r ^ (r >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        r = (r ^ (r >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        r = r ^ (r >> np.uint64(31))
        j = np.int64(((r >> np.uint64(32)) * np.uint64(i + 1)) >> np.uint64(32))
        tmp = order[i]
        order[i] = order[j]
        order[j] = tmp


@njit(cache=True, fastmath=True)
def glove_range(rows, cols, vals, start, end, w, wt, b, bt, gw, gwt, gb, gbt, x_max, alpha, lr):
    """One AdaGrad step for each entry in ``[start, end)``; returns the summed loss (before the steps).

    For entry (i, j, x): ``diff = w_i . wt_j + b_i + bt_j - log x``, ``fx = min(1, (x/x_max)^alpha)``,
    ``loss = fx diff^2 / 2``; gradients ``fx diff wt_j`` (for w_i), ``fx diff w_i`` (for wt_j), ``fx diff``
    (for both biases). Each parameter ``p`` with squared-gradient sum ``G`` (initialised to 1) takes
    ``p -= lr g / sqrt(G)`` and then ``G += g^2``, as the reference GloVe code orders it.
    """
    dim = w.shape[1]
    loss = 0.0
    for t in range(start, end):
        i = rows[t]
        j = cols[t]
        x = vals[t]
        f = np.float32(0.0)
        for k in range(dim):
            f += w[i, k] * wt[j, k]
        diff = f + b[i] + bt[j] - np.float32(math.log(x))
        if not math.isfinite(diff):
            continue
        fx = np.float32(1.0) if x >= x_max else np.float32((x / x_max) ** alpha)
        loss += 0.5 * fx * np.float64(diff) * diff
        g = fx * diff
        for k in range(dim):
            gi = g * wt[j, k]
            gj = g * w[i, k]
            w[i, k] -= lr * gi / math.sqrt(gw[i, k])
            wt[j, k] -= lr * gj / math.sqrt(gwt[j, k])
            gw[i, k] += gi * gi
            gwt[j, k] += gj * gj
        b[i] -= lr * g / math.sqrt(gb[i])
        bt[j] -= lr * g / math.sqrt(gbt[j])
        gb[i] += g * g
        gbt[j] += g * g
    return loss


@njit(cache=True, parallel=True)
def glove_block(rows, cols, vals, bounds, w, wt, b, bt, gw, gwt, gb, gbt, x_max, alpha, lr, out_loss):
    """Hogwild: slice ``t`` (``bounds[t]:bounds[t+1]``) of the block is trained by its own thread."""
    for t in prange(len(bounds) - 1):
        out_loss[t] = glove_range(rows, cols, vals, bounds[t], bounds[t + 1], w, wt, b, bt, gw, gwt, gb,
                                  gbt, x_max, alpha, lr)
