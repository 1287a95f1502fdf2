/* The CUDA backend's kernels, written once for two compilers: NVRTC compiles this file for the
 * GPU at run time (`engine/src/cuda/`), and the engine's build script compiles it as host C
 * (`host.c`, with `host_launch.h` mapping the launch indices to a loop), so the numerics of every
 * kernel are tested on the CPU against the scalar specification, bit for bit
 * (`engine/tests/cuda_bodies.rs`).
 *
 * Each kernel visits its work items with a grid-stride loop; one item is one output element (or
 * one row, one block, one token) and computes it exactly as the specification does, in the same
 * order of float operations:
 *
 * - `bn_q8k_quantize`: `quantize_row_q8_K_ref` (`engine/src/kernels/scalar.rs`, quantize_q8k),
 *   one item per 256-element block;
 * - `bn_i8s_quantize`: bitnet.cpp's `quantize_row_i8_s` (scalar.rs, quantize_i8s), one per token;
 * - `bn_tq_matmul`: TQ2_0 / TQ1_0 rows against Q8_K blocks (scalar.rs, ternary_dot): 8 exact
 *   integer lanes per block, `fmaf` across blocks, `hsum_float_8`; one item per (token, row);
 *   `bn_tq_lanes` writes the integer lanes themselves, for the exactness checks;
 * - `bn_i2s_matmul`: the exact `Σ code·q` of an I2_S row, finished as bitnet.cpp's `mul_mat`;
 * - `bn_float_matmul`: F16/F32 rows in tinyBLAS's order or `ggml_vec_dot_f16`'s (scalar.rs,
 *   float_dot), the caller choosing which as ggml does; `bn_round_f16` rounds activations to F16;
 * - `bn_embed`: rows of an F16/F32 embedding; `bn_rms_scale` + `bn_rms_apply`: RMSNorm·weight
 *   (`engine/src/forward.rs`, rms_norm: f64 sum of f32 squares in index order);
 * - `bn_rope_neox`: ggml_math::rope_rotate with the host's angle table (cos, sin per pair);
 * - `bn_attn_scores`, `bn_attn_softmax`, `bn_attn_kqv`: `engine/src/attention.rs` (attend) over a
 *   position-major KV cache, one item per score, per (token, head) softmax row, per output value;
 * - `bn_swiglu` (ggml_math::swiglu), `bn_relu2_mul` (ggml_math::relu2_mul), `bn_add`,
 *   `bn_scale`: element by element;
 * - `bn_read_sum`: a plain read of a buffer (the bench's bandwidth measurement).
 *
 * Float rules that keep the two compilers equal: `fmaf` exactly where the specification has
 * `mul_add` and nowhere else (NVRTC runs with `--fmad=false`, the host build with
 * `-ffp-contract=off`), IEEE division and square root (NVRTC's defaults `--prec-div=true`,
 * `--prec-sqrt=true`, no flush to zero), doubles where the specification has f64. One function
 * differs by compiler: `expf` in `bn_silu_tail` (ggml's scalar tail of SwiGLU, for the elements of
 * a row past its last whole group of 8) is the C library's on the host, as in the specification,
 * and CUDA's `expf` (within 2 ulp) on the GPU. */
#ifndef BN_BODIES_CUH
#define BN_BODIES_CUH

typedef signed char bn_i8;
typedef unsigned char bn_u8;
typedef short bn_i16;
typedef unsigned short bn_u16;
typedef int bn_i32;
typedef unsigned int bn_u32;
typedef long long bn_i64;
typedef unsigned long long bn_u64;

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define BN_DEV static __device__ __forceinline__
#define BN_KERNEL extern "C" __global__ void
BN_DEV bn_u32 bn_f2u(float f) { return __float_as_uint(f); }
BN_DEV float bn_u2f(bn_u32 u) { return __uint_as_float(u); }
#else
#include "host_launch.h"
#define BN_DEV static inline
#define BN_KERNEL void
BN_DEV bn_u32 bn_f2u(float f) {
    bn_u32 u;
    memcpy(&u, &f, 4);
    return u;
}
BN_DEV float bn_u2f(bn_u32 u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#endif

/* Every work item `gid` in `0..n`, as a grid-stride loop. */
#define BN_FOR_EACH(gid, n)                                                                       \
    for (bn_u64 gid = (bn_u64)blockIdx.x * blockDim.x + threadIdx.x; gid < (n);                  \
         gid += (bn_u64)gridDim.x * blockDim.x)

#define BN_QK_K 256
#define BN_TQ2_0_BYTES 66
#define BN_TQ1_0_BYTES 54
#define BN_QK_I2_S 128

/* `block_q8_K` (scalar.rs, BlockQ8K): the same 292 bytes. */
typedef struct {
    float d;
    bn_i8 qs[BN_QK_K];
    bn_i16 bsums[BN_QK_K / 16];
} bn_block_q8k;
typedef char bn_block_q8k_is_292_bytes[sizeof(bn_block_q8k) == 292 ? 1 : -1];

/* ---- Conversions ------------------------------------------------------------------------- */

/* IEEE half to f32, exact (NaNs quieted, as F16C and the `half` crate do). */
BN_DEV float bn_f16_to_f32(bn_u16 h) {
    bn_u32 sign = (bn_u32)(h & 0x8000u) << 16;
    bn_u32 exp = (h >> 10) & 0x1fu;
    bn_u32 man = h & 0x3ffu;
    bn_u32 bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* Subnormal: normalise the mantissa. */
            bn_u32 e = 0;
            while (!(man & 0x400u)) {
                man <<= 1;
                e++;
            }
            bits = sign | ((127u - 15u + 1u - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man ? 0x00400000u : 0u) | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    return bn_u2f(bits);
}

/* f32 to IEEE half, round to nearest even (quant/float.rs, f32_to_f16: the `half` crate's
 * conversion, which F16C's `vcvtps2ph` matches). */
BN_DEV bn_u16 bn_f32_to_f16(float v) {
    bn_u32 x = bn_f2u(v);
    bn_u32 sign = x & 0x80000000u;
    bn_u32 exp = x & 0x7f800000u;
    bn_u32 man = x & 0x007fffffu;
    bn_u32 half_sign = sign >> 16;
    if (exp == 0x7f800000u) {
        bn_u32 nan_bit = man == 0 ? 0u : 0x0200u;
        return (bn_u16)(half_sign | 0x7c00u | nan_bit | (man >> 13));
    }
    bn_i32 half_exp = (bn_i32)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1f) {
        return (bn_u16)(half_sign | 0x7c00u);
    }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) {
            return (bn_u16)half_sign;
        }
        bn_u32 m = man | 0x00800000u;
        bn_u32 half_man = m >> (14 - half_exp);
        bn_u32 round_bit = 1u << (13 - half_exp);
        if ((m & round_bit) != 0 && (m & (3u * round_bit - 1u)) != 0) {
            half_man += 1;
        }
        return (bn_u16)(half_sign | half_man);
    }
    bn_u32 he = (bn_u32)half_exp << 10;
    bn_u32 half_man = man >> 13;
    bn_u32 round_bit = 0x00001000u;
    if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) {
        return (bn_u16)((half_sign | he | half_man) + 1u);
    }
    return (bn_u16)(half_sign | he | half_man);
}

BN_DEV bn_u16 bn_le16(const bn_u8 *p) { return (bn_u16)(p[0] | (p[1] << 8)); }

BN_DEV float bn_le_f32(const bn_u8 *p) {
    return bn_u2f((bn_u32)p[0] | ((bn_u32)p[1] << 8) | ((bn_u32)p[2] << 16) |
                  ((bn_u32)p[3] << 24));
}

/* ggml's `nearest_int`: round to nearest, ties to even, through the float mantissa. */
BN_DEV bn_i32 bn_nearest_int(float v) {
    bn_i32 bits = (bn_i32)bn_f2u(v + 12582912.0f);
    return (bits & 0x007fffff) - 0x00400000;
}

/* ---- Horizontal sums (scalar.rs) --------------------------------------------------------- */

/* `hsum_float_8`: `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`. */
BN_DEV float bn_hsum8(const float *a) {
    float r0 = a[4] + a[0], r1 = a[5] + a[1], r2 = a[6] + a[2], r3 = a[7] + a[3];
    return (r0 + r2) + (r1 + r3);
}

/* Two `_mm_hadd_ps`: `((a0+a4)+(a1+a5)) + ((a2+a6)+(a3+a7))`. */
BN_DEV float bn_hadd8(const float *a) {
    float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
    return (t0 + t1) + (t2 + t3);
}

/* ---- Activation quantizers --------------------------------------------------------------- */

/* One Q8_K block of 256 values. */
BN_DEV void bn_q8k_block(const float *x, bn_block_q8k *y) {
    float amax = 0.0f;
    for (int i = 0; i < BN_QK_K; i++) {
        amax = fmaxf(amax, fabsf(x[i]));
    }
    float max = 0.0f;
    if (amax > 0.0f) {
        for (int i = 0; i < BN_QK_K; i++) {
            if (fabsf(x[i]) == amax) {
                max = x[i];
                break;
            }
        }
    }
    y->d = 0.0f;
    for (int i = 0; i < BN_QK_K; i++) {
        y->qs[i] = 0;
    }
    for (int i = 0; i < BN_QK_K / 16; i++) {
        y->bsums[i] = 0;
    }
    if (amax != 0.0f) {
        float iscale = -127.0f / max;
        for (int i = 0; i < BN_QK_K; i++) {
            bn_i32 q = bn_nearest_int(iscale * x[i]);
            y->qs[i] = (bn_i8)(q < 127 ? q : 127);
        }
        for (int i = 0; i < BN_QK_K / 16; i++) {
            bn_i32 s = 0;
            for (int j = 0; j < 16; j++) {
                s += y->qs[16 * i + j];
            }
            y->bsums[i] = (bn_i16)s;
        }
        y->d = 1.0f / iscale;
    }
}

/* Q8_K blocks of `n_blocks` blocks of `x` (rows of whole blocks, back to back). */
BN_KERNEL bn_q8k_quantize(bn_u64 n_blocks, const float *x, bn_block_q8k *y) {
    BN_FOR_EACH(gid, n_blocks) { bn_q8k_block(x + gid * BN_QK_K, y + gid); }
}

/* bitnet.cpp's `quantize_row_i8_s` for `n_tok` tokens of `cols` values: quants, each token's
 * scale `s` and quant sum. */
BN_KERNEL bn_i8s_quantize(bn_u64 n_tok, const float *x, bn_u64 cols, bn_i8 *q, float *scales,
                          bn_i32 *sums) {
    BN_FOR_EACH(t, n_tok) {
        const float *xt = x + t * cols;
        bn_i8 *qt = q + t * cols;
        double max = 0.00001;
        for (bn_u64 i = 0; i < cols; i++) {
            double a = fabs((double)xt[i]);
            max = max > a ? max : a;
        }
        float s = (float)(127.0 / max);
        bn_i32 sum = 0;
        for (bn_u64 i = 0; i < cols; i++) {
            bn_i32 n = bn_nearest_int(xt[i] * s);
            n = n < -128 ? -128 : (n > 127 ? 127 : n);
            sum += n;
            qt[i] = (bn_i8)n;
        }
        scales[t] = s;
        sums[t] = sum;
    }
}

/* ---- Ternary products -------------------------------------------------------------------- */

/* TQ2_0 block's weight at element `e` plus one (0, 1 or 2). */
BN_DEV bn_i32 bn_tq2_0_code(const bn_u8 *qs, bn_u32 e) {
    return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

/* One trit of a TQ1_0 byte plus one: `((uint8)(q · 3^l) · 3) >> 8`. */
BN_DEV bn_i32 bn_trit(bn_u8 q, bn_u8 pow3) {
    return (bn_i32)((((bn_u32)(bn_u8)(q * pow3)) * 3u) >> 8);
}

/* TQ1_0 block's weight at element `e` plus one. */
BN_DEV bn_i32 bn_tq1_0_code(const bn_u8 *x, bn_u32 e) {
    const bn_u8 pow3[5] = {1, 3, 9, 27, 81};
    if (e < 160) {
        return bn_trit(x[e % 32], pow3[e / 32]);
    }
    if (e < 240) {
        return bn_trit(x[32 + (e - 160) % 16], pow3[(e - 160) / 16]);
    }
    return bn_trit(x[48 + (e - 240) % 4], pow3[(e - 240) / 4]);
}

/* The 8 exact integer lanes of one ternary block against one Q8_K block: lane `k` sums
 * `code·q` over the elements whose index modulo 32 is in `4k..4k+4`, less the activations' sum
 * over elements `32k..32k+32` (the weights' `+1`). */
BN_DEV void bn_tq_block_lanes(const bn_u8 *x, const bn_block_q8k *y, int tq1, bn_i32 *lanes) {
    for (int k = 0; k < 8; k++) {
        lanes[k] = 0;
    }
    for (bn_u32 e = 0; e < BN_QK_K; e++) {
        bn_i32 c = tq1 ? bn_tq1_0_code(x, e) : bn_tq2_0_code(x, e);
        lanes[(e % 32) / 4] += c * (bn_i32)y->qs[e];
    }
    for (int k = 0; k < 8; k++) {
        lanes[k] -= (bn_i32)y->bsums[2 * k] + (bn_i32)y->bsums[2 * k + 1];
    }
}

/* One ternary row of `nb` blocks against one token's Q8_K blocks (scalar.rs, ternary_dot). */
BN_DEV float bn_tq_dot(const bn_u8 *row, const bn_block_q8k *a, bn_u64 nb, int tq1) {
    int bs = tq1 ? BN_TQ1_0_BYTES : BN_TQ2_0_BYTES;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (bn_u64 b = 0; b < nb; b++) {
        const bn_u8 *x = row + b * bs;
        bn_i32 lanes[8];
        bn_tq_block_lanes(x, a + b, tq1, lanes);
        float dw = bn_f16_to_f32(bn_le16(x + bs - 2));
        float d = a[b].d * dw;
        for (int k = 0; k < 8; k++) {
            acc[k] = fmaf((float)lanes[k], d, acc[k]);
        }
    }
    return bn_hsum8(acc);
}

/* `out[t·rows + r]` = row `r` of a TQ2_0 (`tq1` = 0) or TQ1_0 matrix (`rows` rows of `nb`
 * blocks) against token `t`'s Q8_K blocks, for `n = n_tok·rows` items. */
BN_KERNEL bn_tq_matmul(bn_u64 n, const bn_u8 *w, const bn_block_q8k *a, bn_u64 rows, bn_u64 nb,
                       bn_i32 tq1, float *out) {
    BN_FOR_EACH(gid, n) {
        bn_u64 t = gid / rows, r = gid % rows;
        bn_u64 rb = nb * (tq1 ? BN_TQ1_0_BYTES : BN_TQ2_0_BYTES);
        out[gid] = bn_tq_dot(w + r * rb, a + t * nb, nb, tq1);
    }
}

/* The integer lanes of every (token, row, block): `lanes[(gid)·8 + k]` with
 * `gid = (t·rows + r)·nb + b`, for `n = n_tok·rows·nb` items. */
BN_KERNEL bn_tq_lanes(bn_u64 n, const bn_u8 *w, const bn_block_q8k *a, bn_u64 rows, bn_u64 nb,
                      bn_i32 tq1, bn_i32 *lanes) {
    BN_FOR_EACH(gid, n) {
        bn_u64 b = gid % nb, r = (gid / nb) % rows, t = gid / (nb * rows);
        bn_u64 bs = tq1 ? BN_TQ1_0_BYTES : BN_TQ2_0_BYTES;
        bn_tq_block_lanes(w + (r * nb + b) * bs, a + t * nb + b, tq1, lanes + gid * 8);
    }
}

/* I2_S weight at element `e` of a row plus one. */
BN_DEV bn_i32 bn_i2s_code(const bn_u8 *row, bn_u64 e) {
    return (row[32 * (e / BN_QK_I2_S) + e % 32] >> (6 - 2 * ((e % BN_QK_I2_S) / 32))) & 3;
}

/* `Σ code·q` over one I2_S row of `cols` values, exact. */
BN_DEV bn_i32 bn_i2s_dot(const bn_u8 *row, const bn_i8 *q, bn_u64 cols) {
    bn_i32 s = 0;
    for (bn_u64 e = 0; e < cols; e++) {
        s += bn_i2s_code(row, e) * (bn_i32)q[e];
    }
    return s;
}

/* bitnet.cpp's finish: `((float)Σcode·q − (float)Σq) / s · scale`, each step in f32. */
BN_DEV float bn_i2s_finish(bn_i32 dot, bn_i32 sum, float s, float w_scale) {
    return ((float)dot - (float)sum) / s * w_scale;
}

/* `out[t·rows + r]`: row `r` of an I2_S matrix (`cols/4` bytes per row; its scale `w_scale`)
 * against token `t`'s int8 activations, for `n = n_tok·rows` items; `dots` (when not null)
 * receives the exact integer parts. */
BN_KERNEL bn_i2s_matmul(bn_u64 n, const bn_u8 *w, const bn_i8 *q, const float *scales,
                        const bn_i32 *sums, bn_u64 rows, bn_u64 cols, float w_scale, float *out,
                        bn_i32 *dots) {
    BN_FOR_EACH(gid, n) {
        bn_u64 t = gid / rows, r = gid % rows;
        bn_i32 d = bn_i2s_dot(w + r * (cols / 4), q + t * cols, cols);
        if (dots) {
            dots[gid] = d;
        }
        out[gid] = bn_i2s_finish(d, sums[t], scales[t], w_scale);
    }
}

/* ---- Float products ---------------------------------------------------------------------- */

/* Weight `i` of an F16 (`f16` = 1) or F32 row in file bytes. */
BN_DEV float bn_w_at(const bn_u8 *row, bn_u64 i, int f16) {
    return f16 ? bn_f16_to_f32(bn_le16(row + 2 * i)) : bn_le_f32(row + 4 * i);
}

/* tinyBLAS's order: one 8-lane FMA accumulator, a ragged tail as a zero-padded step, `hsum8`. */
BN_DEV float bn_dot_lanes8(const bn_u8 *row, const float *a, bn_u64 n, int f16) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (bn_u64 i = 0; i < n; i += 8) {
        for (int l = 0; l < 8; l++) {
            float x = 0.0f, y = 0.0f;
            if (i + l < n) {
                x = bn_w_at(row, i + l, f16);
                y = a[i + l];
            }
            acc[l] = fmaf(x, y, acc[l]);
        }
    }
    return bn_hsum8(acc);
}

/* `ggml_vec_dot_f16`/`_f32`'s order: four 8-lane FMA accumulators over steps of 32, reduced
 * `(a0+a2)+(a1+a3)` and `hadd8`; the tail's f32 products added one by one in f64 (F16) or f32
 * (the last `n % 4` of those fused). */
BN_DEV float bn_dot_steps32(const bn_u8 *row, const float *a, bn_u64 n, int f16) {
    bn_u64 np = n & ~(bn_u64)31;
    float acc[4][8];
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < 8; l++) {
            acc[j][l] = 0.0f;
        }
    }
    for (bn_u64 i = 0; i < np; i += 32) {
        for (int j = 0; j < 4; j++) {
            for (int l = 0; l < 8; l++) {
                bn_u64 e = i + 8 * j + l;
                acc[j][l] = fmaf(bn_w_at(row, e, f16), a[e], acc[j][l]);
            }
        }
    }
    float r[8];
    for (int l = 0; l < 8; l++) {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    float head = bn_hadd8(r);
    if (f16) {
        double sum = (double)head;
        for (bn_u64 e = np; e < n; e++) {
            sum += (double)(bn_w_at(row, e, f16) * a[e]);
        }
        return (float)sum;
    }
    /* ggml_math.rs, f32_tail: the last (n - np) % 4 products fused, as GCC compiles ggml's loop. */
    bn_u64 fused = n - (n - np) % 4;
    float sum = head;
    for (bn_u64 e = np; e < n; e++) {
        if (e < fused) {
            sum += bn_w_at(row, e, f16) * a[e];
        } else {
            sum = fmaf(bn_w_at(row, e, f16), a[e], sum);
        }
    }
    return sum;
}

/* `out[t·rows + r]`: row `r` of an F16/F32 matrix against token `t`'s activations (`cols`
 * each; F16-rounded for F16 weights), in tinyBLAS's order when `lanes8`, for `n = n_tok·rows`. */
BN_KERNEL bn_float_matmul(bn_u64 n, const bn_u8 *w, const float *a, bn_u64 rows, bn_u64 cols,
                          bn_i32 f16, bn_i32 lanes8, float *out) {
    BN_FOR_EACH(gid, n) {
        bn_u64 t = gid / rows, r = gid % rows;
        const bn_u8 *row = w + r * cols * (f16 ? 2 : 4);
        out[gid] = lanes8 ? bn_dot_lanes8(row, a + t * cols, cols, f16)
                          : bn_dot_steps32(row, a + t * cols, cols, f16);
    }
}

/* Activations rounded to F16 and back, as ggml converts them for F16 weights. */
BN_KERNEL bn_round_f16(bn_u64 n, const float *x, float *out) {
    BN_FOR_EACH(gid, n) { out[gid] = bn_f16_to_f32(bn_f32_to_f16(x[gid])); }
}

/* ---- Embedding, norms, RoPE -------------------------------------------------------------- */

/* `out[t·e + i]` = element `i` of embedding row `tokens[t]` (F16 or F32 rows of `e`). */
BN_KERNEL bn_embed(bn_u64 n, const bn_u32 *tokens, const bn_u8 *emb, bn_u64 e, bn_i32 f16,
                   float *out) {
    BN_FOR_EACH(gid, n) {
        bn_u64 t = gid / e, i = gid % e;
        out[gid] = bn_w_at(emb + (bn_u64)tokens[t] * e * (f16 ? 2 : 4), i, f16);
    }
}

/* Each row's RMSNorm scale: `1/sqrtf((float)(Σx²/n) + eps)`, `Σ` in f64 of f32 squares. */
BN_KERNEL bn_rms_scale(bn_u64 n_rows, const float *x, bn_u64 width, float eps, float *scale) {
    BN_FOR_EACH(row, n_rows) {
        const float *xr = x + row * width;
        double sum = 0.0;
        for (bn_u64 i = 0; i < width; i++) {
            sum += (double)(xr[i] * xr[i]);
        }
        float mean = (float)(sum / (double)width);
        scale[row] = 1.0f / sqrtf(mean + eps);
    }
}

/* `out = (x · scale[row]) · w`, element by element. */
BN_KERNEL bn_rms_apply(bn_u64 n, const float *x, const float *w, bn_u64 width,
                       const float *scale, float *out) {
    BN_FOR_EACH(gid, n) { out[gid] = (x[gid] * scale[gid / width]) * w[gid % width]; }
}

/* NEOX RoPE: `x` holds `n_tok` tokens of `n_heads` heads of `hd` values; pair `(i, i + half)` of
 * every head of token `t` is rotated by `cs[2(t·half + i)]` (cos) and `[.. + 1]` (sin), as ggml's
 * rotate_pairs contracts it. `n = n_tok·n_heads·half`. */
BN_KERNEL bn_rope_neox(bn_u64 n, float *x, bn_u64 n_heads, bn_u64 hd, bn_u64 half,
                       const float *cs) {
    BN_FOR_EACH(gid, n) {
        bn_u64 i = gid % half, head = gid / half, t = head / n_heads;
        float *h = x + head * hd;
        float c = cs[2 * (t * half + i)], s = cs[2 * (t * half + i) + 1];
        float a = h[i], b = h[i + half];
        h[i] = fmaf(a, c, -(b * s));
        h[i + half] = fmaf(a, s, b * c);
    }
}

/* ---- ggml's exponential, softmax, SiLU (ggml_math.rs) ------------------------------------ */

/* One lane of `ggml_v_expf` (AVX2 + FMA). */
BN_DEV float bn_expf_lane(float x) {
    const float r = bn_u2f(0x4b400000u);
    float z = fmaf(x, bn_u2f(0x3fb8aa3bu), r);
    float n = z - r;
    float b = fmaf(-n, bn_u2f(0x35bfbe8eu), fmaf(-n, bn_u2f(0x3f317200u), x));
    bn_u32 e = bn_f2u(z) << 23;
    float k = bn_u2f(e + bn_f2u(1.0f));
    int c = fabsf(n) > 126.0f;
    float u = b * b;
    float j = fmaf(fmaf(fmaf(bn_u2f(0x3c072010u), b, bn_u2f(0x3d2b9f17u)), u,
                        fmaf(bn_u2f(0x3e2aaf33u), b, bn_u2f(0x3efffedbu))),
                   u, bn_u2f(0x3f7ffff6u) * b);
    if (!c) {
        return fmaf(j, k, k);
    }
    bn_u32 g = n <= 0.0f ? 0x82000000u : 0u;
    float s1 = bn_u2f(g + 0x7f000000u);
    float s2 = bn_u2f(e - g);
    if (fabsf(n) > 192.0f) {
        return s1 * s1;
    }
    return fmaf(s2, j, s2) * s1;
}

/* One lane of `ggml_v_silu`. */
BN_DEV float bn_silu_lane(float x) { return x / (1.0f + bn_expf_lane(0.0f - x)); }

/* `ggml_silu_f32` (the math library's `expf`; CUDA's on the GPU). */
BN_DEV float bn_silu_tail(float x) { return x / (1.0f + expf(-x)); }

/* Softmax of `p[0..n]` in place (ggml_math.rs, softmax_body). */
BN_DEV void bn_softmax_row(float *p, bn_u64 n) {
    float max = bn_u2f(0xff800000u); /* -inf */
    for (bn_u64 i = 0; i < n; i++) {
        max = max > p[i] ? max : p[i];
    }
    double sum = 0.0;
    for (bn_u64 i = 0; i < n; i += 8) {
        float vals[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int l = 0; l < 8; l++) {
            if (i + l < n) {
                vals[l] = bn_expf_lane(p[i + l] - max);
                p[i + l] = vals[l];
            }
        }
        sum += (double)bn_hsum8(vals);
    }
    float inv = (float)(1.0 / sum);
    for (bn_u64 i = 0; i < n; i++) {
        p[i] *= inv;
    }
}

/* `ggml_vec_swiglu_f32` over rows of `width`: element `gid` at column `gid % width` takes the
 * vector SiLU inside the row's whole groups of 8, the scalar one past them. */
BN_KERNEL bn_swiglu(bn_u64 n, const float *gate, const float *up, bn_u64 width, float *out) {
    BN_FOR_EACH(gid, n) {
        bn_u64 col = gid % width;
        float s = col < (width & ~(bn_u64)7) ? bn_silu_lane(gate[gid]) : bn_silu_tail(gate[gid]);
        out[gid] = s * up[gid];
    }
}

/* bitnet.cpp's ReLU² gate: `relu(g)² · up`, each step rounded to f32. */
BN_KERNEL bn_relu2_mul(bn_u64 n, const float *gate, const float *up, float *out) {
    BN_FOR_EACH(gid, n) {
        float g = gate[gid];
        float r = g > 0.0f ? g : 0.0f;
        out[gid] = (r * r) * up[gid];
    }
}

/* `x += y` (ggml_add). */
BN_KERNEL bn_add(bn_u64 n, float *x, const float *y) {
    BN_FOR_EACH(gid, n) { x[gid] += y[gid]; }
}

/* `x *= s` (a projection's `.scale`). */
BN_KERNEL bn_scale(bn_u64 n, float *x, float s) {
    BN_FOR_EACH(gid, n) { x[gid] *= s; }
}

/* ---- Attention (attention.rs) ------------------------------------------------------------ */
/* The KV cache is position-major: key `(pos, kv head g)` at `kc[(pos·n_kv_heads + g)·hd]`. Token
 * `i` of the pass sits at position `p0 + i` and sees positions `0..=p0+i`. Scores and
 * probabilities are `[n_tok][n_heads][n_kv]` with `n_kv = p0 + n_tok`. */

/* `ggml_vec_dot_f32`'s order over f32 arrays (ggml_math.rs, dot_steps32). */
BN_DEV float bn_dot_steps32_f32(const float *x, const float *y, bn_u64 n) {
    bn_u64 np = n & ~(bn_u64)31;
    float acc[4][8];
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < 8; l++) {
            acc[j][l] = 0.0f;
        }
    }
    for (bn_u64 i = 0; i < np; i += 32) {
        for (int j = 0; j < 4; j++) {
            for (int l = 0; l < 8; l++) {
                acc[j][l] = fmaf(x[i + 8 * j + l], y[i + 8 * j + l], acc[j][l]);
            }
        }
    }
    float r[8];
    for (int l = 0; l < 8; l++) {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    float sum = bn_hadd8(r);
    bn_u64 fused = n - (n - np) % 4; /* ggml_math.rs, f32_tail */
    for (bn_u64 i = np; i < n; i++) {
        if (i < fused) {
            sum += x[i] * y[i];
        } else {
            sum = fmaf(x[i], y[i], sum);
        }
    }
    return sum;
}

/* tinyBLAS's order over f32 arrays (ggml_math.rs, dot_lanes8). */
BN_DEV float bn_dot_lanes8_f32(const float *x, const float *y, bn_u64 n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (bn_u64 i = 0; i < n; i++) {
        acc[i % 8] = fmaf(x[i], y[i], acc[i % 8]);
    }
    return bn_hsum8(acc);
}

/* `p[(i·n_heads + h)·n_kv + j]` = (key `j` · query `(i, h)`) · scale for `j ≤ p0 + i`, else 0;
 * `n = n_tok·n_heads·n_kv`. */
BN_KERNEL bn_attn_scores(bn_u64 n, const float *q, const float *kc, float *p, bn_u64 p0,
                         bn_u64 n_heads, bn_u64 n_kv_heads, bn_u64 hd, bn_u64 n_kv, float scale,
                         bn_i32 kq_lanes8) {
    BN_FOR_EACH(gid, n) {
        bn_u64 j = gid % n_kv, hh = (gid / n_kv) % n_heads, i = gid / (n_kv * n_heads);
        bn_u64 g = hh / (n_heads / n_kv_heads);
        if (j <= p0 + i) {
            const float *key = kc + (j * n_kv_heads + g) * hd;
            const float *qv = q + (i * n_heads + hh) * hd;
            float dot = kq_lanes8 ? bn_dot_lanes8_f32(key, qv, hd) : bn_dot_steps32_f32(key, qv, hd);
            p[gid] = dot * scale;
        } else {
            p[gid] = 0.0f;
        }
    }
}

/* The softmax of each (token, head) row over its visible positions; `n = n_tok·n_heads`. */
BN_KERNEL bn_attn_softmax(bn_u64 n, float *p, bn_u64 p0, bn_u64 n_heads, bn_u64 n_kv) {
    BN_FOR_EACH(gid, n) {
        bn_u64 i = gid / n_heads;
        bn_softmax_row(p + gid * n_kv, p0 + i + 1);
    }
}

/* `out[i·n_heads·hd + h·hd + d]` = Σ_j v[j][d]·p[j] over the visible positions, in lanes by
 * position modulo 8 (tinyBLAS, `kqv_lanes8`) or 32 (`ggml_vec_dot_f32`); `n = n_tok·n_heads·hd`. */
BN_KERNEL bn_attn_kqv(bn_u64 n, const float *p, const float *vc, float *out, bn_u64 p0,
                      bn_u64 n_heads, bn_u64 n_kv_heads, bn_u64 hd, bn_u64 n_kv,
                      bn_i32 kqv_lanes8) {
    BN_FOR_EACH(gid, n) {
        bn_u64 d = gid % hd, hh = (gid / hd) % n_heads, i = gid / (hd * n_heads);
        bn_u64 g = hh / (n_heads / n_kv_heads);
        bn_u64 limit = p0 + i + 1;
        const float *pr = p + (i * n_heads + hh) * n_kv;
        int lanes = kqv_lanes8 ? 8 : 32;
        float acc[32];
        for (int l = 0; l < 32; l++) {
            acc[l] = 0.0f;
        }
        for (bn_u64 j = 0; j < limit; j++) {
            float v = vc[(j * n_kv_heads + g) * hd + d];
            acc[j % lanes] = fmaf(v, pr[j], acc[j % lanes]);
        }
        if (kqv_lanes8) {
            out[gid] = bn_hsum8(acc);
        } else {
            float r[8];
            for (int l = 0; l < 8; l++) {
                r[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
            }
            out[gid] = bn_hadd8(r);
        }
    }
}

/* ---- Bandwidth ----------------------------------------------------------------------------- */

/* Each work item sums the words `gid, gid + stride, ...` of `buf` (`n` words) into
 * `partial[gid]`, `stride` being the launch's thread count (1 on the host: one item reads all). */
BN_KERNEL bn_read_sum(bn_u64 n, const bn_u64 *buf, bn_u64 *partial) {
    bn_u64 stride = (bn_u64)gridDim.x * blockDim.x;
    BN_FOR_EACH(gid, stride) {
        bn_u64 acc = 0;
        for (bn_u64 i = gid; i < n; i += stride) {
            acc += buf[i];
        }
        partial[gid] = acc;
    }
}

#endif
