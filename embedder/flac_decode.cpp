// FLAC decoder for the archive reader (built by embedder/native.py, driven by embedder/flac.py).
//
// Why: libsndfile spends ~30 % of a FLAC read in its own per-sample copy loop around libFLAC
// (measured with perf), and decoding is what bounds a GPU ingest. This decoder covers native FLAC
// streams of 8/16/24-bit integer samples, 1-8 channels (RFC 9639), and writes interleaved float32
// exactly as libsndfile does (sample / 2^(bits-1)). It checks what libFLAC checks; whatever it
// does not cover, or any damage (a CRC mismatch, a lost sync, a truncated frame, frames out of
// order, samples out of range), is reported as an error at the start of the frame concerned, and
// the caller lets libsndfile read that file instead.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__PCLMUL__) && defined(__SSSE3__)
#include <immintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bit reader assumes a little-endian CPU"  // the build fails; libsndfile decodes instead
#endif

namespace {

constexpr int kMaxChannels = 8;
constexpr size_t kPad = 16;                // zero bytes after the data: 8-byte peeks stay inside
constexpr size_t kMinAhead = 1 << 20;      // bytes kept buffered ahead of a frame start
constexpr size_t kMaxBuffer = 256u << 20;  // a "frame" still not complete past this is damage

uint8_t crc8_table[256];
uint16_t crc16_table[8][256];  // [k][b]: CRC-16 of byte b followed by k zero bytes

struct Tables {
    Tables() {
        for (int b = 0; b < 256; b++) {
            uint8_t c8 = (uint8_t)b;
            uint16_t c16 = (uint16_t)(b << 8);
            for (int i = 0; i < 8; i++) {
                c8 = (uint8_t)((c8 & 0x80) ? (c8 << 1) ^ 0x07 : c8 << 1);
                c16 = (uint16_t)((c16 & 0x8000) ? (c16 << 1) ^ 0x8005 : c16 << 1);
            }
            crc8_table[b] = c8;
            crc16_table[0][b] = c16;
        }
        for (int k = 1; k < 8; k++)
            for (int b = 0; b < 256; b++) {
                uint16_t prev = crc16_table[k - 1][b];
                crc16_table[k][b] = (uint16_t)((prev << 8) ^ crc16_table[0][prev >> 8]);
            }
    }
} tables;

uint8_t crc8(const uint8_t* p, size_t n) {
    uint8_t c = 0;
    while (n--) c = crc8_table[c ^ *p++];
    return c;
}

uint16_t crc16_tables(const uint8_t* p, size_t n, uint32_t c = 0) {  // slicing by 8
    for (; n >= 8; n -= 8, p += 8) {
        c ^= (uint32_t)(p[0] << 8 | p[1]);
        c = crc16_table[7][c >> 8] ^ crc16_table[6][c & 0xff] ^ crc16_table[5][p[2]] ^
            crc16_table[4][p[3]] ^ crc16_table[3][p[4]] ^ crc16_table[2][p[5]] ^
            crc16_table[1][p[6]] ^ crc16_table[0][p[7]];
    }
    while (n--) c = ((c << 8) ^ crc16_table[0][((c >> 8) ^ *p++) & 0xff]) & 0xffff;
    return (uint16_t)c;
}

#if defined(__PCLMUL__) && defined(__SSSE3__)
// Carry-less folding (the frame CRC was 12-15 % of decoding with tables alone). Polynomials over
// GF(2) are integers, bit i the coefficient of x^i; a 16-byte block read big-endian is one of
// degree < 128. With the data so far congruent (mod P) to the block F = H x^64 + L, the data plus
// the next block B is congruent to H (x^192 mod P) + L (x^128 mod P) + B: two carry-less products
// of degree < 80. The CRC (init 0, no final xor) depends on the data only modulo P, so the tables
// finish it from F's 16 bytes and the tail.
uint64_t x_pow_mod_p(int k) {  // x^k mod P, P = x^16 + x^15 + x^2 + 1 (FLAC's CRC-16)
    uint64_t r = 1;
    for (int i = 0; i < k; i++) r = (r << 1) ^ ((r & 0x8000) ? 0x18005 : 0);
    return r;
}

const __m128i kFold = _mm_set_epi64x((long long)x_pow_mod_p(192), (long long)x_pow_mod_p(128));

uint16_t crc16(const uint8_t* p, size_t n) {
    if (n < 32) return crc16_tables(p, n);
    const __m128i swap = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m128i f = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)p), swap);  // (H, L)
    p += 16, n -= 16;
    for (; n >= 16; p += 16, n -= 16) {
        __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)p), swap);
        __m128i hi = _mm_clmulepi64_si128(f, kFold, 0x11);  // H * (x^192 mod P)
        __m128i lo = _mm_clmulepi64_si128(f, kFold, 0x00);  // L * (x^128 mod P)
        f = _mm_xor_si128(_mm_xor_si128(hi, lo), b);
    }
    uint8_t block[16];
    _mm_storeu_si128((__m128i*)block, _mm_shuffle_epi8(f, swap));  // big-endian again
    return crc16_tables(p, n, crc16_tables(block, 16));
}
#else
uint16_t crc16(const uint8_t* p, size_t n) { return crc16_tables(p, n); }
#endif

// MSB-first bit reader over a buffer followed by kPad zero bytes. `end` is the number of valid
// bits; reading past it sets `over` (the frame is incomplete in the buffer, or damaged), and once
// past it nothing more is read from memory: loops that go on counting stay inside the buffer.
struct Bits {
    const uint8_t* p;
    uint64_t pos, end;
    bool over;

    uint64_t peek() const {  // at least 57 valid bits, left-aligned (zeros past the end)
        if (pos > end) return 0;
        uint64_t v;
        memcpy(&v, p + (pos >> 3), 8);
        return __builtin_bswap64(v) << (pos & 7);
    }
    bool check() {
        if (pos > end) over = true;
        return !over;
    }
    uint32_t u(int n) {  // n <= 32
        if (n == 0) return 0;
        uint32_t v = (uint32_t)(peek() >> (64 - n));
        pos += n;
        check();
        return v;
    }
    int32_t s(int n) {  // two's complement, n <= 32
        if (n == 0) return 0;
        int32_t v = (int32_t)((int64_t)peek() >> (64 - n));
        pos += n;
        check();
        return v;
    }
    int unary() {  // zeros before the next one (consumed too); -1 past the end
        int n = 0;
        for (;;) {
            uint64_t v = peek();
            if (v >> 7) {  // a one among the 57 bits read for sure
                int z = __builtin_clzll(v);
                pos += z + 1;
                return check() ? n + z : -1;
            }
            pos += 57;
            n += 57;
            if (!check() || n > (1 << 30)) return -1;
        }
    }
};

// Predictors (RFC 9639 9.2.5-9.2.6): p(x, i, r) stores sample i from its residual r and returns
// it. Sums are int64, so damaged input wraps instead of overflowing (undefined behaviour).
struct Verbatim {
    int32_t operator()(int32_t* x, int i, int32_t r) { return x[i] = r; }
};

template <int O>
struct Fixed {
    int32_t operator()(int32_t* x, int i, int32_t r) {
        int64_t v = r;
        if (O == 1) v += x[i - 1];
        if (O == 2) v += 2 * (int64_t)x[i - 1] - x[i - 2];
        if (O == 3) v += 3 * ((int64_t)x[i - 1] - x[i - 2]) + x[i - 3];
        if (O == 4) v += 4 * ((int64_t)x[i - 1] + x[i - 3]) - 6 * (int64_t)x[i - 2] - x[i - 4];
        return x[i] = (int32_t)v;
    }
};

// The newest sample's term is added last, from a register: summing it first put a store and
// reload of x[i - 1] on every sample's dependency chain (twice as slow).
template <int O>
struct Lpc {
    int32_t c[O];
    int shift;
    int64_t last;
    Lpc(const int32_t* coef, int s, const int32_t* x) : shift(s), last(x[O - 1]) {
        for (int j = 0; j < O; j++) c[j] = coef[j];
    }
    int32_t operator()(int32_t* x, int i, int32_t r) {
        int64_t sum = 0;
        for (int j = O - 1; j >= 1; j--) sum += (int64_t)c[j] * x[i - 1 - j];
        sum += c[0] * last;
        last = (int32_t)(r + (sum >> shift));
        return x[i] = (int32_t)last;
    }
};

struct LpcAny {
    const int32_t* c;
    int order, shift;
    int32_t operator()(int32_t* x, int i, int32_t r) {
        int64_t sum = 0;
        for (int j = 0; j < order; j++) sum += (int64_t)c[j] * x[i - 1 - j];
        return x[i] = (int32_t)(r + (sum >> shift));
    }
};

// Rice-coded residuals (RFC 9639 9.2.7), `param` <= 30, each restored by `pred` as soon as it is
// read: the bit reader's dependency chain and the predictor's then run side by side. The bits live
// in a register between samples (all 64 are the true next bits; `count` of them are accounted for).
template <class P>
bool rice(Bits& b, int param, int32_t* x, int from, int n, P& pred) {
    if (!b.check()) return false;
    const uint8_t* ptr = b.p + (b.pos >> 3);
    const uint8_t* limit = b.p + (b.end >> 3) + 8;  // past it, an 8-byte load leaves the padding
    uint64_t buf = 0;
    int count = 0;  // stream position = (ptr - b.p) * 8 - count
    auto refill = [&] {
        uint64_t v;
        memcpy(&v, ptr, 8);
        buf |= __builtin_bswap64(v) >> count;
        ptr += (63 - count) >> 3;
        count |= 56;
    };
    auto seek = [&](uint64_t pos) {
        ptr = b.p + (pos >> 3), buf = 0, count = 0;
        refill();
        buf <<= pos & 7;
        count -= (int)(pos & 7);
    };
    seek(b.pos);
    // One residual from the register; false to stop (damage, or the buffer's end).
    auto one = [&](int i) -> bool {
        int q = buf ? __builtin_clzll(buf) : 64;
        uint64_t u;
        if (q + 1 + param <= count && q + param < 32) {  // (else: long, or over 32 bits)
            // param == 0: the two shifts drop everything (no shift by 64)
            u = ((uint64_t)q << param) | ((buf << (q + 1)) >> (63 - param) >> 1);
            buf <<= q + 1 + param;
            count -= q + 1 + param;
        } else {  // a long run of zeros: the position-based reader, then back to the register
            b.pos = (uint64_t)(ptr - b.p) * 8 - count;
            int z = b.unary();
            if (z < 0) return false;
            u = ((uint64_t)z << param) | b.u(param);
            if (u >> 32 || !b.check()) return false;  // a residual beyond 32 bits is damage
            seek(b.pos);
        }
        pred(x, i, (int32_t)(uint32_t)((u >> 1) ^ (0 - (u & 1))));
        return true;
    };
    int i = from, end = from + n;
    // With param <= 12 a code is nearly always under 27 bits, so two fit the 56 bits of one
    // refill: refilling once per pair is a fixed pattern that the branch predictor follows, where
    // refilling on demand was not (6-14 % faster on 16-bit files). `one` still checks each code
    // against `count`, so a longer one only takes the slower path.
    if (param <= 12) {
        for (; i + 1 < end; i += 2) {
            refill();
            if (ptr > limit) goto done;
            if (!one(i)) return false;
            if (count < 27) {  // a longer second code: top up first
                refill();
                if (ptr > limit) goto done;
            }
            if (!one(i + 1)) return false;
        }
    }
    for (; i < end; i++) {
        if (count < 32) {  // two or three samples per refill
            refill();
            if (ptr > limit) break;
        }
        if (!one(i)) return false;
    }
done:
    b.pos = (uint64_t)(ptr - b.p) * 8 - count;
    return b.check();
}

// The residual of a subframe after `order` warm-up samples, restored into x by `pred`.
template <class P>
bool residual(Bits& b, int order, int32_t* x, int n, P pred) {
    int method = (int)b.u(2);
    if (method > 1) return false;
    int pbits = method ? 5 : 4, escape = method ? 31 : 15;
    int porder = (int)b.u(4);
    int parts = 1 << porder, per = n >> porder;
    if ((per << porder) != n || per < order) return false;
    int k = order;
    for (int p = 0; p < parts; p++) {
        int count = p ? per : per - order;
        int param = (int)b.u(pbits);
        if (param == escape) {
            int bits = (int)b.u(5);
            for (int i = k; i < k + count; i++) pred(x, i, b.s(bits));
        } else if (!rice(b, param, x, k, count, pred)) {
            return false;
        }
        k += count;
        if (!b.check()) return false;
    }
    return true;
}

bool fixed(Bits& b, int32_t* x, int n, int order) {
    switch (order) {
        case 0: return residual(b, 0, x, n, Verbatim());
        case 1: return residual(b, 1, x, n, Fixed<1>());
        case 2: return residual(b, 2, x, n, Fixed<2>());
        case 3: return residual(b, 3, x, n, Fixed<3>());
        default: return residual(b, 4, x, n, Fixed<4>());
    }
}

bool lpc(Bits& b, int32_t* x, int n, const int32_t* c, int order, int shift) {
    switch (order) {  // the common orders with the inner loop unrolled
        case 1: return residual(b, 1, x, n, Lpc<1>(c, shift, x));
        case 2: return residual(b, 2, x, n, Lpc<2>(c, shift, x));
        case 3: return residual(b, 3, x, n, Lpc<3>(c, shift, x));
        case 4: return residual(b, 4, x, n, Lpc<4>(c, shift, x));
        case 5: return residual(b, 5, x, n, Lpc<5>(c, shift, x));
        case 6: return residual(b, 6, x, n, Lpc<6>(c, shift, x));
        case 7: return residual(b, 7, x, n, Lpc<7>(c, shift, x));
        case 8: return residual(b, 8, x, n, Lpc<8>(c, shift, x));
        case 10: return residual(b, 10, x, n, Lpc<10>(c, shift, x));
        case 12: return residual(b, 12, x, n, Lpc<12>(c, shift, x));
        default: return residual(b, order, x, n, LpcAny{c, order, shift});
    }
}

// One subframe of `n` samples at `bps` bits into x. False on anything invalid.
bool subframe(Bits& b, int32_t* x, int n, int bps) {
    if (b.u(1)) return false;  // padding bit
    int type = (int)b.u(6);
    int wasted = 0;
    if (b.u(1)) {
        int z = b.unary();
        if (z < 0) return false;
        wasted = z + 1;
    }
    bps -= wasted;
    if (bps < 1 || bps > 32) return false;
    if (type == 0) {  // CONSTANT
        int32_t v = b.s(bps);
        for (int i = 0; i < n; i++) x[i] = v;
    } else if (type == 1) {  // VERBATIM
        for (int i = 0; i < n; i++) x[i] = b.s(bps);
    } else if (type >= 8 && type <= 12) {  // FIXED, order 0-4
        int order = type - 8;
        if (order >= n) return false;  // libFLAC's rule too
        for (int i = 0; i < order; i++) x[i] = b.s(bps);
        if (!fixed(b, x, n, order)) return false;
    } else if (type >= 32) {  // LPC, order 1-32
        int order = type - 31;
        if (order >= n) return false;  // libFLAC's rule too
        for (int i = 0; i < order; i++) x[i] = b.s(bps);
        int precision = (int)b.u(4) + 1;
        int shift = b.s(5);
        if (precision == 16 || shift < 0) return false;
        int32_t c[32];
        for (int i = 0; i < order; i++) c[i] = b.s(precision);
        if (!lpc(b, x, n, c, order, shift)) return false;
    } else {
        return false;  // reserved
    }
    if (wasted)
        for (int i = 0; i < n; i++) x[i] = (int32_t)((uint32_t)x[i] << wasted);
    return b.check();
}

struct Decoder {
    FILE* f = nullptr;
    uint8_t* buf = nullptr;
    size_t cap = 0, len = 0, at = 0;  // buffer size, valid bytes, next frame start
    bool eof = false;
    int rate = 0, channels = 0, bits = 0;
    int64_t total = 0, emitted = 0;  // samples per channel: in STREAMINFO (0: unknown), returned
    int32_t* pcm = nullptr;          // current frame, channel-major (channels, 65536)
    int frame_len = 0, frame_pos = 0;
    size_t frame_cap = 0;            // most bytes the frame being decoded may take (0: unknown)
    // frame order, checked as libFLAC does (it fills gaps with silence; we hand over instead)
    int strategy = -1;               // blocking strategy of the stream, -1 before the first frame
    uint64_t expect = 0;             // next frame number (fixed) or sample number (variable)
    int block = 0;                   // the fixed block size; a shorter frame must be the last
    bool ended_short = false;
    bool resyncing = false;          // looking for the next good frame after damage (resync())
    int64_t gap = 0;                 // samples lost before the frame resync() found
    char error[160] = {0};

    bool fail(const char* msg) {
        snprintf(error, sizeof error, "%s", msg);
        return false;
    }

    // Move `at` on by n bytes without buffering them (cover art, tags).
    bool skip(size_t n, const char* what) {
        while (n > len - at) {
            n -= len - at;
            at = len;
            if (eof) return fail(what);
            if (!fill(kMinAhead)) return false;
        }
        at += n;
        return true;
    }

    // Keep at least `need` bytes after `at` buffered (fewer only at the end of the file).
    bool fill(size_t need) {
        if (len - at >= need || eof) return true;
        if (at) {
            memmove(buf, buf + at, len - at);
            len -= at;
            at = 0;
        }
        if (need + kPad > cap) {
            size_t want = cap * 2 > need + kPad ? cap * 2 : need + kPad;
            uint8_t* grown = (uint8_t*)realloc(buf, want);
            if (!grown) return fail("out of memory");
            buf = grown;
            cap = want;
        }
        while (len + kPad < cap && !eof) {
            size_t got = fread(buf + len, 1, cap - kPad - len, f);
            len += got;
            if (got == 0) {
                if (ferror(f)) return fail("read error");
                eof = true;
            }
        }
        memset(buf + len, 0, kPad);
        return true;
    }

    bool open(const char* path) {
        f = fopen(path, "rb");
        if (!f) return fail("cannot open");
        cap = 4u << 20;
        buf = (uint8_t*)malloc(cap);
        pcm = (int32_t*)malloc(sizeof(int32_t) * kMaxChannels * 65536);
        if (!buf || !pcm) return fail("out of memory");
        if (!fill(kMinAhead)) return false;
        if (len >= 10 && !memcmp(buf, "ID3", 3)) {  // an ID3v2 tag before the stream
            size_t tag = 10 + ((buf[6] & 0x7f) << 21 | (buf[7] & 0x7f) << 14 |
                               (buf[8] & 0x7f) << 7 | (buf[9] & 0x7f));
            if (buf[5] & 0x10) tag += 10;  // footer
            if (!skip(tag, "truncated ID3 tag")) return false;
        }
        if (!fill(8 + 34) || len - at < 8 + 34 || memcmp(buf + at, "fLaC", 4))
            return fail("not a native FLAC stream");
        at += 4;
        bool last = false, seen_info = false;
        while (!last) {
            if (!fill(4) || len - at < 4) return fail("truncated metadata");
            const uint8_t* h = buf + at;
            last = h[0] & 0x80;
            int type = h[0] & 0x7f;
            size_t size = (size_t)h[1] << 16 | h[2] << 8 | h[3];
            if (type == 127) return fail("invalid metadata block");
            if (type == 0) {
                if (size != 34 || !fill(4 + 34) || len - at < 4 + 34) return fail("bad STREAMINFO");
                const uint8_t* s = buf + at + 4;
                rate = s[10] << 12 | s[11] << 4 | s[12] >> 4;
                channels = ((s[12] >> 1) & 7) + 1;
                bits = ((s[12] & 1) << 4 | s[13] >> 4) + 1;
                total = (int64_t)(s[13] & 15) << 32 | (int64_t)s[14] << 24 | s[15] << 16 |
                        s[16] << 8 | s[17];
                seen_info = true;
            }
            if (!skip(4 + size, "truncated metadata")) return false;  // may exceed the buffer
        }
        if (!seen_info) return fail("no STREAMINFO");
        if (bits != 8 && bits != 16 && bits != 24) return fail("unsupported sample size");
        if (rate == 0) return fail("no sample rate");
        return true;
    }

    // Decodes the frame at `at` into pcm; false with `error` set on anything else (at unchanged).
    bool frame() {
        for (;;) {
            if (!fill(kMinAhead)) return false;
            if (len == at) {
                frame_len = frame_pos = 0;
                return true;  // end of stream
            }
            Bits b{buf + at, 0, (uint64_t)(len - at) * 8, false};
            int r = decode(b);
            if (r > 0) return true;
            if (r < 0) return false;
            // incomplete in the buffer: read more, unless the file has no more to give
            if (eof) return fail("truncated frame");
            size_t have = len - at;
            if (have * 2 > kMaxBuffer || (frame_cap && have > frame_cap))
                return fail("frame too large");  // a valid one stays near its verbatim size
            if (!fill(have * 2)) return false;
        }
    }

    // 1: decoded; 0: ran past the buffered data; -1: invalid (error set).
    int decode(Bits& b) {
        const uint8_t* h = b.p;
        // the header is at most 16 bytes: reading them is safe (kPad), using them is checked
        if (b.end < 2 * 8) return eof ? (fail("truncated frame"), -1) : 0;
        if (h[0] != 0xff || (h[1] & 0xfe) != 0xf8) return fail("lost frame sync"), -1;
        int bs_code = h[2] >> 4, sr_code = h[2] & 15;
        int ch_code = h[3] >> 4, bits_code = (h[3] >> 1) & 7;
        if (h[3] & 1 || bs_code == 0 || sr_code == 15 || ch_code > 10 || bits_code == 3)
            return fail("invalid frame header"), -1;
        frame_cap = 0;
        int strat = h[1] & 1;  // 0: fixed block size (frame numbers), 1: variable (sample numbers)
        size_t i = 4;  // the coded frame/sample number: UTF-8-like, 1-7 bytes (7: variable only)
        int extra = 0;
        if (h[i] == 0xff || (h[i] == 0xfe && !strat)) return fail("invalid frame number"), -1;
        if (h[i] >= 0xfe) extra = 6;
        else if (h[i] >= 0xfc) extra = 5;
        else if (h[i] >= 0xf8) extra = 4;
        else if (h[i] >= 0xf0) extra = 3;
        else if (h[i] >= 0xe0) extra = 2;
        else if (h[i] >= 0xc0) extra = 1;
        else if (h[i] >= 0x80) return fail("invalid frame number"), -1;
        uint64_t number = h[i] & (extra ? 0x7f >> (extra + 1) : 0x7f);
        i++;
        for (int k = 0; k < extra; k++, i++) {
            if ((h[i] & 0xc0) != 0x80) return fail("invalid frame number"), -1;
            number = number << 6 | (h[i] & 0x3f);
        }
        int n;
        if (bs_code == 1) n = 192;
        else if (bs_code <= 5) n = 576 << (bs_code - 2);
        else if (bs_code == 6) n = h[i++] + 1;
        else if (bs_code == 7) n = (h[i] << 8 | h[i + 1]) + 1, i += 2;
        else n = 256 << (bs_code - 8);
        if (sr_code == 12) i += 1;
        else if (sr_code == 13 || sr_code == 14) i += 2;
        static const int kRates[12] = {0, 88200, 176400, 192000, 8000, 16000,
                                       22050, 24000, 32000, 44100, 48000, 96000};
        if (sr_code >= 1 && sr_code <= 11 && kRates[sr_code] != rate)
            return fail("sample rate changes mid-stream"), -1;
        static const int kBits[8] = {0, 8, 12, 0, 16, 20, 24, 32};
        if (bits_code && kBits[bits_code] != bits) return fail("sample size changes mid-stream"), -1;
        int nch = ch_code < 8 ? ch_code + 1 : 2;
        if (nch != channels) return fail("channel count changes mid-stream"), -1;
        if ((i + 1) * 8 > b.end) return eof ? (fail("truncated frame"), -1) : 0;
        if (crc8(h, i) != h[i]) return fail("frame header CRC mismatch"), -1;
        if (n > 65535) return fail("invalid block size"), -1;
        if (strategy >= 0 && strat != strategy) return fail("blocking strategy changed"), -1;
        // libFLAC fills gaps with silence, and libsndfile's seeks fail around them (also one to
        // where it is: soundfile makes that after every read): let libsndfile decide such a file
        uint64_t want = strategy >= 0 ? expect : 0;
        if (number != want && !(resyncing && number > want))
            return fail("frames out of sequence"), -1;
        if (resyncing) {  // the frames lost in between; a number past the stated length is junk
            gap = (int64_t)(strat ? number - want : (number - want) * (uint64_t)(block ? block : n));
            if (gap < 0 || (total && emitted + gap + n > total))
                return fail("frames out of sequence"), -1;
        }
        if (!strat && (ended_short || (block && n > block)))
            return fail("block size changed in a fixed-size stream"), -1;
        frame_cap = 2 * ((size_t)n * nch * (bits + 1) / 8) + 4096;
        b.pos = (i + 1) * 8;
        for (int c = 0; c < nch; c++) {
            int side = (ch_code == 8 && c == 1) || (ch_code == 9 && c == 0) ||
                       (ch_code == 10 && c == 1);
            if (!subframe(b, pcm + c * 65536, n, bits + side)) {
                if (b.over) return eof ? (fail("truncated frame"), -1) : 0;
                return fail("invalid subframe"), -1;
            }
        }
        // libFLAC loses sync on non-zero padding before the CRC, so such a frame is damage here too
        // (bits past `end` are not the file's yet: that case is an incomplete frame, decided below)
        if (int pad = (int)(-b.pos & 7); pad && b.u(pad) && !b.over)
            return fail("lost frame sync"), -1;
        if (b.pos + 16 > b.end) return eof ? (fail("truncated frame"), -1) : 0;
        size_t bytes = b.pos / 8;
        if (crc16(h, bytes) != (h[bytes] << 8 | h[bytes + 1])) return fail("frame CRC mismatch"), -1;
        int32_t *x0 = pcm, *x1 = pcm + 65536;
        if (ch_code == 8) {  // left, side
            for (int k = 0; k < n; k++) x1[k] = (int32_t)((int64_t)x0[k] - x1[k]);
        } else if (ch_code == 9) {  // side, right
            for (int k = 0; k < n; k++) x0[k] = (int32_t)((int64_t)x0[k] + x1[k]);
        } else if (ch_code == 10) {  // mid, side
            for (int k = 0; k < n; k++) {
                int64_t mid = (int64_t)x0[k] * 2 | (x1[k] & 1);
                x0[k] = (int32_t)((mid + x1[k]) >> 1);
                x1[k] = (int32_t)((mid - x1[k]) >> 1);
            }
        }
        const int32_t lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
        for (int c = 0; c < nch; c++) {  // libFLAC drops a frame whose samples overflow
            const int32_t* x = pcm + c * 65536;
            int32_t mn = x[0], mx = x[0];
            for (int k = 1; k < n; k++) mn = x[k] < mn ? x[k] : mn, mx = x[k] > mx ? x[k] : mx;
            if (mn < lo || mx > hi) return fail("sample out of range"), -1;
        }
        if (strategy < 0) strategy = strat, block = n;
        if (!strat && n < block) ended_short = true;
        expect = strat ? number + n : number + 1;
        at += bytes + 2;
        frame_len = n;
        frame_pos = 0;
        return 1;
    }

    // Up to `want` frames (samples per channel) into out, interleaved; -1 on error.
    int64_t read(float* out, int64_t want) {
        if (total) want = want < total - emitted ? want : total - emitted;
        float scale = 1.0f / (float)(1 << (bits - 1));
        int64_t done = 0;
        auto stop = [&]() -> int64_t { return done ? (emitted += done, done) : -1; };
        while (done < want) {
            if (frame_pos == frame_len) {
                if (!frame()) return stop();
                if (frame_len == 0) {
                    // short of STREAMINFO's length: libsndfile fails there, so hand over
                    if (total && emitted + done < total)
                        return fail("stream ends before its stated length"), stop();
                    break;
                }
            }
            int64_t take = frame_len - frame_pos;
            if (take > want - done) take = want - done;
            if (channels == 1) {  // contiguous: vectorised
                const int32_t* x = pcm + frame_pos;
                float* o = out + done;
                for (int64_t k = 0; k < take; k++) o[k] = (float)x[k] * scale;
            } else {
                for (int c = 0; c < channels; c++) {
                    const int32_t* x = pcm + c * 65536 + frame_pos;
                    float* o = out + done * channels + c;
                    for (int64_t k = 0; k < take; k++) o[k * channels] = (float)x[k] * scale;
                }
            }
            frame_pos += (int)take;
            done += take;
        }
        emitted += done;
        return done;
    }

    // After a frame that failed at `at`: scan on for the next frame that decodes whole (sync code,
    // header CRC, frame CRC, a number after the one expected) and make it the current frame, as
    // libFLAC does when it loses sync. Returns the samples lost before it (added to `emitted`),
    // or -1 when nothing after the damage decodes (a truncated file: the stream ends there).
    int64_t resync() {
        frame_len = frame_pos = 0;
        resyncing = true;
        int64_t lost = -1;
        // from the failed frame itself: a whole frame out of sequence (one lost before it) is
        // taken as it is; damaged bytes fail again, and the scan moves on past them
        while (fill(kMinAhead) && at < len) {
            const uint8_t* p = buf + at;
            const uint8_t* end = buf + len;  // kPad zero bytes follow: p[1] is readable
            while (p < end && !(p[0] == 0xff && (p[1] & 0xfe) == 0xf8)) p++;
            at = (size_t)(p - buf);
            if (p >= end) {
                if (eof) break;
                at = len - 1;  // keep the last byte: a sync code may straddle the refill
                continue;
            }
            int r = candidate();
            if (r > 0) {
                lost = gap;
                emitted += gap;
                break;
            }
            if (r < -1) break;  // a read error
            at += 1;
        }
        resyncing = false;
        return lost;
    }

    // Decodes a possible frame at `at` (resync): 1 decoded, -1 not a frame, -2 read error.
    int candidate() {
        for (;;) {
            Bits b{buf + at, 0, (uint64_t)(len - at) * 8, false};
            int r = decode(b);
            if (r != 0) return r;
            size_t have = len - at;
            if (eof || have * 2 > kMaxBuffer || (frame_cap && have > frame_cap)) return -1;
            if (!fill(have * 2)) return -2;
        }
    }

    ~Decoder() {
        if (f) fclose(f);
        free(buf);
        free(pcm);
    }
};

}  // namespace

extern "C" {

// The frame CRC-16 of n bytes, for the tests (folding and tables must agree at every length).
uint16_t chorus_flac_crc16(const uint8_t* p, int64_t n) { return n > 0 ? crc16(p, (size_t)n) : 0; }

// Opens `path`; info gets {sample rate, channels, bits, total samples (0: unknown)}. On failure
// returns null and writes the reason into err.
void* chorus_flac_open(const char* path, int64_t* info, char* err, int errlen) {
    Decoder* d = new Decoder;
    if (!d->open(path)) {
        snprintf(err, (size_t)errlen, "%s", d->error);
        delete d;
        return nullptr;
    }
    info[0] = d->rate, info[1] = d->channels, info[2] = d->bits, info[3] = d->total;
    return d;
}

// Decodes up to `frames` samples per channel into out (frames x channels float32): the count,
// 0 at the end, -1 on an error before any sample (chorus_flac_error says which). An error after
// some samples returns those first; the next call reports it.
int64_t chorus_flac_read(void* h, float* out, int64_t frames) {
    return ((Decoder*)h)->read(out, frames);
}

// After chorus_flac_read reported damage: moves on to the next frame that decodes and returns
// the samples per channel lost before it (the caller fills them with silence), or -1 when no
// frame after the damage decodes.
int64_t chorus_flac_resync(void* h) { return ((Decoder*)h)->resync(); }

const char* chorus_flac_error(void* h) { return ((Decoder*)h)->error; }

void chorus_flac_close(void* h) { delete (Decoder*)h; }
}
