#!/usr/bin/env python3
"""numpy-ref: a second, independent reference implementation of BitNet b1.58 inference in numpy.

It speaks the harness's external-reference protocol (harness/src/reference/mod.rs) and writes
the trace directory that `harness ref-trace` (llama.cpp) writes, file for file:

  numpy_ref.py MODEL.gguf --tokens 1,2,3 --generate N --threads T [--points GLOB]...
               [--ubatch U] [--nudge-embeddings] -o OUTDIR
  numpy_ref.py --dequantize MODEL.gguf TENSOR OUT.npy     (a tensor as f32 [rows, cols])

Written from the specification, not from the engine: the graph of llama.cpp's `bitnet`
architecture (src/models/bitnet.cpp; build_norm, build_qkv, build_attn, build_ffn), with
bitnet.cpp's `bitnet-b1.58` (alias `bitnet-25`) FFN, relu(gate)²·up; the block layouts of
ggml-quants.c (TQ1_0, TQ2_0) and bitnet.cpp (I2_S); and the operand conversions of ggml's CPU
backend, emulated exactly:

- a TQ1_0/TQ2_0 product quantizes each activation row to Q8_K (`quantize_row_q8_K_ref`: per 256
  values the signed value of largest magnitude, iscale = -127/max in f32, nearest_int of the f32
  product, at most 127, d = 1/iscale) and sums integer block dots times d_weight·d_q8;
- an I2_S product quantizes each row to int8 as `quantize_row_i8_s` (s = (float)(127/max|x|),
  max at least 1e-5) and finishes as bitnet.cpp's mul_mat does, in f32:
  ((float)Σcode·q − Σq) / s · scale;
- an F16 weight (the F16 token embedding as output matrix) sees its f32 operand rounded to f16;
- the KV cache is F32, as the harness configures llama.cpp (`type_k = type_v = F32`).

Everything else is computed in float64 and rounded to f32 once per ggml op that materialises an
f32 tensor (rms_norm, mul, mul_mat, rope, soft_max, add, swiglu / relu+sqr+mul), so the only
differences from llama.cpp are its own f32 rounding inside those ops and its summation orders.

Errors on bad input are one line on stderr (`numpy-ref: error: ...`, exit 1); usage errors
exit 2. Files are written under temporary names in OUTDIR and renamed into place.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

try:
    import numpy as np
except ImportError:  # pragma: no cover - the wrapper checks this first
    sys.stderr.write(
        "numpy-ref: error: the `numpy` Python package is missing (pip install numpy)\n"
    )
    sys.exit(2)

# The trace module beside this file hashes with blake3: say what is missing before importing it.
if importlib.util.find_spec("blake3") is None:  # pragma: no cover - the wrapper checks this first
    sys.stderr.write(
        "numpy-ref: error: the `blake3` Python package is missing (pip install blake3)\n"
    )
    sys.exit(2)


# The GGUF reader beside this file, imported without leaving a __pycache__ in the checkout.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_ref_gguf import (  # noqa: E402
    GGML_TYPES,
    QK_K,
    ROW_CHUNK,
    GgufFile,
    RefError,
    UsageError,
)
from numpy_ref_trace import (  # noqa: E402
    PointFilter,
    greedy,
    merge_chunks,
    npy_bytes,
    point_of,
    trace_record,
    write_atomic,
)


# --------------------------------------------------------------------------------------------
# Weights: dequantization and the products as ggml's CPU backend computes them
# --------------------------------------------------------------------------------------------


def f16_to_f64(u16):
    return u16.view("<f2").astype(np.float64)


def tq2_0_trits(data, rows, cols):
    """TQ2_0 (ggml-quants.c dequantize_row_tq2_0): per block of 256, qs[64] then f16 d; in each
    32-byte half j, element j·128 + l·32 + m is bits 2l..2l+1 of qs[j·32+m], minus 1.
    Returns (trits int8 [rows, cols], d f64 [rows, cols/256])."""
    nb = cols // QK_K
    b = np.frombuffer(data, dtype=np.uint8).reshape(rows, nb, 66)
    qs = b[:, :, :64].reshape(rows, nb, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    q = (qs >> shifts) & 3  # [rows, nb, 2 halves, 4 shifts, 32]
    trits = q.reshape(rows, cols).astype(np.int8) - 1
    d = f16_to_f64(np.ascontiguousarray(b[:, :, 64:66]).view("<u2").reshape(rows, nb))
    return trits, d


def tq1_0_trits(data, rows, cols):
    """TQ1_0 (ggml-quants.c dequantize_row_tq1_0): per block of 256, qs[48], qh[4], f16 d.
    Byte value q holds base-3 digits; digit n is ((uint8)(q·3^n)·3) >> 8. The first 32 bytes of
    qs give 5×32 elements (digit-major), the next 16 give 5×16, qh gives 4×4 (digit-major)."""
    nb = cols // QK_K
    b = np.frombuffer(data, dtype=np.uint8).reshape(rows, nb, 54)
    pow3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)

    def digits(bytes_, n):
        # bytes_ [rows, nb, k] -> [rows, nb, n, k]: digit n of every byte.
        q = (bytes_[:, :, None, :].astype(np.uint16) * pow3[:n, None]) & 0xFF
        return ((q * 3) >> 8).astype(np.int8)

    parts = [
        digits(b[:, :, 0:32], 5).reshape(rows, nb, 160),
        digits(b[:, :, 32:48], 5).reshape(rows, nb, 80),
        digits(b[:, :, 48:52], 4).reshape(rows, nb, 16),
    ]
    trits = np.concatenate(parts, axis=2).reshape(rows, cols) - 1
    d = f16_to_f64(np.ascontiguousarray(b[:, :, 52:54]).view("<u2").reshape(rows, nb))
    return trits.astype(np.int8), d


def i2_s_codes(data, rows, cols):
    """I2_S (bitnet.cpp, x86 layout): blocks of 128 weights in 32 bytes, byte j holding weights
    j, 32+j, 64+j, 96+j in bits 7:6, 5:4, 3:2, 1:0; code 0 = -1, 1 = 0, 2 = +1. One f32 scale
    at the start of the 32-byte tail after every code.
    Returns (codes int8 [rows, cols], scale f32)."""
    n = rows * cols // 4
    b = np.frombuffer(data[:n], dtype=np.uint8).reshape(rows, cols // 128, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = ((b >> shifts) & 3).reshape(rows, cols).astype(np.int8)
    scale = np.frombuffer(data[n : n + 4], dtype="<f4")[0]
    return codes, np.float32(scale)


def quantize_row_q8_K(x):
    """ggml's quantize_row_q8_K_ref on rows of `x` (f32 [n, k], k a multiple of 256).
    Returns (q as f64 integers [n, k/256, 256], d f64 [n, k/256])."""
    n, k = x.shape
    xb = x.astype(np.float32).reshape(n, k // QK_K, QK_K)
    ax = np.abs(xb)
    # The first element of largest magnitude (`ax > amax` keeps the first), with its sign.
    idx = np.argmax(ax, axis=2)
    mx = np.take_along_axis(xb, idx[:, :, None], axis=2)[:, :, 0]
    zero = mx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = (np.float32(-127.0) / np.where(zero, np.float32(1), mx)).astype(np.float32)
        # nearest_int(iscale*x): the f32 product, rounded half to even (the 1.5·2^23 trick).
        prod = (iscale[:, :, None] * xb).astype(np.float32)
        q = np.minimum(np.rint(prod), 127.0)
        d = (np.float32(1.0) / iscale).astype(np.float32)
    q = np.where(zero[:, :, None], 0.0, q).astype(np.float64)
    d = np.where(zero, np.float32(0), d).astype(np.float64)
    return q, d


def quantize_row_i8_s(x):
    """bitnet.cpp's quantize_row_i8_s on rows of `x` (f32 [n, k]): max|x| in double, at least
    1e-5; s = (float)(127/max); q = nearest(f32(x·s)) (ties to even) clamped to [-128, 127].
    Returns (q f64 integers [n, k], s f32 [n], Σq f64 [n])."""
    x = x.astype(np.float32)
    amax = np.maximum(np.abs(x.astype(np.float64)).max(axis=1), 1e-5)
    s = (127.0 / amax).astype(np.float32)
    q = np.clip(np.rint((x * s[:, None]).astype(np.float32)), -128, 127).astype(np.float64)
    return q, s, q.sum(axis=1)


class Weight:
    """One weight matrix (`rows` outputs × `cols` inputs) and how to multiply activations by it."""

    def __init__(self, gguf, t):
        self.name = t.name
        self.ty = t.type_name
        self.rows, self.cols = t.rows, t.cols
        data = gguf.data(t)
        if self.ty == "F32":
            self.w = np.frombuffer(data, dtype="<f4").reshape(self.rows, self.cols)
        elif self.ty == "F16":
            self.w = np.frombuffer(data, dtype="<f2").reshape(self.rows, self.cols)
        elif self.ty == "TQ2_0":
            self.trits, self.d = tq2_0_trits(data, self.rows, self.cols)
        elif self.ty == "TQ1_0":
            self.trits, self.d = tq1_0_trits(data, self.rows, self.cols)
        elif self.ty == "I2_S":
            self.codes, self.scale = i2_s_codes(data, self.rows, self.cols)
        else:  # pragma: no cover - GgufFile.data refuses the others
            raise RefError(f"tensor `{t.name}`: unsupported type {self.ty}")

    def dequantize(self):
        """The weights as f32 [rows, cols] (what ggml's dequantize_row_* gives)."""
        if self.ty in ("F32", "F16"):
            return self.w.astype(np.float32)
        if self.ty in ("TQ2_0", "TQ1_0"):
            d = np.repeat(self.d, QK_K, axis=1)
            return (self.trits.astype(np.float64) * d).astype(np.float32)
        return ((self.codes.astype(np.float32) - 1) * self.scale).astype(np.float32)

    def rows_f32(self, ids):
        """Rows `ids` as f32 (get_rows: F32 and F16 convert exactly)."""
        if self.ty not in ("F32", "F16"):
            raise RefError(f"tensor `{self.name}`: get_rows of {self.ty} is not supported")
        return self.w[ids].astype(np.float32)

    def matmul(self, x):
        """ggml_mul_mat(W, x) for x f32 [n, cols]: f32 [n, rows]."""
        if self.ty in ("F32", "F16", "I2_S") and self.rows > ROW_CHUNK:
            # In slices of rows, so no f64 copy of a whole large matrix is made.
            starts = range(0, self.rows, ROW_CHUNK)
            parts = [self._matmul(x, r, min(r + ROW_CHUNK, self.rows)) for r in starts]
            return np.concatenate(parts, axis=1)
        return self._matmul(x, 0, self.rows)

    def _matmul(self, x, r0, r1):
        """Output rows r0..r1 of ggml_mul_mat(W, x)."""
        if self.ty == "F32":
            y = x.astype(np.float64) @ self.w[r0:r1].astype(np.float64).T
        elif self.ty == "F16":
            # ggml converts the f32 operand to f16 (vec_dot_type F16) before the dot.
            xh = x.astype(np.float16).astype(np.float64)
            y = xh @ self.w[r0:r1].astype(np.float64).T
        elif self.ty in ("TQ2_0", "TQ1_0"):
            q, dq = quantize_row_q8_K(x)  # [n, nb, 256], [n, nb]
            y = np.zeros((x.shape[0], r1 - r0), dtype=np.float64)
            for b in range(self.cols // QK_K):
                # Integer block dot products (exact in f64), times d_q8 · d_weight.
                t = self.trits[r0:r1, b * QK_K : (b + 1) * QK_K].astype(np.float64)
                sumi = q[:, b, :] @ t.T
                y += sumi * (dq[:, b][:, None] * self.d[r0:r1, b][None, :])
        else:  # I2_S
            q, s, qsum = quantize_row_i8_s(x)
            dot = q @ self.codes[r0:r1].astype(np.float64).T  # Σ code·q, exact
            # bitnet.cpp: tmp = (float)sumi; tmp = (tmp - act_sum) / act_scale * scale (f32).
            v = dot.astype(np.float32) - qsum.astype(np.float32)[:, None]
            v = (v / s[:, None]).astype(np.float32)
            return (v * self.scale).astype(np.float32)
        return y.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

ARCHS = {"bitnet": "silu", "bitnet-b1.58": "relu2", "bitnet-25": "relu2"}
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


class Model:
    def __init__(self, path):
        g = GgufFile(path)
        self.gguf = g
        arch = g.kv.get("general.architecture")
        if arch is None:
            raise RefError(f"`{path}`: metadata `general.architecture` is missing")
        if arch not in ARCHS:
            raise RefError(
                f"`{path}`: architecture `{arch}` (general.architecture) is not supported; "
                "numpy-ref runs `bitnet`, `bitnet-b1.58` and `bitnet-25`"
            )
        self.arch, self.act = arch, ARCHS[arch]

        def key(k, default=None, kind=int):
            full = f"{arch}.{k}"
            v = g.kv.get(full, default)
            if v is None:
                raise RefError(f"`{path}`: metadata `{full}` is missing")
            bad = f"`{path}`: metadata `{full}` is"
            if isinstance(v, (list, np.ndarray, str)):
                raise RefError(f"{bad} a {type(v).__name__}, expected a number")
            if kind is int:
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise RefError(f"{bad} {v!r}, expected a positive integer")
            else:
                v = float(v)
                if not np.isfinite(v) or v < 0:
                    raise RefError(f"{bad} {v!r}, expected a finite number ≥ 0")
            return v

        self.n_layer = key("block_count")
        self.n_embd = key("embedding_length")
        self.n_ff = key("feed_forward_length")
        self.n_head = key("attention.head_count")
        self.n_head_kv = key("attention.head_count_kv", self.n_head)
        self.n_ctx_train = key("context_length")
        self.eps = np.float32(key("attention.layer_norm_rms_epsilon", kind=float))
        self.rope_base = np.float32(key("rope.freq_base", 10000.0, kind=float))
        if self.n_embd % self.n_head:
            raise RefError(
                f"`{path}`: `{arch}.embedding_length` {self.n_embd} is not a multiple of "
                f"`{arch}.attention.head_count` {self.n_head}"
            )
        if self.n_head % self.n_head_kv:
            raise RefError(
                f"`{path}`: `{arch}.attention.head_count` {self.n_head} is not a multiple of "
                f"`{arch}.attention.head_count_kv` {self.n_head_kv}"
            )
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = key("rope.dimension_count", self.head_dim)
        if self.n_rot > self.head_dim or self.n_rot % 2:
            raise RefError(
                f"`{path}`: `{arch}.rope.dimension_count` {self.n_rot} must be even and at most "
                f"the head size {self.head_dim}"
            )
        emb = self._tensor("token_embd.weight", None)
        vocab = g.kv.get(f"{arch}.vocab_size")
        if vocab is None:
            toks = g.kv.get("tokenizer.ggml.tokens")
            vocab = len(toks) if toks is not None else emb.rows
        if not isinstance(vocab, int) or vocab <= 0:
            raise RefError(
                f"`{path}`: metadata `{arch}.vocab_size` is {vocab!r}, expected a positive integer"
            )
        self.n_vocab = vocab
        e, ekv = self.n_embd, self.n_head_kv * self.head_dim
        self.tok_embd = self._weight("token_embd.weight", [e, vocab], ("F32", "F16"))
        self.output_norm = self._vector("output_norm.weight", e)
        # bitnet.cpp's b1.58 graph may carry its own output matrix; llama.cpp's `bitnet` ties it.
        self.output = self.tok_embd
        if arch != "bitnet" and "output.weight" in g.tensors:
            self.output = self._weight("output.weight", [e, vocab], ("F32", "F16"))
        shapes = {
            "attn_q": [e, e], "attn_k": [e, ekv], "attn_v": [e, ekv], "attn_output": [e, e],
            "ffn_gate": [e, self.n_ff], "ffn_up": [e, self.n_ff], "ffn_down": [self.n_ff, e],
        }
        self.layers = []
        for il in range(self.n_layer):
            p = f"blk.{il}."
            layer = {
                "attn_norm": self._vector(p + "attn_norm.weight", e),
                "attn_sub_norm": self._vector(p + "attn_sub_norm.weight", e),
                "ffn_norm": self._vector(p + "ffn_norm.weight", e),
                "ffn_sub_norm": self._vector(p + "ffn_sub_norm.weight", self.n_ff),
            }
            for proj in PROJ:
                layer[proj] = self._weight(p + proj + ".weight", shapes[proj], None)
                sname = p + proj + ".scale"
                layer[proj + "_s"] = self._vector(sname, 1)[0] if sname in g.tensors else None
            self.layers.append(layer)

    def _tensor(self, name, dims):
        t = self.gguf.tensors.get(name)
        if t is None:
            raise RefError(f"`{self.gguf.path}`: tensor `{name}` is missing")
        if t.type_id not in GGML_TYPES:
            self.gguf.data(t)  # raises the unsupported-type error
        if dims is not None and list(t.dims) != list(dims):
            raise RefError(
                f"`{self.gguf.path}`: tensor `{name}` has shape {t.dims}, expected {dims}"
            )
        return t

    def _weight(self, name, dims, types):
        t = self._tensor(name, dims)
        if types is not None and t.type_name not in types:
            raise RefError(
                f"`{self.gguf.path}`: tensor `{name}` has type {t.type_name}; expected "
                + " or ".join(types)
            )
        return Weight(self.gguf, t)

    def _vector(self, name, n):
        t = self._tensor(name, [n])
        if t.type_name not in ("F32", "F16"):
            raise RefError(
                f"`{self.gguf.path}`: tensor `{name}` has type {t.type_name}; expected F32 or F16"
            )
        dt = "<f4" if t.type_name == "F32" else "<f2"
        return np.frombuffer(self.gguf.data(t), dtype=dt).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The forward pass: llama.cpp's `bitnet` graph, every op in f64, rounded to f32 per op
# --------------------------------------------------------------------------------------------


def f32(a):
    return np.asarray(a, dtype=np.float64).astype(np.float32)


def rms_norm(x, w, eps):
    """build_norm(LLM_NORM_RMS): ggml_rms_norm (x / sqrt(mean(x²) + eps)), then ggml_mul by w."""
    x64 = x.astype(np.float64)
    n = f32(x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + np.float64(eps)))
    return f32(n.astype(np.float64) * w.astype(np.float64))


def project(w, scale, x):
    """build_lora_mm: ggml_mul_mat, then ggml_mul by the optional `.scale` tensor."""
    y = w.matmul(x)
    if scale is not None:
        y = f32(y.astype(np.float64) * np.float64(scale))
    return y


def rope_neox(x, positions, n_rot, base):
    """ggml_rope_ext, NEOX mode, freq_scale 1, no YaRN: for i < n_rot/2 the pair (i, i + n_rot/2)
    rotates by theta = pos · base^(-2i/n_rot); dims past n_rot pass through. x: [n, heads, hd]."""
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    theta = positions.astype(np.float64)[:, None] * np.float64(base) ** (-2.0 * i / n_rot)[None, :]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    x64 = x.astype(np.float64)
    out = x64.copy()
    a, b = x64[:, :, :half], x64[:, :, half:n_rot]
    out[:, :, :half] = a * cos - b * sin
    out[:, :, half:n_rot] = a * sin + b * cos
    return f32(out)


class Session:
    """A model, its F32 KV cache, and the positions seen so far."""

    def __init__(self, model):
        self.m = model
        self.k_cache = [[] for _ in range(model.n_layer)]  # per layer: chunks [n, n_kv_head, hd]
        self.v_cache = [[] for _ in range(model.n_layer)]
        self.n_past = 0

    def forward(self, x, record):
        """Run input embeddings `x` (f32 [n, n_embd]) at positions n_past.. ; `record(name,
        values)` receives every trace point (positions-first). Returns the logits [n, n_vocab]."""
        m = self.m
        n, p0 = x.shape[0], self.n_past
        nh, nkv, hd = m.n_head, m.n_head_kv, m.head_dim
        positions = np.arange(p0, p0 + n)
        kq_scale = np.float32(1.0) / np.sqrt(np.float32(hd))  # 1.0f/sqrtf(float(n_embd_head))
        record("embeddings", x)
        for il, L in enumerate(m.layers):
            pre = f"blk.{il}."
            inp = x
            cur = rms_norm(inp, L["attn_norm"], m.eps)
            record(pre + "attn_norm", cur)
            q = project(L["attn_q"], L["attn_q_s"], cur).reshape(n, nh, hd)
            k = project(L["attn_k"], L["attn_k_s"], cur).reshape(n, nkv, hd)
            v = project(L["attn_v"], L["attn_v_s"], cur).reshape(n, nkv, hd)
            q = rope_neox(q, positions, m.n_rot, m.rope_base)
            k = rope_neox(k, positions, m.n_rot, m.rope_base)
            record(pre + "q", q)
            record(pre + "k", k)
            record(pre + "v", v)
            self.k_cache[il].append(k)
            self.v_cache[il].append(v)
            K = np.concatenate(self.k_cache[il]).astype(np.float64)  # [n_kv, nkv, hd]
            V = np.concatenate(self.v_cache[il]).astype(np.float64)
            n_kv = K.shape[0]
            # Head h reads KV head h // (n_head / n_head_kv).
            kv_of = np.arange(nh) // (nh // nkv)
            Kh, Vh = K[:, kv_of, :], V[:, kv_of, :]  # [n_kv, nh, hd]
            kq = f32(np.einsum("thd,jhd->thj", q.astype(np.float64), Kh))  # mul_mat(k, q)
            # soft_max_ext(kq, causal mask, scale): position j is visible to token t iff j ≤ p0+t.
            visible = np.arange(n_kv)[None, :] <= positions[:, None]  # [n, n_kv]
            z = kq.astype(np.float64) * np.float64(kq_scale)
            z = np.where(visible[:, None, :], z, -np.inf)
            z = z - z.max(axis=2, keepdims=True)
            e = np.exp(z)
            probs = f32(e / e.sum(axis=2, keepdims=True))  # [n, nh, n_kv]
            record(pre + "attn_probs", probs)
            kqv = f32(np.einsum("thj,jhd->thd", probs.astype(np.float64), Vh))  # mul_mat(v, kq)
            kqv = kqv.reshape(n, nh * hd)
            record(pre + "kqv_out", kqv)
            cur = rms_norm(kqv, L["attn_sub_norm"], m.eps)
            record(pre + "attn_sub_norm", cur)
            cur = project(L["attn_output"], L["attn_output_s"], cur)
            record(pre + "attn_out", cur)
            ffn_inp = f32(cur.astype(np.float64) + inp.astype(np.float64))
            record(pre + "ffn_inp", ffn_inp)
            cur = rms_norm(ffn_inp, L["ffn_norm"], m.eps)
            record(pre + "ffn_norm", cur)
            up = project(L["ffn_up"], L["ffn_up_s"], cur).astype(np.float64)
            gate = project(L["ffn_gate"], L["ffn_gate_s"], cur).astype(np.float64)
            if m.act == "silu":
                # swiglu: silu(gate) · up, one op.
                act = f32(gate / (1.0 + np.exp(-gate)) * up)
            else:
                # ggml_relu (g > 0 ? g : 0, so NaN and -0 give +0), ggml_sqr, ggml_mul by up.
                r = np.where(gate > 0.0, gate, 0.0)
                act = f32(f32(r * r).astype(np.float64) * up)
            record(pre + "ffn_act", act)
            cur = rms_norm(act, L["ffn_sub_norm"], m.eps)
            record(pre + "ffn_sub_norm", cur)
            cur = project(L["ffn_down"], L["ffn_down_s"], cur)
            record(pre + "ffn_down", cur)
            x = f32(cur.astype(np.float64) + ffn_inp.astype(np.float64))
            record(pre + "out", x)
        cur = rms_norm(x, m.output_norm, m.eps)
        record("output_norm", cur)
        logits = m.output.matmul(cur)
        record("logits", logits)
        self.n_past += n
        return logits


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_tokens(values):
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) >= 2**32:
                raise UsageError(f"`--tokens`: `{part}` is not a token id (a non-negative integer)")
            out.append(int(part))
    return out


def run(args):
    if args.threads < 1:
        raise UsageError("`--threads` must be at least 1")
    if args.ubatch is not None and args.ubatch < 1:
        raise UsageError("`--ubatch` must be at least 1")
    if args.generate < 0:
        raise UsageError("`--generate` must be at least 0")
    tokens = parse_tokens(args.tokens)
    if not tokens:
        raise UsageError("no input tokens (`--tokens`)")
    filt = PointFilter(args.points)
    model = Model(args.model)
    bad = [t for t in tokens if t >= model.n_vocab]
    if bad:
        raise RefError(
            f"token id {bad[0]} is outside the vocabulary of `{args.model}` "
            f"(n_vocab {model.n_vocab})"
        )
    out = args.output
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RefError(f"cannot create `{out}`: {e.strerror or e}")

    sess = Session(model)
    n = len(tokens)
    ubatch = args.ubatch or n
    lines, generated, prefill_logits = [], [], None
    prefill_seconds = decode_seconds = 0.0
    for step in range(max(args.generate, 1)):
        t0 = time.perf_counter()
        step_tokens = tokens if step == 0 else [generated[-1]]
        m, pos0 = len(step_tokens), sess.n_past
        acc = {}
        logits = []
        chunk = ubatch if step == 0 else 1
        for c0 in range(0, m, chunk):
            ids = np.array(step_tokens[c0 : c0 + chunk], dtype=np.int64)
            x = model.tok_embd.rows_f32(ids)
            if args.nudge_embeddings:
                x = np.nextafter(x, np.float32(np.inf)).astype(np.float32)

            def record(name, values):
                if filt.matches(name):
                    acc.setdefault(name, []).append(np.asarray(values, dtype=np.float32))

            logits.append(sess.forward(x, record))
        logits = np.concatenate(logits, axis=0)
        dt = time.perf_counter() - t0
        if step == 0:
            prefill_seconds, prefill_logits = dt, logits
        else:
            decode_seconds += dt
        positions = (pos0, pos0 + m)
        for name in sorted(acc, key=lambda k: point_of(k)[2]):
            values = merge_chunks(name, acc[name])
            write_atomic(out, f"{name}.step{step}.npy", npy_bytes(values))
            lines.append(trace_record(name, step, positions, values))
        if args.generate > 0:
            generated.append(greedy(logits[m - 1]))

    write_atomic(out, "logits.npy", npy_bytes(prefill_logits))
    write_atomic(out, "generated.json", json.dumps(generated, separators=(",", ":")).encode())
    build = {
        "implementation": "numpy_ref",
        "isa": [],
        "arch": platform.machine(),
        "system_info": f"numpy {np.__version__}, float64",
    }
    write_atomic(out, "build.json", json.dumps(build).encode())
    timing = {
        "prefill_seconds": prefill_seconds,
        "decode_seconds": decode_seconds,
        "prefill_tokens": n,
        "decode_calls": max(args.generate - 1, 0),
    }
    write_atomic(out, "timing.json", json.dumps(timing).encode())
    # The trace last: a directory with `trace.jsonl` is complete.
    write_atomic(out, "trace.jsonl", "".join(l + "\n" for l in lines).encode())


def dequantize_cli(argv):
    if len(argv) != 3:
        raise UsageError("usage: numpy_ref.py --dequantize MODEL.gguf TENSOR OUT.npy")
    path, name, dest = argv
    g = GgufFile(path)
    t = g.tensors.get(name)
    if t is None:
        raise RefError(f"`{path}`: tensor `{name}` is missing")
    w = Weight(g, t) if t.type_id in GGML_TYPES else g.data(t)
    d = os.path.dirname(os.path.abspath(dest))
    write_atomic(d, os.path.basename(dest), npy_bytes(w.dequantize()))


def main(argv):
    if argv[:1] == ["--dequantize"]:
        dequantize_cli(argv[1:])
        return
    p = Parser(prog="numpy-ref", description=__doc__.split("\n\n")[0], add_help=True)
    p.add_argument("model")
    p.add_argument("--tokens", action="append", default=[], required=True)
    p.add_argument("--generate", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--points", action="append", default=[])
    p.add_argument("--ubatch", type=int)
    p.add_argument("--nudge-embeddings", action="store_true")
    p.add_argument("-o", "--output", required=True)
    run(p.parse_args(argv))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.stderr.write(f"numpy-ref: error: {e}\n")
        sys.exit(2)
    except RefError as e:
        sys.stderr.write(f"numpy-ref: error: {e}\n")
        sys.exit(1)
    except MemoryError:
        sys.stderr.write("numpy-ref: error: out of memory\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # an internal error: one line unless NUMPY_REF_DEBUG is set
        if os.environ.get("NUMPY_REF_DEBUG"):
            raise
        sys.stderr.write(
            f"numpy-ref: internal error: {type(e).__name__}: {e} "
            "(set NUMPY_REF_DEBUG=1 for the traceback)\n"
        )
        sys.exit(3)
