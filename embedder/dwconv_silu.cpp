// Fused MBConv middle for CPU inference, fp32, AVX-512 (built by embedder/cpu_kernels.py).
//
// One pass per window over the expand conv's output (NHWC): SiLU as each input row is read (into a
// K-row ring that stays in cache), depthwise KxK conv + bias, SiLU, the output written once, and
// each channel summed for squeeze-excitation. oneDNN needs three passes over these, the largest
// tensors of the network: expand conv + SiLU writes the activation, the depthwise conv + SiLU reads
// it, the SE mean reads its output again.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// exp(x) for x in [-87, 88]: 2^n * P(r), r = x - n ln2 (Cody-Waite split), |r| <= ln2 / 2,
// P the degree-6 Taylor polynomial (relative error < 2e-7).
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// x * sigmoid(x); the reciprocal is rcp14 plus one Newton step (~1e-7 relative), not a division.
static inline __m512 silu512(__m512 x) {
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(x, r);
}

static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

// R adjacent outputs of one row, all channels: each weight vector is loaded once for R FMAs.
template <int K, int S, int R>
static inline void out_block(const float *const *rows, const float *w, const float *b, int C,
                             int ox0, float *o, float *sum) {
    for (int c = 0; c < C; c += 16) {
        __mmask16 m = tail_mask(C - c);
        __m512 acc[R];
        __m512 bias = _mm512_maskz_loadu_ps(m, b + c);
        for (int j = 0; j < R; j++) acc[j] = bias;
        for (int ky = 0; ky < K; ky++) {
            const float *row = rows[ky] + (int64_t)ox0 * S * C + c;
            for (int kx = 0; kx < K; kx++) {
                __m512 wv = _mm512_maskz_loadu_ps(m, w + (int64_t)(ky * K + kx) * C + c);
                for (int j = 0; j < R; j++)
                    acc[j] = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(m, row + (int64_t)(j * S + kx) * C), wv, acc[j]);
            }
        }
        __m512 s = _mm512_maskz_loadu_ps(m, sum + c);
        for (int j = 0; j < R; j++) {
            __m512 y = silu512(acc[j]);
            _mm512_mask_storeu_ps(o + (int64_t)(ox0 + j) * C + c, m, y);
            s = _mm512_add_ps(s, y);
        }
        _mm512_mask_storeu_ps(sum + c, m, s);
    }
}

template <int K, int S>
static void out_row(const float *const *rows, const float *w, const float *b, int C, int Wo,
                    float *o, float *sum) {
    int ox = 0;
    for (; ox + 4 <= Wo; ox += 4) out_block<K, S, 4>(rows, w, b, C, ox, o, sum);
    for (; ox < Wo; ox++) out_block<K, S, 1>(rows, w, b, C, ox, o, sum);
}

static void load_row(const float *src, float *dst, int64_t m, int act) {
    if (!act) {
        memcpy(dst, src, m * sizeof(float));
        return;
    }
    int64_t i = 0;
    for (; i + 16 <= m; i += 16) _mm512_storeu_ps(dst + i, silu512(_mm512_loadu_ps(src + i)));
    if (i < m) {
        __mmask16 k = tail_mask((int)(m - i));
        _mm512_mask_storeu_ps(dst + i, k, silu512(_mm512_maskz_loadu_ps(k, src + i)));
    }
}

typedef void (*row_fn_t)(const float *const *, const float *, const float *, int, int, float *,
                         float *);

// x (N, H, W, C) -> out (N, Ho, Wo, C) and sums (N, C) of out; w (K, K, C), b (C).
// Zero padding: pad_top rows above, pad_left columns left, the rest below / right as needed.
// ring: K * Wp * C floats and zero: Wp * C floats of scratch, Wp = (Wo - 1) * stride + K.
// Returns 0, or -1 for a kernel size / stride not compiled here (3 or 5; 1 or 2).
extern "C" int dwconv_silu(const float *x, int N, int H, int W, int C, const float *w,
                           const float *b, int K, int stride, int pad_top, int pad_left, int Ho,
                           int Wo, int act_in, float *out, float *sums, float *ring, float *zero) {
    row_fn_t row_fn;
    if (K == 3 && stride == 1) row_fn = out_row<3, 1>;
    else if (K == 3 && stride == 2) row_fn = out_row<3, 2>;
    else if (K == 5 && stride == 1) row_fn = out_row<5, 1>;
    else if (K == 5 && stride == 2) row_fn = out_row<5, 2>;
    else return -1;
    const int Wp = (Wo - 1) * stride + K;
    const int64_t rowlen = (int64_t)Wp * C;
    memset(zero, 0, rowlen * sizeof(float));
    memset(ring, 0, K * rowlen * sizeof(float));  // the pad columns stay zero from here on
    for (int n = 0; n < N; n++) {
        int loaded[5] = {-1, -1, -1, -1, -1};  // input row held by each ring slot
        float *sum = sums + (int64_t)n * C;
        memset(sum, 0, C * sizeof(float));
        const float *xn = x + (int64_t)n * H * W * C;
        float *on = out + (int64_t)n * Ho * Wo * C;
        for (int oy = 0; oy < Ho; oy++) {
            const float *rows[5];
            for (int ky = 0; ky < K; ky++) {
                const int iy = oy * stride - pad_top + ky;
                if (iy < 0 || iy >= H) {
                    rows[ky] = zero;
                    continue;
                }
                const int slot = iy % K;  // K consecutive rows never share a slot
                float *dst = ring + slot * rowlen;
                if (loaded[slot] != iy) {
                    load_row(xn + (int64_t)iy * W * C, dst + (int64_t)pad_left * C,
                             (int64_t)W * C, act_in);
                    loaded[slot] = iy;
                }
                rows[ky] = dst;
            }
            row_fn(rows, w, b, C, Wo, on + (int64_t)oy * Wo * C, sum);
        }
    }
    return 0;
}
