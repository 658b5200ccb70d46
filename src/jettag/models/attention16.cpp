// Multi-head attention at head width 16 for CPU inference (fp32), compiled at first use by
// jettag.jit.cpp_library and called from jettag/models/attention16.py.
//
//   out[b, i, h*16:(h+1)*16] = sum_j softmax_j(q_i . k_j * scale + bias[b, h, i, j]) v_j
//
// Why: SDPA's CPU kernel spends most of its time at head width 16 on per-block bookkeeping; here one
// head's 16 floats are one vector register (GCC vector extensions, 512-bit where the CPU has it).
// Per jet: K^T is copied once, scaled, in blocks of 16 keys; then for 8 queries at a time the
// scores of 16 keys are 16 broadcast-FMAs, the row maximum and the exponentials are vector
// operations, and the mix with V is one FMA per (query, key). Few queries (class attention) take
// plain dot products instead of K^T, per (jet, head). Keys with bias -inf get weight exactly 0.
//
// Layout (strides in floats, the last axis of every tensor contiguous): q (B, T, H*16) at row
// stride qs_i; k, v (B, S, H*16); bias (B or 1, H or 1, T, >= S) with stride 0 on a broadcast axis;
// out (B, T, H*16). Work is split over jets with at::parallel_for, i.e. on torch's own threads.

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int D = 16;           // head width
constexpr int64_t SMAX = 512;   // most keys per row (stack buffers); attention16.py checks it
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));

inline v16 splat(float x) { return v16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline v16 loadu(const float *p) { v16 r; std::memcpy(&r, p, sizeof r); return r; }
inline void storeu(float *p, v16 x) { std::memcpy(p, &x, sizeof x); }
inline v16 vmax(v16 a, v16 b) { return a > b ? a : b; }

// horizontal sum / max in four shuffle steps (a scalar loop over the lanes is one long dependency chain)
#define HALVES(x, op) \
    x = op(x, __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)); \
    x = op(x, __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)); \
    x = op(x, __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)); \
    x = op(x, __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
inline v16 vadd(v16 a, v16 b) { return a + b; }
inline float hsum(v16 x) { HALVES(x, vadd) return x[0]; }
inline float hmax(v16 x) { HALVES(x, vmax) return x[0]; }

// exp(x) for x <= 0 (softmax after subtracting the row maximum), relative error ~1e-7: x = n ln2 + r
// with |r| <= ln2/2 (ln2 in two parts), Cephes' degree-5 polynomial for exp(r), 2^n from the exponent
// bits (adding 1.5 * 2^23 + 127 rounds x log2(e) to an integer and leaves n + 127 in the low bits);
// exactly 0 below -87.3, where 2^n would leave the normal range, and so at -inf.
inline v16 exp_neg(v16 x) {
    const v16 magic = splat(12582912.0f + 127.0f);
    v16 t = x * splat(1.44269504088896341f) + magic;
    v16 n = t - magic;
    v16 r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    v16 p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * (r * r) + r + splat(1.0f);
    i16 bits;
    std::memcpy(&bits, &t, sizeof bits);
    bits = bits << 23;
    v16 scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x < splat(-87.3f) ? splat(0.0f) : p * scale;
}

struct Args {
    const float *q, *k, *v, *bias;
    float *out;
    int64_t qs_b, qs_i, ks_b, ks_j, vs_b, vs_j, bs_b, bs_h, bs_i, os_b, os_i;
    int64_t H, T, S;
    float scale;
};

// One jet: K^T (scaled) and V of every head copied once into contiguous per-head blocks, reading
// k and v row by row (a head's 16 floats are one cache line of a row, so going head by head through
// the projections' rows would miss on every line); then, head by head, R queries at a time, with
// the next R query rows and their bias rows prefetched (the two largest stalls otherwise).
constexpr int R = 8;  // queries at a time

void attend_jet(const Args &a, int64_t b, float *kt, float *vh, float (*s)[SMAX]) {
    const int64_t S = a.S, S16 = (S + 15) & ~int64_t(15), H = a.H;
    for (int64_t j = 0; j < S16; ++j) {  // kt[h][(j / 16) * 256 + d * 16 + j % 16] = k[j, h, d] * scale
        const float *kj = a.k + b * a.ks_b + j * a.ks_j, *vj = a.v + b * a.vs_b + j * a.vs_j;
        for (int64_t h = 0; h < H; ++h) {
            const v16 kh = j < S ? loadu(kj + h * D) * splat(a.scale) : splat(0.0f);
            float *block = kt + h * S16 * D + (j & ~int64_t(15)) * D + (j & 15);
            for (int d = 0; d < D; ++d) block[d * 16] = kh[d];
            if (j < S) storeu(vh + (h * S16 + j) * D, loadu(vj + h * D));
        }
    }
    for (int64_t h = 0; h < H; ++h) {
        const float *kth = kt + h * S16 * D, *vhh = vh + h * S16 * D;
        for (int64_t i0 = 0; i0 < a.T; i0 += R) {
            const int rows = a.T - i0 < R ? int(a.T - i0) : R;
            {  // the next tile's query and bias rows, fetched while this one computes
                const int64_t hn = i0 + R < a.T ? h : h + 1, in = i0 + R < a.T ? i0 + R : 0;
                for (int64_t i = in; i < in + R && i < a.T && hn < H; ++i) {
                    __builtin_prefetch(a.q + b * a.qs_b + i * a.qs_i + hn * D);
                    const float *row = a.bias + b * a.bs_b + hn * a.bs_h + i * a.bs_i;
                    for (int64_t j = 0; j < S16; j += 16) __builtin_prefetch(row + j);
                }
            }
            float q[R][D];
            const float *bias[R];
            for (int r = 0; r < R; ++r) {  // rows past T repeat row i0 and are not written
                const int64_t i = i0 + (r < rows ? r : 0);
                std::memcpy(q[r], a.q + b * a.qs_b + i * a.qs_i + h * D, sizeof q[r]);
                bias[r] = a.bias + b * a.bs_b + h * a.bs_h + i * a.bs_i;
            }
            v16 mx[R];
            for (int r = 0; r < R; ++r) mx[r] = splat(-INFINITY);
            for (int64_t j0 = 0; j0 < S16; j0 += 16) {
                const float *kblock = kth + j0 * D;
                v16 acc[R];
                for (int r = 0; r < R; ++r) acc[r] = splat(0.0f);
                for (int d = 0; d < D; ++d) {
                    const v16 kd = loadu(kblock + d * 16);
                    for (int r = 0; r < R; ++r) acc[r] += splat(q[r][d]) * kd;
                }
                for (int r = 0; r < R; ++r) {
                    v16 bb;
                    if (j0 + 16 <= S) {
                        bb = loadu(bias[r] + j0);
                    } else {  // the last, partial block: keys past S get -inf
                        bb = splat(-INFINITY);
                        for (int64_t j = j0; j < S; ++j) bb[j - j0] = bias[r][j];
                    }
                    acc[r] += bb;
                    storeu(s[r] + j0, acc[r]);
                    mx[r] = vmax(mx[r], acc[r]);
                }
            }
            v16 o[R];
            float inv[R];
            for (int r = 0; r < R; ++r) {
                const v16 m = splat(hmax(mx[r]));
                v16 sum = splat(0.0f);
                for (int64_t j0 = 0; j0 < S16; j0 += 16) {
                    const v16 e = exp_neg(loadu(s[r] + j0) - m);
                    sum += e;
                    storeu(s[r] + j0, e);
                }
                inv[r] = 1.0f / hsum(sum);
                o[r] = splat(0.0f);
            }
            for (int64_t j = 0; j < S; ++j) {
                const v16 vj = loadu(vhh + j * D);
                for (int r = 0; r < R; ++r) o[r] += splat(s[r][j]) * vj;
            }
            for (int r = 0; r < rows; ++r)
                storeu(a.out + b * a.os_b + (i0 + r) * a.os_i + h * D, o[r] * splat(inv[r]));
        }
    }
}

void attend_many(const Args &a, int64_t start, int64_t end) {
    const int64_t S16 = (a.S + 15) & ~int64_t(15);
    std::vector<float> kt(a.H * S16 * D), vh(a.H * S16 * D);
    alignas(64) float s[R][SMAX];
    for (int64_t b = start; b < end; ++b) attend_jet(a, b, kt.data(), vh.data(), s);
}

void attend_few(const Args &a, int64_t start, int64_t end) {
    alignas(64) float s[SMAX];
    const int64_t S = a.S, S16 = (S + 15) & ~int64_t(15);
    for (int64_t bh = start; bh < end; ++bh) {
        const int64_t b = bh / a.H, h = bh % a.H;
        const float *kb = a.k + b * a.ks_b + h * D, *vb = a.v + b * a.vs_b + h * D;
        for (int64_t i = 0; i < a.T; ++i) {
            const v16 q = loadu(a.q + b * a.qs_b + i * a.qs_i + h * D) * splat(a.scale);
            const float *bias = a.bias + b * a.bs_b + h * a.bs_h + i * a.bs_i;
            float m = -INFINITY;
            for (int64_t j = 0; j < S; ++j) {
                s[j] = hsum(q * loadu(kb + j * a.ks_j)) + bias[j];
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t j = S; j < S16; ++j) s[j] = -INFINITY;  // the last block's keys past S: weight 0
            v16 sum = splat(0.0f);
            for (int64_t j0 = 0; j0 < S16; j0 += 16) {
                const v16 e = exp_neg(loadu(s + j0) - splat(m));
                sum += e;
                storeu(s + j0, e);
            }
            v16 o = splat(0.0f);
            for (int64_t j = 0; j < S; ++j) o += splat(s[j]) * loadu(vb + j * a.vs_j);
            storeu(a.out + b * a.os_b + i * a.os_i + h * D, o * splat(1.0f / hsum(sum)));
        }
    }
}

}  // namespace

extern "C" int64_t jettag_attention16_max_keys() { return SMAX; }

// strides: q (b, i), k (b, j), v (b, j), bias (b, h, i), out (b, i); see the layout above
extern "C" void jettag_attention16(const float *q, const float *k, const float *v, const float *bias, float *out,
                                   const int64_t *strides, int64_t B, int64_t H, int64_t T, int64_t S,
                                   float scale) {
    const int64_t *st = strides;
    const Args a{q, k, v, bias, out, st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10],
                 H, T, S, scale};
    if (T >= 8)  // over jets
        at::parallel_for(0, B, 1, [&](int64_t start, int64_t end) { attend_many(a, start, end); });
    else  // over (jet, head) pairs
        at::parallel_for(0, B * H, 1, [&](int64_t start, int64_t end) { attend_few(a, start, end); });
}
