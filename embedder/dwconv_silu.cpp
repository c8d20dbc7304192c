// Fused MBConv middle for CPU inference, fp32, AVX-512 or AVX2 (built by embedder/cpu_kernels.py).
//
// One pass per window over the expand conv's output (NHWC): SiLU as each input row is read (into a
// K-row ring that stays in cache), depthwise KxK conv + bias, SiLU, the output written once, and
// each channel summed for squeeze-excitation. oneDNN needs three passes over these, the largest
// tensors of the network: expand conv + SiLU writes the activation, the depthwise conv + SiLU reads
// it, the SE mean reads its output again.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// One source, two builds (embedder/cpu_kernels.py): -mavx512f (16 lanes, masked tails) and
// -mavx2 -mfma (8 lanes). The kernel below is written against this small vector layer.
#if defined(__AVX512F__)
typedef __m512 vf;
typedef __mmask16 vmask;
enum { LANES = 16 };
static inline vf set1(float a) { return _mm512_set1_ps(a); }
static inline vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vf clamp(vf x, float lo, float hi) {
    return _mm512_max_ps(_mm512_min_ps(x, set1(hi)), set1(lo));
}
static inline vf round_even(vf x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf scale2(vf p, vf n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
// 1 / d: rcp14 plus one Newton step (~1e-7 relative), not a division
static inline vf recip(vf d) {
    vf r = _mm512_rcp14_ps(d);
    return mul(r, fnmadd(d, r, set1(2.0f)));
}
static inline vmask tail_mask(int left) {
    return left >= 16 ? (vmask)0xFFFF : (vmask)((1u << left) - 1);
}
static inline vf load(vmask m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
static inline void store(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
typedef __m256i vmask;
enum { LANES = 8 };
static inline vf set1(float a) { return _mm256_set1_ps(a); }
static inline vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf clamp(vf x, float lo, float hi) {
    return _mm256_max_ps(_mm256_min_ps(x, set1(hi)), set1(lo));
}
static inline vf round_even(vf x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// p * 2^n for integral n in [-126, 127] (the exponent field built directly)
static inline vf scale2(vf p, vf n) {
    __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    __m256i e = _mm256_slli_epi32(biased, 23);
    return mul(p, _mm256_castsi256_ps(e));
}
// 1 / d: rcp (12 bits) plus one Newton step (~23 bits), not a division
static inline vf recip(vf d) {
    vf r = _mm256_rcp_ps(d);
    return mul(r, fnmadd(d, r, set1(2.0f)));
}
static inline vmask tail_mask(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf load(vmask m, const float *p) { return _mm256_maskload_ps(p, m); }
static inline void store(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }
#else
#error "build with -mavx512f, or with -mavx2 -mfma"
#endif

// exp(x) for x in [-87, 88]: 2^n * P(r), r = x - n ln2 (Cody-Waite split), |r| <= ln2 / 2,
// P the degree-6 Taylor polynomial (relative error < 2e-7).
static inline vf vexp(vf x) {
    x = clamp(x, -87.0f, 88.0f);
    vf n = round_even(mul(x, set1(1.44269504088896341f)));
    vf r = fnmadd(n, set1(0.693359375f), x);
    r = fnmadd(n, set1(-2.12194440e-4f), r);
    vf p = set1(1.0f / 720);
    p = fmadd(p, r, set1(1.0f / 120));
    p = fmadd(p, r, set1(1.0f / 24));
    p = fmadd(p, r, set1(1.0f / 6));
    p = fmadd(p, r, set1(0.5f));
    p = fmadd(p, r, set1(1.0f));
    p = fmadd(p, r, set1(1.0f));
    return scale2(p, n);
}

// x * sigmoid(x)
static inline vf silu(vf x) { return mul(x, recip(add(set1(1.0f), vexp(mul(x, set1(-1.0f)))))); }

// R adjacent outputs of one row, all channels: each weight vector is loaded once for R FMAs.
template <int K, int S, int R>
static inline void out_block(const float *const *rows, const float *w, const float *b, int C,
                             int ox0, float *o, float *sum) {
    for (int c = 0; c < C; c += LANES) {
        vmask m = tail_mask(C - c);
        vf acc[R];
        vf bias = load(m, b + c);
        for (int j = 0; j < R; j++) acc[j] = bias;
        for (int ky = 0; ky < K; ky++) {
            const float *row = rows[ky] + (int64_t)ox0 * S * C + c;
            for (int kx = 0; kx < K; kx++) {
                vf wv = load(m, w + (int64_t)(ky * K + kx) * C + c);
                for (int j = 0; j < R; j++)
                    acc[j] = fmadd(load(m, row + (int64_t)(j * S + kx) * C), wv, acc[j]);
            }
        }
        vf s = load(m, sum + c);
        for (int j = 0; j < R; j++) {
            vf y = silu(acc[j]);
            store(o + (int64_t)(ox0 + j) * C + c, m, y);
            s = add(s, y);
        }
        store(sum + c, m, s);
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
    const vmask all = tail_mask(LANES);
    int64_t i = 0;
    for (; i + LANES <= m; i += LANES) store(dst + i, all, silu(load(all, src + i)));
    if (i < m) {
        vmask k = tail_mask((int)(m - i));
        store(dst + i, k, silu(load(k, src + i)));
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
