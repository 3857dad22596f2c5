# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernel for bf16-stored weights with float32 arithmetic: ``y = x @ W^T (+ bias)``.

``W`` (out, in) is a row-major matrix of bfloat16 values (read as 16-bit integers); ``x`` (B, in) and ``y``
(B, out) are float32, C-contiguous. bf16 -> float32 is exact (the 16 bits are the top half of the float32), so
every product is the float32 product a model upcast to float32 computes; only the order of the sums differs (as
between any two BLAS). Decoding one token reads every weight once per step: storing them in 16 bits halves the
bytes read, which is the whole cost of a matrix-vector product on a CPU.

The inner loop works on 8 values at a time with GCC/Clang vector extensions (lowered to AVX2 + FMA under
``-march=native``: zero-extend 8 x u16 -> u32, shift left 16, reinterpret as float, fused multiply-add), four
rows of ``W`` against up to two rows of ``x`` per pass (8 accumulators), so each converted weight vector is used
by both rows of ``x`` and a block of four rows of ``W`` (at most 4 x in x 2 bytes) stays in L1/L2 for the next
pair. Other compilers get the plain scalar loop. Python's :mod:`lmlab.models.bf16` is the driver (checks,
threads over blocks of rows with :func:`lmlab.models._compiled.run_slices`).
"""

from libc.stdint cimport uint16_t, uintptr_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline float lmlab_bf16_to_f32(uint16_t h) {
        uint32_t u = ((uint32_t)h) << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }

    #if (defined(__GNUC__) || defined(__clang__)) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #include <stdlib.h>
    typedef float lmlab_v8f __attribute__((vector_size(32)));
    typedef uint32_t lmlab_v8u __attribute__((vector_size(32)));

    /* 16 bf16 values w[0..15] as two float vectors: (w[0], w[2], ..., w[14]) and (w[1], w[3], ..., w[15]).
       Read as 8 little-endian u32, the even value is the low half (shifted up: its float), the odd one the
       high half (masked: already its float) - no widening shuffles, two instructions for 16 values */
    static inline void lmlab_load16_bf16(const uint16_t *p, lmlab_v8f *even, lmlab_v8f *odd) {
        lmlab_v8u u;
        memcpy(&u, p, sizeof u);
        lmlab_v8u e = u << 16, o = u & 0xFFFF0000u;
        memcpy(even, &e, sizeof e);
        memcpy(odd, &o, sizeof o);
    }

    static inline lmlab_v8f lmlab_load8_f32(const float *p) {
        lmlab_v8f f;
        memcpy(&f, p, sizeof f);
        return f;
    }

    static inline float lmlab_hsum8(lmlab_v8f v) {
        return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    }
    #define LMLAB_BF16_VECTOR 1
    #else
    #define LMLAB_BF16_VECTOR 0
    #endif

    /* y[b][j] = bias[j] + sum_i x[b][i] * W[j][i] for rows j in [j0, j1) of W and every row b of x.
       Returns 0, or -1 when the scratch buffer could not be allocated. */
    static int lmlab_bf16_linear_rows(const float *x, long B, long n_in, const uint16_t *w, const float *bias,
                                      float *y, long n_out, long j0, long j1) {
        long j = j0;
    #if LMLAB_BF16_VECTOR
        long n16 = n_in - n_in % 16, nblk = n16 / 16;
        /* x's first n16 values of each row deinterleaved per block of 16: xd[b][blk] = 8 even, then 8 odd */
        float *xd = (float *)malloc(sizeof(float) * (size_t)(B * n16 + 1));
        if (!xd) return -1;
        for (long b = 0; b < B; b++)
            for (long k = 0; k < nblk; k++)
                for (int t = 0; t < 8; t++) {
                    xd[b * n16 + 16 * k + t] = x[b * n_in + 16 * k + 2 * t];
                    xd[b * n16 + 16 * k + 8 + t] = x[b * n_in + 16 * k + 2 * t + 1];
                }
        for (; j + 4 <= j1; j += 4) {
            const uint16_t *wr[4] = {w + j * n_in, w + (j + 1) * n_in, w + (j + 2) * n_in, w + (j + 3) * n_in};
            long b = 0;
            for (; b + 2 <= B; b += 2) {
                const float *pa = xd + b * n16, *pb = pa + n16;
                const float *xa = x + b * n_in, *xb = xa + n_in;
                lmlab_v8f a[4] = {{0}}, c[4] = {{0}};
                for (long i = 0; i < n16; i += 16) {
                    lmlab_v8f ue = lmlab_load8_f32(pa + i), uo = lmlab_load8_f32(pa + i + 8);
                    lmlab_v8f ve = lmlab_load8_f32(pb + i), vo = lmlab_load8_f32(pb + i + 8);
                    for (int r = 0; r < 4; r++) {
                        lmlab_v8f fe, fo;
                        lmlab_load16_bf16(wr[r] + i, &fe, &fo);
                        a[r] += ue * fe;
                        a[r] += uo * fo;
                        c[r] += ve * fe;
                        c[r] += vo * fo;
                    }
                }
                for (int r = 0; r < 4; r++) {
                    float s = lmlab_hsum8(a[r]), t = lmlab_hsum8(c[r]);
                    for (long i = n16; i < n_in; i++) {
                        float g = lmlab_bf16_to_f32(wr[r][i]);
                        s += xa[i] * g;
                        t += xb[i] * g;
                    }
                    float add = bias ? bias[j + r] : 0.0f;
                    y[b * n_out + j + r] = s + add;
                    y[(b + 1) * n_out + j + r] = t + add;
                }
            }
            for (; b < B; b++) {
                const float *pa = xd + b * n16, *xa = x + b * n_in;
                lmlab_v8f a[4] = {{0}}, c[4] = {{0}};
                for (long i = 0; i < n16; i += 16) {
                    lmlab_v8f ue = lmlab_load8_f32(pa + i), uo = lmlab_load8_f32(pa + i + 8);
                    for (int r = 0; r < 4; r++) {
                        lmlab_v8f fe, fo;
                        if (b == B - 1)  /* the next block of rows (a hint: never faults past the end) */
                            __builtin_prefetch(wr[r] + 4 * n_in + i, 0, 0);
                        lmlab_load16_bf16(wr[r] + i, &fe, &fo);
                        a[r] += ue * fe;
                        c[r] += uo * fo;
                    }
                }
                for (int r = 0; r < 4; r++) {
                    float s = lmlab_hsum8(a[r] + c[r]);
                    for (long i = n16; i < n_in; i++)
                        s += xa[i] * lmlab_bf16_to_f32(wr[r][i]);
                    y[b * n_out + j + r] = s + (bias ? bias[j + r] : 0.0f);
                }
            }
        }
        free(xd);
    #endif
        for (; j < j1; j++) {  /* the last rows (fewer than four), or every row without vector extensions */
            const uint16_t *wr = w + j * n_in;
            for (long b = 0; b < B; b++) {
                const float *xa = x + b * n_in;
                float s = 0.0f;
                for (long i = 0; i < n_in; i++)
                    s += xa[i] * lmlab_bf16_to_f32(wr[i]);
                y[b * n_out + j] = s + (bias ? bias[j] : 0.0f);
            }
        }
        return 0;
    }
    """
    int lmlab_bf16_linear_rows(const float *x, long B, long n_in, const uint16_t *w, const float *bias,
                               float *y, long n_out, long j0, long j1) noexcept nogil


def linear_rows(uintptr_t x, long rows, long n_in, uintptr_t w, uintptr_t bias, uintptr_t y, long n_out,
                long j0, long j1):
    """``y[:, j0:j1] = x @ W[j0:j1].T (+ bias[j0:j1])`` on raw addresses (0 for no bias), the GIL released.

    ``x`` (rows, n_in) float32, ``W`` (n_out, n_in) bf16 as uint16, ``bias`` (n_out,) float32, ``y`` (rows, n_out)
    float32, all C-contiguous. The caller (:func:`lmlab.models.bf16.linear`) checks every shape, dtype and
    layout: this function trusts them."""
    cdef int status
    with nogil:
        status = lmlab_bf16_linear_rows(<const float *> x, rows, n_in, <const uint16_t *> w, <const float *> bias,
                                        <float *> y, n_out, j0, j1)
    if status:
        raise MemoryError("bf16 linear: no memory for a copy of x")
