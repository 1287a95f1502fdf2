"""Float64 reference of llama.cpp's `bitnet` graph (src/models/bitnet.cpp), independent of the
engine: weights dequantized by the `gguf` package, every op in numpy float64. Used by tests to
measure synthetic models and as an oracle for the engine.

  bitnet_forward.py MODEL.gguf --tokens 1,2,3 [--generate N] [--perturb-ulp] [--q8]
                    [--no-blocks] [--out FILE.json]

The graph, as bitnet.cpp builds it: embeddings; per layer RMSNorm·attn_norm → Q, K, V (each
matmul times its optional `.scale` tensor, build_lora_mm) → NEOX RoPE over
`rope.dimension_count` → causal attention with GQA, scale 1/sqrt(head_dim) → RMSNorm·attn_sub_norm
→ wo (×scale) → residual; RMSNorm·ffn_norm → silu(gate)·up (build_ffn, LLM_FFN_SILU + PAR) →
RMSNorm·ffn_sub_norm → down (×scale) → residual; RMSNorm·output_norm; logits through the tied
token embedding. RMSNorm is x / sqrt(mean(x²) + eps) · w (ggml_rms_norm then ggml_mul).

--q8 emulates llama.cpp's CPU arithmetic where it matters for sensitivity: every activation that
feeds a TQ weight is quantized as quantize_row_q8_K_ref does (per 256 values: iscale = -127/max,
round half to even, min 127), an activation that feeds an F16 weight is rounded to f16, and every
op's result is rounded to f32 (computed in f64 first, so the result does not depend on a
summation order). Without --q8 the whole graph is plain float64.

--perturb-ulp runs the prompt a second time with every input embedding value nudged up by one f32
ulp and reports the relative L2 change of the logits, whether the argmax of each position holds,
and (with --generate) the nudged greedy tokens.

--no-blocks computes the logits from the embeddings alone (every block skipped), to show how much
the blocks decide.

Prints JSON: per-layer RMS of the residual stream (`out`) and of the points inside each block,
logits of every prompt position, greedy generated tokens and their top-1 margins.
"""
import argparse
import json

import numpy as np
import gguf


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def ident(a):
    return a


class Model:
    def __init__(self, path, q8=False):
        self.r = gguf.GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}
        f = self.r.fields

        def scalar(k):
            return f[k].parts[f[k].data[0]].tolist()[0]

        self.n_embd = scalar("bitnet.embedding_length")
        self.n_layer = scalar("bitnet.block_count")
        self.n_head = scalar("bitnet.attention.head_count")
        self.n_head_kv = scalar("bitnet.attention.head_count_kv")
        self.n_rot = scalar("bitnet.rope.dimension_count")
        self.base = scalar("bitnet.rope.freq_base")
        self.eps = scalar("bitnet.attention.layer_norm_rms_epsilon")
        self.hd = self.n_embd // self.n_head
        self.E = self.w("token_embd.weight")
        self.E_type = gguf.GGMLQuantizationType(self.t["token_embd.weight"].tensor_type)
        self.q8 = q8
        # Rounding after each op: to f32 when emulating llama.cpp, none in plain float64.
        self.r32 = f32 if q8 else ident

    def w(self, name):
        t = self.t[name]
        v = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType(t.tensor_type))
        shape = [int(x) for x in t.shape][::-1]
        return v.astype(np.float64).reshape(shape)

    def scale(self, name):
        return float(self.w(name).reshape(-1)[0]) if name in self.t else 1.0

    def act(self, x, weight_type):
        """The activation as llama.cpp's CPU matmul sees it for a weight of this type."""
        if not self.q8:
            return x
        T = gguf.GGMLQuantizationType
        if weight_type in (T.TQ1_0, T.TQ2_0):
            return q8_k(x)
        if weight_type == T.F16:
            return x.astype(np.float16).astype(np.float64)
        return x

    def proj(self, xs, l, name):
        """Every variant's input through one projection (weights dequantized once)."""
        t = self.t[f"blk.{l}.{name}.weight"]
        W = self.w(t.name)
        s = self.scale(f"blk.{l}.{name}.scale")
        ty = gguf.GGMLQuantizationType(t.tensor_type)
        # build_lora_mm: ggml_mul_mat, then ggml_mul by the scale (two f32 results).
        return [self.r32(self.r32(self.act(x, ty) @ W.T) * s) for x in xs]


def q8_k(x):
    """quantize_row_q8_K_ref then dequantized: per 256 values, scale max/-127."""
    shape = x.shape
    b = x.astype(np.float32).reshape(-1, 256)
    mx = b[np.arange(b.shape[0]), np.abs(b).argmax(1)]
    nz = mx != 0
    iscale = np.where(nz, np.float32(-127.0) / np.where(nz, mx, np.float32(1)), np.float32(0))
    q = np.minimum(127, np.rint(b * iscale[:, None]))  # rint: round half to even, as nearest_int
    d = np.where(nz, np.float32(1) / np.where(nz, iscale, np.float32(1)), np.float32(0))
    return (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(shape)


def rmsnorm(m, x, w):
    return m.r32(m.r32(x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + m.eps)) * w)


def rope_neox(x, pos, n_rot, base):
    # x: (T, H, hd); pairs (i, i + n_rot/2) rotated by pos * base^(-2i/n_rot) (ggml rope, NEOX).
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half) / n_rot)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    a, b = x[..., :half], x[..., half:n_rot]
    out[..., :half] = a * c - b * s
    out[..., half:n_rot] = a * s + b * c
    return out


def rms(t):
    return float(np.sqrt(np.mean(t * t)))


def forward(m, xs, blocks=True):
    """Forward of every variant in `xs` (each (T, n_embd) input embeddings); returns each one's
    logits and per-layer statistics."""
    r = m.r32
    T = xs[0].shape[0]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    stats = [[] for _ in xs]
    for l in range(m.n_layer if blocks else 0):
        attn_norm = m.w(f"blk.{l}.attn_norm.weight")
        h = [rmsnorm(m, x, attn_norm) for x in xs]
        qs, ks, vs = (m.proj(h, l, n) for n in ("attn_q", "attn_k", "attn_v"))
        att = []
        for q, k, v in zip(qs, ks, vs):
            q = r(rope_neox(q.reshape(T, m.n_head, m.hd), pos, m.n_rot, m.base))
            k = r(rope_neox(k.reshape(T, m.n_head_kv, m.hd), pos, m.n_rot, m.base))
            v = v.reshape(T, m.n_head_kv, m.hd)
            g = m.n_head // m.n_head_kv
            a = np.zeros((T, m.n_head, m.hd))
            for hh in range(m.n_head):
                kh, vh = k[:, hh // g], v[:, hh // g]
                sc = r(q[:, hh] @ kh.T / np.sqrt(m.hd)) + mask
                p = np.exp(sc - sc.max(axis=1, keepdims=True))
                p = r(p / p.sum(axis=1, keepdims=True))
                a[:, hh] = r(p @ vh)
            att.append((q, a.reshape(T, m.n_embd)))
        sub = m.w(f"blk.{l}.attn_sub_norm.weight")
        os_ = m.proj([rmsnorm(m, a, sub) for _, a in att], l, "attn_output")
        xs = [r(x + o) for x, o in zip(xs, os_)]
        ffn_norm = m.w(f"blk.{l}.ffn_norm.weight")
        h = [rmsnorm(m, x, ffn_norm) for x in xs]
        gs, us = m.proj(h, l, "ffn_gate"), m.proj(h, l, "ffn_up")
        fsub = m.w(f"blk.{l}.ffn_sub_norm.weight")
        acts = [rmsnorm(m, r(r(g / (1.0 + np.exp(-g))) * u), fsub) for g, u in zip(gs, us)]
        ds = m.proj(acts, l, "ffn_down")
        xs = [r(x + d) for x, d in zip(xs, ds)]
        for i in range(len(xs)):
            stats[i].append({"layer": l, "q": rms(att[i][0]), "attn_out": rms(os_[i]),
                             "ffn_act": rms(acts[i]), "ffn_down": rms(ds[i]), "out": rms(xs[i])})
    out_norm = m.w("output_norm.weight")
    logits = [r(m.act(rmsnorm(m, x, out_norm), m.E_type) @ m.E.T) for x in xs]
    return logits, stats


def nudge(e):
    """Every value one f32 ulp up."""
    return np.nextafter(e.astype(np.float32), np.float32(np.inf)).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--perturb-ulp", action="store_true",
                    help="also run with every input embedding value nudged by one f32 ulp")
    ap.add_argument("--q8", action="store_true",
                    help="emulate llama.cpp's int8 activations and f32 rounding")
    ap.add_argument("--no-blocks", action="store_true", help="skip every block")
    ap.add_argument("--out")
    a = ap.parse_args()
    m = Model(a.model, q8=a.q8)
    blocks = not a.no_blocks
    tokens = [int(t) for t in a.tokens.split(",")]
    emb = m.E[tokens]
    variants = [emb, nudge(emb)] if a.perturb_ulp else [emb]
    (logits, *rest), (stats, *_) = forward(m, variants, blocks)
    res = {"stats": stats, "logits": logits.tolist(),
           "logit_std": float(np.std(logits)),
           "argmax": [int(i) for i in logits.argmax(1)]}
    if a.perturb_ulp:
        lp = rest[0]
        res["perturbed_rel_l2"] = float(np.linalg.norm(lp - logits) / np.linalg.norm(logits))
        res["perturbed_argmax_equal"] = bool((lp.argmax(1) == logits.argmax(1)).all())
    # Greedy generation, baseline (and nudged) side by side; margins of the baseline.
    seqs = [list(tokens) for _ in variants]
    gens = [[] for _ in variants]
    margins = []
    for _ in range(a.generate):
        embs = [m.E[s] for s in seqs]
        if a.perturb_ulp:
            embs[1] = nudge(embs[1])
        lgs, _ = forward(m, embs, blocks)
        for i, lg in enumerate(lgs):
            last = lg[-1]
            top = np.argsort(-last, kind="stable")[:2]
            if i == 0:
                margins.append(float(last[top[0]] - last[top[1]]))
            gens[i].append(int(top[0]))
            seqs[i].append(int(top[0]))
    res["generated"] = gens[0]
    res["margins"] = margins
    if a.perturb_ulp and a.generate:
        res["perturbed_generated"] = gens[1]
    text = json.dumps(res)
    if a.out:
        open(a.out, "w").write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
