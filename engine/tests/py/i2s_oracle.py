"""Independent oracle for bitnet.cpp's I2_S product, written in numpy from its C sources
(`ggml-quants.c: quantize_row_i8_s`, `ggml-bitnet-mad.cpp: quantize_i2_s`/`ggml_vec_dot_i2_i8_s`,
and the finish in `ggml.c: ggml_compute_forward_mul_mat_one_chunk`), not from this engine's code.

  i2s_oracle.py X.npy W.bin ROWS OUTDIR
     X.npy: f32 activations [n_tok, cols]; W.bin: an I2_S tensor of ROWS rows (codes, then the
     f32 scale padded to 32 bytes). Writes, all as f32 (the integers are exact in it):
     OUTDIR/q.npy (the int8 quants), OUTDIR/scales.npy, OUTDIR/sums.npy (the quant sums) and
     OUTDIR/y.npy (the products [n_tok, ROWS]).
"""
import sys
from pathlib import Path

import numpy as np


def quantize_row_i8_s(x):
    """`max` in double from 1e-5, `s = (float)(127 / max)`, `nearest_int(x * s)` (an f32
    product, ties to even) clamped to [-128, 127], and the int32 sum of the quants."""
    x = x.astype(np.float32)
    amax = max(1e-5, float(np.max(np.abs(x.astype(np.float64)))) if x.size else 1e-5)
    s = np.float32(127.0 / amax)
    v = np.rint((x * s).astype(np.float32)).astype(np.int64)  # np.rint: half to even
    q = np.clip(v, -128, 127).astype(np.int8)
    return q, s, np.int32(q.astype(np.int64).sum())


def i2_s_codes(data, rows, cols):
    """Codes 0..3 of every row: in each 32-byte group, byte j holds element j in bits 6..8,
    j+32 in bits 4..6, j+64 in bits 2..4 and j+96 in bits 0..2."""
    b = np.frombuffer(data[: rows * cols // 4], dtype=np.uint8).reshape(rows, cols // 128, 32)
    parts = [(b >> shift) & 3 for shift in (6, 4, 2, 0)]
    return np.concatenate(parts, axis=2).reshape(rows, cols).astype(np.int64)


def main():
    x = np.load(sys.argv[1]).astype(np.float32)
    data = Path(sys.argv[2]).read_bytes()
    rows = int(sys.argv[3])
    out = Path(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    n_tok, cols = x.shape
    scale = np.frombuffer(data[rows * cols // 4 : rows * cols // 4 + 4], dtype=np.float32)[0]
    codes = i2_s_codes(data, rows, cols)
    qs, ss, sums = [], [], []
    y = np.zeros((n_tok, rows), dtype=np.float32)
    for t in range(n_tok):
        q, s, total = quantize_row_i8_s(x[t])
        qs.append(q)
        ss.append(s)
        sums.append(total)
        dot = codes @ q.astype(np.int64)  # exact Σ code·q per row
        # tmp = (float)sumi; tmp = (tmp - act_sum) / act_scale * scale, each step in f32.
        v = dot.astype(np.float32) - np.float32(total)
        v = (v / s).astype(np.float32)
        y[t] = (v * scale).astype(np.float32)
    np.save(out / "q.npy", np.stack(qs).astype(np.float32))
    np.save(out / "scales.npy", np.array(ss, dtype=np.float32))
    np.save(out / "sums.npy", np.array(sums, dtype=np.float32))
    np.save(out / "y.npy", y)


if __name__ == "__main__":
    main()
