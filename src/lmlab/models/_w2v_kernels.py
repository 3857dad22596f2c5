"""Compiled kernels for word2vec: skip-gram and CBOW with negative sampling and/or hierarchical softmax.

Everything numeric and hot lives here, compiled by numba; :mod:`lmlab.models.word2vec` is the thin Python
driver (vocabulary, corpus encoding, chunking, threads, learning-rate bookkeeping, saving).

Conventions shared with the driver:

* The corpus arrives as an ``int32`` array of word ids in which ``-1`` ends a sentence.
* ``syn0`` (V, D) are the input ("word") vectors, ``syn1neg`` (V, D) the output vectors for negative
  sampling, ``syn1`` (V-1, D) the inner-node vectors of the Huffman tree for hierarchical softmax. All float32.
* Hogwild: several threads update the shared matrices without locks (Recht et al., 2011). Each thread owns
  a private random stream, so a single-threaded run with a given seed is exactly reproducible.
* The sigmoid is computed exactly (``1 / (1 + exp(-f))``), not read from a 1000-entry table, so one update
  matches the analytic gradient (``tests/test_word2vec.py`` checks it against torch autograd).
* Noise words are drawn before they are needed - for a whole skip-gram window, or for a CBOW example before its
  context rows are summed - and their output rows are *prefetched* (``llvm.prefetch``, :func:`prefetch_row`),
  so the cache misses on those random rows overlap with arithmetic instead of stalling it one after another.
  The draws are the same distribution as word2vec.c's (independent per example); only their order in the
  random stream differs.
* The loss of every training example is accumulated in float64 *before* that example's update: for
  negative sampling ``-log s(u_o.h) - sum_k log s(-u_k.h)``, for hierarchical softmax
  ``-sum_d log s((1 - 2 code_d) * n_d.h)``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Longest Huffman code stored per word (word2vec.c uses 40; a depth-40 tree needs > 1e8 words).
MAX_CODE_LENGTH = 64
#: |f| is clamped here before exp(); s(30) == 1 in float32, so the clamp only guards exp() from overflow.
_F_CLAMP = np.float32(30.0)

_U1 = np.uint64(1)
_S12 = np.uint64(12)
_S25 = np.uint64(25)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S33 = np.uint64(33)
_S40 = np.uint64(40)
_MASK32 = np.uint64(0xFFFFFFFF)
_XS_MUL = np.uint64(0x2545F4914F6CDD1D)
_SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SM_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_M2 = np.uint64(0x94D049BB133111EB)
_INV24 = 1.0 / 16777216.0


@intrinsic
def prefetch_row(typingctx, arr, row):
    """Ask the CPU to start loading row ``row`` of the C-contiguous 2-D array ``arr`` (one ``llvm.prefetch`` per
    64-byte line, for writing, high locality). A hint only: no effect on results."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty, rowty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i32, i64 = ir.IntType(32), ir.IntType(64)
        r = context.cast(builder, args[1], rowty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [r, ir.Constant(i64, 0)], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ptr, i8p)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        itemsize = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        nbytes = builder.mul(builder.extract_value(ary.shape, 1), ir.Constant(i64, itemsize))
        with cgutils.for_range_slice(builder, ir.Constant(i64, 0), nbytes, ir.Constant(i64, 64)) as (off, _):
            builder.call(fn, [builder.gep(base, [off]), ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen


@njit(cache=True, inline="always")
def _next(state):
    """One xorshift64* step: returns (new_state, 64 random bits)."""
    state ^= state >> _S12
    state ^= state << _S25
    state ^= state >> _S27
    return state, state * _XS_MUL


@njit(cache=True)
def seed_state(seed, a, b, c):
    """A non-zero xorshift state derived from (seed, a, b, c) by splitmix64 mixing."""
    z = np.uint64(seed)
    for v in (a, b, c):
        z = z + _SM_GAMMA + np.uint64(v)
        z = (z ^ (z >> _S30)) * _SM_M1
        z = (z ^ (z >> np.uint64(27))) * _SM_M2
        z = z ^ (z >> _S31)
    if z == np.uint64(0):
        z = _SM_GAMMA
    return z


@njit(cache=True, inline="always")
def _below(bits, n):
    """An integer uniform in [0, n) from the top 32 bits of ``bits`` (multiply-shift, no division)."""
    return np.int64(((bits >> _S32) * np.uint64(n)) >> _S32)


@njit(cache=True, inline="always")
def _uniform(bits):
    """A float in [0, 1) from 24 of the low-middle bits of ``bits``."""
    return np.float64((bits >> np.uint64(8)) & np.uint64(0xFFFFFF)) * _INV24


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def build_alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table for sampling index ``i`` with probability ``weights[i] / weights.sum()``.

    Returns ``(prob, alias)``: draw ``k`` uniform in [0, V) and ``u`` uniform in [0, 1); the sample is ``k`` if
    ``u < prob[k]`` else ``alias[k]``. O(1) per draw with 8 bytes per word (word2vec.c's 1e8-entry table
    needs 400 MB; gensim's cumulative table needs a binary search per draw).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    scaled = w * (n / w.sum())
    return _alias_fill(scaled)


@njit(cache=True)
def _alias_fill(scaled):
    n = len(scaled)
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n).astype(np.int32)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    s = scaled.copy()
    while ns > 0 and nl > 0:
        ns -= 1
        i = small[ns]
        j = large[nl - 1]
        prob[i] = s[i]
        alias[i] = j
        s[j] = (s[j] + s[i]) - 1.0
        if s[j] < 1.0:
            nl -= 1
            small[ns] = j
            ns += 1
    # leftovers are 1 up to rounding
    return prob.astype(np.float32), alias


@njit(cache=True)
def build_huffman(counts):
    """Huffman tree over word counts sorted in decreasing order (word2vec.c's two-queue O(V) build).

    Returns ``(codes, points, lengths)``: for word ``w``, ``codes[w, :lengths[w]]`` are its bits from the
    root down and ``points[w, :lengths[w]]`` the inner nodes (0 .. V-2, root = V-2) whose vectors predict
    those bits. ``counts`` must be non-increasing (the vocabulary is sorted by frequency).
    """
    v = len(counts)
    count = np.empty(2 * v, dtype=np.int64)
    for i in range(v):
        count[i] = counts[i]
    for i in range(v, 2 * v):
        count[i] = np.iinfo(np.int64).max // 4
    parent = np.zeros(2 * v, dtype=np.int64)
    binary = np.zeros(2 * v, dtype=np.uint8)
    pos1 = v - 1
    pos2 = v
    for a in range(v - 1):
        # the two smallest among leaves (scanned downwards) and inner nodes (scanned upwards)
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min1 = pos1
            pos1 -= 1
        else:
            min1 = pos2
            pos2 += 1
        if pos1 >= 0 and count[pos1] < count[pos2]:
            min2 = pos1
            pos1 -= 1
        else:
            min2 = pos2
            pos2 += 1
        count[v + a] = count[min1] + count[min2]
        parent[min1] = v + a
        parent[min2] = v + a
        binary[min2] = 1
    codes = np.zeros((v, MAX_CODE_LENGTH), dtype=np.uint8)
    points = np.zeros((v, MAX_CODE_LENGTH), dtype=np.int32)
    lengths = np.zeros(v, dtype=np.int32)
    code = np.zeros(MAX_CODE_LENGTH, dtype=np.uint8)
    point = np.zeros(MAX_CODE_LENGTH, dtype=np.int64)
    root = 2 * v - 2
    for w in range(v):
        b = w
        i = 0
        while b != root:
            if i >= MAX_CODE_LENGTH:
                raise ValueError("Huffman code longer than MAX_CODE_LENGTH")
            code[i] = binary[b]
            point[i] = b
            i += 1
            b = parent[b]
        lengths[w] = i
        # reverse: root first; points are the parents of the nodes on the path, shifted to 0 .. V-2
        for k in range(i):
            codes[w, i - 1 - k] = code[k]
        points[w, 0] = root - v
        for k in range(1, i):
            points[w, i - k] = point[k] - v
    return codes, points, lengths


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=True, inline="always")
def _sigmoid_and_loss(f, label, compute_loss):
    """(s(f), -log p(label)) for a logistic output, with the loss in float64 (0 unless compute_loss)."""
    if f > _F_CLAMP:
        f = _F_CLAMP
    elif f < -_F_CLAMP:
        f = -_F_CLAMP
    e = math.exp(-f)
    s = np.float32(1.0) / (np.float32(1.0) + e)
    nll = 0.0
    if compute_loss:
        # -log s(f) = log1p(e);  -log(1 - s(f)) = f + log1p(e)
        nll = math.log1p(np.float64(e))
        if label == 0:
            nll += np.float64(f)
    return s, nll


@njit(cache=True, fastmath=True, inline="always")
def _output_layer(hmat, hrow, word, lr, neu1e, syn1neg, syn1, negative, use_hs, codes, points, lengths, dim,
                  compute_loss, drawn, doff):
    """Score ``word`` from the hidden vector ``hmat[hrow]``: update the output vectors and set ``neu1e`` to
    lr times the negative gradient wrt the hidden vector; return the loss of this example.

    The noise words are ``drawn[doff:doff + negative]``, drawn (and prefetched) by the caller by
    :func:`_draw_noise`; -1 marks a draw that hit ``word`` itself and is skipped, as in word2vec.c.

    Rows are addressed by index, never sliced into views: a view would touch the array's reference count,
    an atomic shared by every Hogwild thread."""
    loss = 0.0
    for k in range(dim):
        neu1e[k] = np.float32(0.0)
    if use_hs:
        for d in range(lengths[word]):
            node = points[word, d]
            f = np.float32(0.0)
            for k in range(dim):
                f += hmat[hrow, k] * syn1[node, k]
            label = 1 - np.int64(codes[word, d])
            s, nll = _sigmoid_and_loss(f, label, compute_loss)
            loss += nll
            g = (np.float32(label) - s) * lr
            for k in range(dim):
                o = syn1[node, k]
                neu1e[k] += g * o
                syn1[node, k] = o + g * hmat[hrow, k]
    if negative > 0:
        for d in range(negative + 1):
            if d == 0:
                target = word
                label = 1
            else:
                target = np.int64(drawn[doff + d - 1])
                if target < 0:
                    continue
                label = 0
            f = np.float32(0.0)
            for k in range(dim):
                f += hmat[hrow, k] * syn1neg[target, k]
            s, nll = _sigmoid_and_loss(f, label, compute_loss)
            loss += nll
            g = (np.float32(label) - s) * lr
            for k in range(dim):
                o = syn1neg[target, k]
                neu1e[k] += g * o
                syn1neg[target, k] = o + g * hmat[hrow, k]
    return loss


@njit(cache=True, inline="always")
def _alias_draw(state, prob, alias):
    """One draw from the alias table (Walker/Vose): a uniform column, kept with ``prob`` or else its alias."""
    state, bits = _next(state)
    target = _below(bits, prob.shape[0])
    if _uniform(bits) >= prob[target]:
        target = alias[target]
    return state, target


@njit(cache=True, inline="always")
def _draw_noise(state, drawn, doff, negative, word, prob, alias, syn1neg):
    """Draw ``negative`` noise words (alias method) into ``drawn[doff:]``, -1 where one equals ``word``, and
    prefetch their output rows. Returns the new random state."""
    for d in range(negative):
        state, target = _alias_draw(state, prob, alias)
        if target == word:
            drawn[doff + d] = -1
        else:
            drawn[doff + d] = target
            prefetch_row(syn1neg, target)
    return state


@njit(cache=True, fastmath=True)
def train_range(tokens, start, end, syn0, syn1neg, syn1, keep, prob, alias, codes, points, lengths,
                sg, negative, use_hs, window, cbow_mean, lr_start, lr_end, words_before, words_stride,
                total_words, max_sentence_length, seed_state_value, compute_loss, shared_negatives):
    """Train on the sentences in ``tokens[start:end]`` (which ends right after a ``-1``) on one thread.

    ``shared_negatives`` (skip-gram with negative sampling): each centre word draws its ``negative`` noise
    words once and every context word of its window is scored against the same ones, so their rows stay in
    the cache across the window (Ji et al., 2016, "Parallelizing word2vec in shared and distributed memory").

    ``words_before + words_stride * (words seen here)`` estimates how many words all threads together have
    trained on, which sets the linearly decaying learning rate. Returns (words seen, loss sum, examples).
    """
    dim = syn0.shape[1]
    sent = np.empty(max_sentence_length, dtype=np.int32)
    neu1e = np.zeros(dim, dtype=np.float32)
    hbuf = np.zeros((1, dim), dtype=np.float32)
    # noise words of one skip-gram window (2 * window examples) or of one CBOW example
    drawn = np.full(max(negative, 1) * 2 * max(window, 1), -1, dtype=np.int64)
    share = sg and shared_negatives and negative > 0
    state = seed_state_value
    words = np.int64(0)
    loss = 0.0
    examples = np.int64(0)
    n = 0
    lr = np.float32(lr_start)
    pos = start
    while pos < end:
        w = tokens[pos]
        pos += 1
        if w >= 0:
            words += 1
            if keep[w] < 1.0:
                state, bits = _next(state)
                if _uniform(bits) >= keep[w]:
                    continue
            if n < max_sentence_length:
                sent[n] = w
                n += 1
            continue
        # end of a sentence: train on the n kept words
        progress = (words_before + words_stride * words) / total_words
        if progress > 1.0:
            progress = 1.0
        lr = np.float32(lr_start - (lr_start - lr_end) * progress)
        for i in range(n):
            word = sent[i]
            state, bits = _next(state)
            b = _below(bits, window)  # dynamic window: 1 .. window words each side
            lo = i - window + b
            if lo < 0:
                lo = 0
            hi = i + window - b + 1
            if hi > n:
                hi = n
            if sg:
                # the window's noise words up front (one set for the whole window with ``share``); their rows
                # and the context rows are prefetched while the first examples compute
                if negative > 0:
                    prefetch_row(syn1neg, word)
                    if share:
                        state = _draw_noise(state, drawn, 0, negative, word, prob, alias, syn1neg)
                e = 0
                for j in range(lo, hi):
                    if j != i:
                        prefetch_row(syn0, sent[j])
                        if negative > 0 and not share:
                            state = _draw_noise(state, drawn, e * negative, negative, word, prob, alias, syn1neg)
                        e += 1
                e = 0
                for j in range(lo, hi):
                    if j == i:
                        continue
                    ctx = sent[j]
                    ex_loss = _output_layer(syn0, ctx, word, lr, neu1e, syn1neg, syn1, negative, use_hs, codes,
                                            points, lengths, dim, compute_loss, drawn, 0 if share else e * negative)
                    e += 1
                    loss += ex_loss
                    examples += 1
                    for k in range(dim):
                        syn0[ctx, k] += neu1e[k]
            else:
                if negative > 0:
                    prefetch_row(syn1neg, word)
                    state = _draw_noise(state, drawn, 0, negative, word, prob, alias, syn1neg)
                count = 0
                for k in range(dim):
                    hbuf[0, k] = np.float32(0.0)
                for j in range(lo, hi):
                    if j == i:
                        continue
                    ctx = sent[j]
                    count += 1
                    for k in range(dim):
                        hbuf[0, k] += syn0[ctx, k]
                if count == 0:
                    continue
                if cbow_mean:
                    inv = np.float32(1.0) / np.float32(count)
                    for k in range(dim):
                        hbuf[0, k] *= inv
                ex_loss = _output_layer(hbuf, 0, word, lr, neu1e, syn1neg, syn1, negative, use_hs, codes, points,
                                        lengths, dim, compute_loss, drawn, 0)
                loss += ex_loss
                examples += 1
                # word2vec.c / gensim convention: every context vector gets the full gradient wrt h
                for j in range(lo, hi):
                    if j == i:
                        continue
                    ctx = sent[j]
                    for k in range(dim):
                        syn0[ctx, k] += neu1e[k]
        n = 0
    return words, loss, examples


@njit(cache=True, parallel=True)
def train_chunk(tokens, bounds, syn0, syn1neg, syn1, keep, prob, alias, codes, points, lengths,
                sg, negative, use_hs, window, cbow_mean, lr_start, lr_end, words_before, total_words,
                max_sentence_length, seeds, out_words, out_loss, out_examples, compute_loss,
                shared_negatives=False):
    """Hogwild: slice ``t`` of ``tokens`` (``bounds[t]:bounds[t+1]``) is trained by its own thread."""
    nslices = len(bounds) - 1
    for t in prange(nslices):
        words, loss, examples = train_range(
            tokens, bounds[t], bounds[t + 1], syn0, syn1neg, syn1, keep, prob, alias, codes, points,
            lengths, sg, negative, use_hs, window, cbow_mean, lr_start, lr_end, words_before, nslices,
            total_words, max_sentence_length, seeds[t], compute_loss, shared_negatives)
        out_words[t] = words
        out_loss[t] = loss
        out_examples[t] = examples


@njit(cache=True)
def sample_noise(prob, alias, n, seed):
    """``n`` draws from the alias table exactly as the training kernel draws its noise words (for tests)."""
    state = seed_state(seed, 0, 0, 0)
    out = np.empty(n, dtype=np.int32)
    for t in range(n):
        state, out[t] = _alias_draw(state, prob, alias)
    return out
