# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels for word2vec: skip-gram and CBOW with negative sampling and/or hierarchical softmax.

Everything numeric and hot lives here, in Cython compiled to C when the package is installed (``setup.py``);
:mod:`lmlab.models.word2vec` is the thin Python driver (vocabulary, corpus encoding, chunking, learning-rate
bookkeeping, saving). The module needs neither numba nor LLVM at run time, so a word2vec process carries only
numpy and this small extension (numba's runtime alone takes ~130 MB resident).

Conventions shared with the driver:

* The corpus arrives as an ``int32`` array of word ids in which ``-1`` ends a sentence.
* ``syn0`` (V, D) are the input ("word") vectors, ``syn1neg`` (V, D) the output vectors for negative
  sampling, ``syn1`` (V-1, D) the inner-node vectors of the Huffman tree for hierarchical softmax. All float32,
  C-contiguous.
* Hogwild: several threads update the shared matrices without locks (Recht et al., 2011). :func:`train_chunk`
  runs one Python thread per slice; each releases the GIL for its whole slice. Each thread owns a private random
  stream (xorshift64*), so a single-threaded run with a given seed is exactly reproducible.
* The sigmoid is computed exactly (``1 / (1 + exp(-f))``), not read from a 1000-entry table, so one update
  matches the analytic gradient (``tests/test_word2vec.py`` checks it against torch autograd).
* Noise words are drawn before they are needed - for a whole skip-gram window, or for a CBOW example before its
  context rows are summed - and their output rows are *prefetched* (``__builtin_prefetch``, one per 64-byte
  line), so the cache misses on those random rows overlap with arithmetic instead of stalling it one after
  another. The draws are the same distribution as word2vec.c's (independent per example); only their order in
  the random stream differs.
* The loss of every training example is accumulated in float64 *before* that example's update: for
  negative sampling ``-log s(u_o.h) - sum_k log s(-u_k.h)``, for hierarchical softmax
  ``-sum_d log s((1 - 2 code_d) * n_d.h)``.
"""

import numpy as np

from lmlab.models._compiled import run_slices

from libc.math cimport expf, log1p
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define LMLAB_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define LMLAB_PREFETCH_W(p) ((void)0)
    #endif
    """
    void LMLAB_PREFETCH_W(const void *p) noexcept nogil

#: Longest Huffman code stored per word (word2vec.c uses 40; a depth-40 tree needs > 1e8 words).
MAX_CODE_LENGTH = 64
cdef enum:
    _MAX_CODE = 64
#: |f| is clamped here before exp(); s(30) == 1 in float32, so the clamp only guards exp() from overflow.
cdef float _F_CLAMP = 30.0
cdef double _INV24 = 1.0 / 16777216.0


# ---------------------------------------------------------------------------------------------------------
# Random numbers
# ---------------------------------------------------------------------------------------------------------


cdef inline uint64_t _next(uint64_t *state) noexcept nogil:
    """One xorshift64* step: advances ``state`` and returns 64 random bits."""
    cdef uint64_t s = state[0]
    s ^= s >> 12
    s ^= s << 25
    s ^= s >> 27
    state[0] = s
    return s * <uint64_t>0x2545F4914F6CDD1DULL


cdef inline int64_t _below(uint64_t bits, uint64_t n) noexcept nogil:
    """An integer uniform in [0, n) from the top 32 bits of ``bits`` (multiply-shift, no division)."""
    return <int64_t>(((bits >> 32) * n) >> 32)


cdef inline double _uniform(uint64_t bits) noexcept nogil:
    """A float in [0, 1) from 24 of the low-middle bits of ``bits``."""
    return <double>((bits >> 8) & <uint64_t>0xFFFFFF) * _INV24


def seed_state(seed, a, b, c):
    """A non-zero xorshift state derived from (seed, a, b, c) by splitmix64 mixing."""
    cdef uint64_t z = <uint64_t>seed
    cdef uint64_t v
    for v in (<uint64_t>a, <uint64_t>b, <uint64_t>c):
        z = z + <uint64_t>0x9E3779B97F4A7C15ULL + v
        z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
        z = z ^ (z >> 31)
    if z == 0:
        z = <uint64_t>0x9E3779B97F4A7C15ULL
    return z


cdef inline int64_t _alias_draw(uint64_t *state, const float *prob, const int32_t *alias, uint64_t n) noexcept nogil:
    """One draw from the alias table (Walker/Vose): a uniform column, kept with ``prob`` or else its alias."""
    cdef uint64_t bits = _next(state)
    cdef int64_t target = _below(bits, n)
    if _uniform(bits) >= <double>prob[target]:
        target = alias[target]
    return target


def sample_noise(const float[::1] prob, const int32_t[::1] alias, Py_ssize_t n, seed):
    """``n`` draws from the alias table exactly as the training kernel draws its noise words (for tests)."""
    cdef uint64_t state = seed_state(seed, 0, 0, 0)
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef Py_ssize_t t
    cdef uint64_t v = prob.shape[0]
    with nogil:
        for t in range(n):
            o[t] = <int32_t>_alias_draw(&state, &prob[0], &alias[0], v)
    return out


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def build_alias_table(weights):
    """Walker's alias table for sampling index ``i`` with probability ``weights[i] / weights.sum()``.

    Returns ``(prob, alias)``: draw ``k`` uniform in [0, V) and ``u`` uniform in [0, 1); the sample is ``k`` if
    ``u < prob[k]`` else ``alias[k]``. O(1) per draw with 8 bytes per word (word2vec.c's 1e8-entry table
    needs 400 MB; gensim's cumulative table needs a binary search per draw).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    s_arr = w * (n / w.sum())
    prob_arr = np.ones(n, dtype=np.float64)
    alias_arr = np.arange(n, dtype=np.int32)
    small_arr = np.empty(n, dtype=np.int64)
    large_arr = np.empty(n, dtype=np.int64)
    cdef double[::1] s = s_arr
    cdef double[::1] prob = prob_arr
    cdef int32_t[::1] alias = alias_arr
    cdef int64_t[::1] small = small_arr
    cdef int64_t[::1] large = large_arr
    cdef Py_ssize_t ns = 0, nl = 0, i, j
    for i in range(n):
        if s[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        i = small[ns]
        j = large[nl - 1]
        prob[i] = s[i]
        alias[i] = <int32_t>j
        s[j] = (s[j] + s[i]) - 1.0
        if s[j] < 1.0:
            nl -= 1
            small[ns] = j
            ns += 1
    # leftovers are 1 up to rounding
    return prob_arr.astype(np.float32), alias_arr


cdef inline Py_ssize_t _pop_smallest(int64_t[::1] count, Py_ssize_t *pos1, Py_ssize_t *pos2):
    """The smaller of the next leaf (``pos1``, moving down) and the next inner node (``pos2``, moving up);
    advances that queue."""
    cdef Py_ssize_t i
    if pos1[0] >= 0 and count[pos1[0]] < count[pos2[0]]:
        i = pos1[0]
        pos1[0] -= 1
    else:
        i = pos2[0]
        pos2[0] += 1
    return i


def build_huffman(counts):
    """Huffman tree over word counts sorted in decreasing order (word2vec.c's two-queue O(V) build).

    Returns ``(codes, points, lengths)``: for word ``w``, ``codes[w, :lengths[w]]`` are its bits from the
    root down and ``points[w, :lengths[w]]`` the inner nodes (0 .. V-2, root = V-2) whose vectors predict
    those bits. ``counts`` must be non-increasing (the vocabulary is sorted by frequency).
    """
    cdef int64_t[::1] cnt_in = np.ascontiguousarray(counts, dtype=np.int64)
    cdef Py_ssize_t v = cnt_in.shape[0]
    count_arr = np.full(2 * v, np.iinfo(np.int64).max // 4, dtype=np.int64)
    count_arr[:v] = cnt_in
    parent_arr = np.zeros(2 * v, dtype=np.int64)
    binary_arr = np.zeros(2 * v, dtype=np.uint8)
    codes_arr = np.zeros((v, _MAX_CODE), dtype=np.uint8)
    points_arr = np.zeros((v, _MAX_CODE), dtype=np.int32)
    lengths_arr = np.zeros(v, dtype=np.int32)
    cdef int64_t[::1] count = count_arr
    cdef int64_t[::1] parent = parent_arr
    cdef uint8_t[::1] binary = binary_arr
    cdef uint8_t[:, ::1] codes = codes_arr
    cdef int32_t[:, ::1] points = points_arr
    cdef int32_t[::1] lengths = lengths_arr
    cdef uint8_t code[_MAX_CODE]
    cdef int64_t point[_MAX_CODE]
    cdef Py_ssize_t pos1 = v - 1, pos2 = v, a, min1, min2, w, b, i, k
    cdef Py_ssize_t root = 2 * v - 2
    for a in range(v - 1):
        # the two smallest among leaves (scanned downwards) and inner nodes (scanned upwards)
        min1 = _pop_smallest(count, &pos1, &pos2)
        min2 = _pop_smallest(count, &pos1, &pos2)
        count[v + a] = count[min1] + count[min2]
        parent[min1] = v + a
        parent[min2] = v + a
        binary[min2] = 1
    for w in range(v):
        b = w
        i = 0
        while b != root:
            if i >= _MAX_CODE:
                raise ValueError("Huffman code longer than MAX_CODE_LENGTH")
            code[i] = binary[b]
            point[i] = b
            i += 1
            b = parent[b]
        lengths[w] = <int32_t>i
        # reverse: root first; points are the parents of the nodes on the path, shifted to 0 .. V-2
        for k in range(i):
            codes[w, i - 1 - k] = code[k]
        points[w, 0] = <int32_t>(root - v)
        for k in range(1, i):
            points[w, i - k] = <int32_t>(point[k] - v)
    return codes_arr, points_arr, lengths_arr


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


cdef struct Model:
    float *syn0
    float *syn1neg
    float *syn1
    const float *keep
    const float *prob
    const int32_t *alias
    const uint8_t *codes
    const int32_t *points
    const int32_t *lengths
    uint64_t vocab
    int64_t dim
    int64_t code_stride
    int negative
    bint use_hs
    bint compute_loss
    float **rows  # per-thread scratch: the output rows of one example (negative + 1)
    float *scores  # and their scores / gradients


cdef inline void _prefetch_row(const float *row, int64_t dim) noexcept nogil:
    """Ask the CPU to start loading ``row`` (one prefetch per 64-byte line, for writing). A hint only."""
    cdef int64_t off
    cdef const char *base = <const char *>row
    for off in range(0, dim * 4, 64):
        LMLAB_PREFETCH_W(base + off)


cdef inline double _logistic_update(const float *h, float *out, int label, float lr, float *neu1e, int64_t dim,
                                    bint compute_loss) noexcept nogil:
    """One logistic output unit ``out`` scoring the hidden vector ``h``: ``neu1e += g * out``, then
    ``out += g * h`` with ``g = (label - s(out.h)) * lr``. Returns -log p(label) in float64 (0 unless
    ``compute_loss``)."""
    cdef float f = 0.0
    cdef int64_t k
    for k in range(dim):
        f += h[k] * out[k]
    if f > _F_CLAMP:
        f = _F_CLAMP
    elif f < -_F_CLAMP:
        f = -_F_CLAMP
    cdef float e = expf(-f)
    cdef float s = <float>1.0 / (<float>1.0 + e)
    cdef double nll = 0.0
    if compute_loss:
        # -log s(f) = log1p(e);  -log(1 - s(f)) = f + log1p(e)
        nll = log1p(<double>e)
        if label == 0:
            nll += <double>f
    cdef float g = (<float>label - s) * lr
    cdef float o
    for k in range(dim):
        o = out[k]
        neu1e[k] += g * o
        out[k] = o + g * h[k]
    return nll


cdef inline double _output_layer(const Model *m, const float *h, int64_t word, float lr, float *neu1e,
                                 const int64_t *drawn) noexcept nogil:
    """Score ``word`` from the hidden vector ``h``: update the output vectors and set ``neu1e`` to lr times the
    negative gradient wrt the hidden vector; return the loss of this example.

    The noise words are ``drawn[:negative]``, drawn (and prefetched) by the caller by :func:`_draw_noise`;
    -1 marks a draw that hit ``word`` itself and is skipped, as in word2vec.c."""
    cdef double loss = 0.0
    cdef int64_t k, d, node, target
    cdef int64_t dim = m.dim
    for k in range(dim):
        neu1e[k] = 0.0
    if m.use_hs:
        for d in range(m.lengths[word]):
            node = m.points[word * m.code_stride + d]
            loss += _logistic_update(h, m.syn1 + node * dim, 1 - <int>m.codes[word * m.code_stride + d], lr,
                                     neu1e, dim, m.compute_loss)
    if m.negative > 0:
        loss += _negative_sampling(m, h, word, lr, neu1e, drawn)
    return loss


cdef inline double _negative_sampling(const Model *m, const float *h, int64_t word, float lr, float *neu1e,
                                      const int64_t *drawn) noexcept nogil:
    """The true word and the noise words: every score first (independent dot products the CPU overlaps), then
    every update. This is the exact gradient step on the example's loss; word2vec.c's one-unit-at-a-time order
    differs from it only when a noise word is drawn twice for one example (its second score then sees the first
    update)."""
    cdef int64_t dim = m.dim, k
    cdef int nt = 0, d
    cdef float **rows = m.rows
    cdef float *g = m.scores
    cdef float f, e, s, o, gd
    cdef double loss = 0.0
    rows[0] = m.syn1neg + word * dim
    nt = 1
    for d in range(m.negative):
        if drawn[d] >= 0:
            rows[nt] = m.syn1neg + drawn[d] * dim
            nt += 1
    for d in range(nt):
        f = 0.0
        for k in range(dim):
            f += h[k] * rows[d][k]
        g[d] = f
    for d in range(nt):
        f = g[d]
        if f > _F_CLAMP:
            f = _F_CLAMP
        elif f < -_F_CLAMP:
            f = -_F_CLAMP
        e = expf(-f)
        s = <float>1.0 / (<float>1.0 + e)
        if m.compute_loss:
            # -log s(f) = log1p(e);  -log(1 - s(f)) = f + log1p(e)
            loss += log1p(<double>e)
            if d > 0:
                loss += <double>f
        g[d] = ((<float>1.0 if d == 0 else <float>0.0) - s) * lr
    for d in range(nt):
        gd = g[d]
        for k in range(dim):
            o = rows[d][k]
            neu1e[k] += gd * o
            rows[d][k] = o + gd * h[k]
    return loss


cdef inline void _draw_noise(const Model *m, uint64_t *state, int64_t *drawn, int64_t word) noexcept nogil:
    """Draw ``negative`` noise words (alias method) into ``drawn``, -1 where one equals ``word``, and prefetch
    their output rows."""
    cdef int d
    cdef int64_t target
    for d in range(m.negative):
        target = _alias_draw(state, m.prob, m.alias, m.vocab)
        if target == word:
            drawn[d] = -1
        else:
            drawn[d] = target
            _prefetch_row(m.syn1neg + target * m.dim, m.dim)


cdef void _train_range(const Model *m, const int32_t *tokens, int64_t start, int64_t end, bint sg, int window,
                       bint cbow_mean, double lr_start, double lr_end, double words_before, double words_stride,
                       double total_words, int64_t max_sentence_length, uint64_t seed, bint shared_negatives,
                       int32_t *sent, int64_t *drawn, float *neu1e, float *hbuf,
                       int64_t *out_words, double *out_loss, int64_t *out_examples) noexcept nogil:
    """Train on the sentences in ``tokens[start:end]`` (which ends right after a ``-1``) on this thread.

    ``shared_negatives`` (skip-gram with negative sampling): each centre word draws its ``negative`` noise
    words once and every context word of its window is scored against the same ones, so their rows stay in
    the cache across the window (Ji et al., 2016, "Parallelizing word2vec in shared and distributed memory").

    ``words_before + words_stride * (words seen here)`` estimates how many words all threads together have
    trained on, which sets the linearly decaying learning rate."""
    cdef int64_t dim = m.dim
    cdef int negative = m.negative
    cdef bint share = sg and shared_negatives and negative > 0
    cdef uint64_t state = seed
    cdef int64_t words = 0, examples = 0, n = 0, pos = start, i, j, lo, hi, b, e, k, count
    cdef int64_t w, word, ctx
    cdef double loss = 0.0, progress
    cdef float lr = <float>lr_start, inv
    cdef uint64_t bits
    cdef float *row
    while pos < end:
        w = tokens[pos]
        pos += 1
        if w >= 0:
            words += 1
            if m.keep[w] < 1.0:
                bits = _next(&state)
                if _uniform(bits) >= <double>m.keep[w]:
                    continue
            if n < max_sentence_length:
                sent[n] = <int32_t>w
                n += 1
            continue
        # end of a sentence: train on the n kept words
        progress = (words_before + words_stride * <double>words) / total_words
        if progress > 1.0:
            progress = 1.0
        lr = <float>(lr_start - (lr_start - lr_end) * progress)
        for i in range(n):
            word = sent[i]
            b = _below(_next(&state), <uint64_t>window)  # dynamic window: 1 .. window words each side
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
                    _prefetch_row(m.syn1neg + word * dim, dim)
                    if share:
                        _draw_noise(m, &state, drawn, word)
                e = 0
                for j in range(lo, hi):
                    if j != i:
                        _prefetch_row(m.syn0 + sent[j] * dim, dim)
                        if negative > 0 and not share:
                            _draw_noise(m, &state, drawn + e * negative, word)
                        e += 1
                e = 0
                for j in range(lo, hi):
                    if j == i:
                        continue
                    row = m.syn0 + sent[j] * dim
                    loss += _output_layer(m, row, word, lr, neu1e, drawn if share else drawn + e * negative)
                    e += 1
                    examples += 1
                    for k in range(dim):
                        row[k] += neu1e[k]
            else:
                if negative > 0:
                    _prefetch_row(m.syn1neg + word * dim, dim)
                    _draw_noise(m, &state, drawn, word)
                count = 0
                for k in range(dim):
                    hbuf[k] = 0.0
                for j in range(lo, hi):
                    if j == i:
                        continue
                    row = m.syn0 + sent[j] * dim
                    count += 1
                    for k in range(dim):
                        hbuf[k] += row[k]
                if count == 0:
                    continue
                if cbow_mean:
                    inv = <float>1.0 / <float>count
                    for k in range(dim):
                        hbuf[k] *= inv
                loss += _output_layer(m, hbuf, word, lr, neu1e, drawn)
                examples += 1
                # word2vec.c / gensim convention: every context vector gets the full gradient wrt h
                for j in range(lo, hi):
                    if j == i:
                        continue
                    row = m.syn0 + sent[j] * dim
                    for k in range(dim):
                        row[k] += neu1e[k]
        n = 0
    out_words[0] = words
    out_loss[0] = loss
    out_examples[0] = examples


def _train_slice(int t, const int32_t[::1] tokens, const int64_t[::1] bounds, float[:, ::1] syn0,
                 float[:, ::1] syn1neg, float[:, ::1] syn1, const float[::1] keep, const float[::1] prob,
                 const int32_t[::1] alias, const uint8_t[:, ::1] codes, const int32_t[:, ::1] points,
                 const int32_t[::1] lengths, bint sg, int negative, bint use_hs, int window, bint cbow_mean,
                 double lr_start, double lr_end, double words_before, double total_words,
                 int64_t max_sentence_length, const uint64_t[::1] seeds, int64_t[::1] out_words,
                 double[::1] out_loss, int64_t[::1] out_examples, bint compute_loss, bint shared_negatives):
    """Slice ``t`` (``tokens[bounds[t]:bounds[t+1]]``) on the calling thread, without the GIL."""
    cdef Model m
    m.syn0 = &syn0[0, 0]
    m.syn1neg = &syn1neg[0, 0]
    m.syn1 = &syn1[0, 0]
    m.keep = &keep[0]
    m.prob = &prob[0]
    m.alias = &alias[0]
    m.codes = &codes[0, 0]
    m.points = &points[0, 0]
    m.lengths = &lengths[0]
    m.vocab = prob.shape[0]
    m.dim = syn0.shape[1]
    m.code_stride = codes.shape[1]
    m.negative = negative
    m.use_hs = use_hs
    m.compute_loss = compute_loss
    if points.shape[1] != m.code_stride:
        raise ValueError("codes and points must have the same number of columns")
    if syn1neg.shape[1] != m.dim or syn1.shape[1] != m.dim:
        raise ValueError("syn0, syn1neg and syn1 must have the same number of columns")
    cdef int64_t nslices = bounds.shape[0] - 1
    cdef int64_t slots = (negative if negative > 1 else 1) * 2 * (window if window > 1 else 1)
    cdef int32_t *sent = <int32_t *>malloc(max_sentence_length * sizeof(int32_t))
    cdef int64_t *drawn = <int64_t *>malloc(slots * sizeof(int64_t))
    cdef float *neu1e = <float *>malloc(m.dim * sizeof(float))
    cdef float *hbuf = <float *>malloc(m.dim * sizeof(float))
    m.rows = <float **>malloc((negative + 1) * sizeof(float *))
    m.scores = <float *>malloc((negative + 1) * sizeof(float))
    cdef int64_t k
    try:
        if sent == NULL or drawn == NULL or neu1e == NULL or hbuf == NULL or m.rows == NULL or m.scores == NULL:
            raise MemoryError("word2vec kernel: could not allocate its work buffers")
        for k in range(slots):
            drawn[k] = -1
        with nogil:
            _train_range(&m, &tokens[0], bounds[t], bounds[t + 1], sg, window, cbow_mean, lr_start, lr_end,
                         words_before, <double>nslices, total_words, max_sentence_length, seeds[t],
                         shared_negatives, sent, drawn, neu1e, hbuf, &out_words[t], &out_loss[t],
                         &out_examples[t])
    finally:  # free(NULL) is a no-op
        free(sent)
        free(drawn)
        free(neu1e)
        free(hbuf)
        free(m.rows)
        free(m.scores)


def train_chunk(tokens, bounds, syn0, syn1neg, syn1, keep, prob, alias, codes, points, lengths,
                sg, negative, use_hs, window, cbow_mean, lr_start, lr_end, words_before, total_words,
                max_sentence_length, seeds, out_words, out_loss, out_examples, compute_loss,
                shared_negatives=False):
    """Hogwild: slice ``t`` of ``tokens`` (``bounds[t]:bounds[t+1]``) is trained by its own thread.

    ``out_words[t]``, ``out_loss[t]``, ``out_examples[t]`` receive slice ``t``'s words seen, loss sum and
    number of examples."""
    args = (tokens, bounds, syn0, syn1neg, syn1, keep, prob, alias, codes, points, lengths, bool(sg),
            int(negative), bool(use_hs), int(window), bool(cbow_mean), float(lr_start), float(lr_end),
            float(words_before), float(total_words), int(max_sentence_length), seeds, out_words, out_loss,
            out_examples, bool(compute_loss), bool(shared_negatives))
    run_slices(_train_slice, len(bounds) - 1, args, "lmlab-w2v")
