# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels for GloVe: co-occurrence counting and the AdaGrad epoch (Pennington et al., 2014).

Cython compiled to C at install time, like the word2vec kernel. The Python driver is
:mod:`lmlab.models.glove`. Conventions:

* Tokens come as an ``int32`` array in which ``-1`` ends a sentence (see :mod:`lmlab.models.word2vec`).
* Counting: word ``j`` at distance ``d <= window`` from word ``i`` (same sentence) adds ``1/d`` to ``X[i, j]``
  and to ``X[j, i]`` (symmetric window). Pairs of the ``K`` most frequent words accumulate in a dense
  ``K x K`` float64 block; the others are appended as (key = i * V + j, weight) to a bounded buffer that the
  driver aggregates and spills to disk.
* Training: ``J = sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 / 2`` with ``f(x) = min(1, (x/x_max)^alpha)``,
  one AdaGrad step per non-zero entry, Hogwild over threads (:func:`glove_block` runs one Python thread per
  slice, each without the GIL).
"""

from lmlab.models._compiled import run_slices

from libc.math cimport isfinite, log, pow, sqrt
from libc.stdint cimport int32_t, int64_t, uint64_t


def count_cooccurrences(const int32_t[::1] tokens, int64_t start, int64_t window, int64_t vocab_size,
                        double[:, ::1] dense, int64_t dense_k, int64_t[::1] buf_keys, float[::1] buf_vals,
                        int64_t buf_len):
    """Scan ``tokens[start:]``; return ``(next_start, buf_len)``. Stops early when the buffer is nearly full
    (then ``next_start < len(tokens)`` and the driver flushes the buffer and calls again)."""
    cdef int64_t n = tokens.shape[0]
    cdef int64_t cap = buf_keys.shape[0]
    cdef int64_t p = start, sent_start, lo, q, w, c
    cdef double weight
    with nogil:
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
                break
            lo = p - window
            if lo < sent_start:
                lo = sent_start
            for q in range(lo, p):
                c = tokens[q]
                weight = 1.0 / <double>(p - q)
                if w < dense_k and c < dense_k:
                    dense[w, c] += weight
                    dense[c, w] += weight
                else:
                    buf_keys[buf_len] = w * vocab_size + c
                    buf_vals[buf_len] = <float>weight
                    buf_keys[buf_len + 1] = c * vocab_size + w
                    buf_vals[buf_len + 1] = <float>weight
                    buf_len += 2
            p += 1
    return p, buf_len


def shuffle_in_place(int64_t[::1] order, state):
    """Fisher-Yates with a splitmix64 stream seeded by ``state``."""
    cdef int64_t n = order.shape[0], i, j, tmp
    cdef uint64_t z = <uint64_t>state, r
    with nogil:
        for i in range(n - 1, 0, -1):
            z = z + <uint64_t>0x9E3779B97F4A7C15ULL
            r = z
            r = (r ^ (r >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
            r = (r ^ (r >> 27)) * <uint64_t>0x94D049BB133111EBULL
            r = r ^ (r >> 31)
            j = <int64_t>(((r >> 32) * <uint64_t>(i + 1)) >> 32)
            tmp = order[i]
            order[i] = order[j]
            order[j] = tmp


cdef double _glove_range(const int32_t *rows, const int32_t *cols, const float *vals, int64_t start, int64_t end,
                         float *w, float *wt, float *b, float *bt, float *gw, float *gwt, float *gb, float *gbt,
                         int64_t dim, float x_max, float alpha, float lr, bint reference,
                         float bias_lr) noexcept nogil:
    """One AdaGrad step for each entry in ``[start, end)``; returns the summed loss (before the steps).

    For entry (i, j, x): ``diff = w_i . wt_j + b_i + bt_j - log x``, ``fx = min(1, (x/x_max)^alpha)``,
    ``loss = fx diff^2 / 2``; gradients ``g wt_j`` (for w_i), ``g w_i`` (for wt_j) and ``g`` (for both biases)
    with ``g = fx diff``. Each parameter takes ``p -= lr u / sqrt(G)`` and then ``G += v^2``, ``G`` starting at 1:
    ``reference`` (the reference GloVe code) accumulates the scaled step ``v = lr u``; otherwise (textbook
    AdaGrad) ``v = u``. The reference rule is textbook AdaGrad with rate 1 and ``G`` starting at ``1/lr^2``.
    The biases take the same rule with ``bias_lr`` in place of ``lr`` (glove.c 1.2 uses lr; its master since the
    gradient-clipping change steps them with 1: ``b -= g / sqrt(G)``, ``G += g^2``).
    """
    cdef double loss = 0.0
    cdef int64_t t, k
    cdef int64_t i, j
    cdef float x, f, diff, fx, g, gi, gj, acc_scale, bias_scale
    cdef float *wi
    cdef float *wj
    cdef float *gwi
    cdef float *gwj
    acc_scale = lr if reference else <float>1.0
    bias_scale = bias_lr if reference else <float>1.0
    for t in range(start, end):
        i = rows[t]
        j = cols[t]
        x = vals[t]
        wi = w + i * dim
        wj = wt + j * dim
        gwi = gw + i * dim
        gwj = gwt + j * dim
        f = 0.0
        for k in range(dim):
            f += wi[k] * wj[k]
        diff = f + b[i] + bt[j] - <float>log(<double>x)
        if not isfinite(diff):
            continue
        if x >= x_max:
            fx = 1.0
        else:
            fx = <float>pow(<double>(x / x_max), <double>alpha)
        loss += 0.5 * <double>fx * <double>diff * <double>diff
        g = fx * diff
        for k in range(dim):
            gi = g * wj[k]
            gj = g * wi[k]
            wi[k] -= lr * gi / sqrt(gwi[k])
            wj[k] -= lr * gj / sqrt(gwj[k])
            gi = gi * acc_scale
            gj = gj * acc_scale
            gwi[k] += gi * gi
            gwj[k] += gj * gj
        b[i] -= bias_lr * g / sqrt(gb[i])
        bt[j] -= bias_lr * g / sqrt(gbt[j])
        g = g * bias_scale
        gb[i] += g * g
        gbt[j] += g * g
    return loss


def _glove_slice(int s, const int32_t[::1] rows, const int32_t[::1] cols, const float[::1] vals,
                 const int64_t[::1] bounds, float[:, ::1] w, float[:, ::1] wt, float[::1] b, float[::1] bt,
                 float[:, ::1] gw, float[:, ::1] gwt, float[::1] gb, float[::1] gbt, float x_max, float alpha,
                 float lr, bint reference, float bias_lr, double[::1] out_loss):
    """Slice ``s`` of the block on the calling thread, without the GIL."""
    cdef int64_t dim = w.shape[1]
    if wt.shape[1] != dim or gw.shape[1] != dim or gwt.shape[1] != dim:
        raise ValueError("w, wt, gw and gwt must have the same number of columns")
    if bounds[s + 1] <= bounds[s]:
        out_loss[s] = 0.0
        return
    with nogil:
        out_loss[s] = _glove_range(&rows[0], &cols[0], &vals[0], bounds[s], bounds[s + 1], &w[0, 0], &wt[0, 0],
                                   &b[0], &bt[0], &gw[0, 0], &gwt[0, 0], &gb[0], &gbt[0], dim, x_max, alpha, lr,
                                   reference, bias_lr)


def glove_block(rows, cols, vals, bounds, w, wt, b, bt, gw, gwt, gb, gbt, x_max, alpha, lr, out_loss,
                reference=True, bias_lr=None):
    """Hogwild: slice ``s`` (``bounds[s]:bounds[s+1]``) of the block is trained by its own thread;
    ``out_loss[s]`` receives its summed loss. ``bias_lr`` (None: ``lr``) is the biases' rate."""
    args = (rows, cols, vals, bounds, w, wt, b, bt, gw, gwt, gb, gbt, float(x_max), float(alpha), float(lr),
            bool(reference), float(lr if bias_lr is None else bias_lr), out_loss)
    run_slices(_glove_slice, len(bounds) - 1, args, "lmlab-glove")
