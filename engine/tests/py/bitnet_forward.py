"""Float64 reference of llama.cpp's `bitnet` graph (src/models/bitnet.cpp), independent of the
engine: weights dequantized by the `gguf` package, every op in numpy float64, no activation
quantization. Used by tests to measure synthetic models and as an oracle for the engine.

  bitnet_forward.py MODEL.gguf --tokens 1,2,3 [--generate N] [--perturb-ulp] [--out FILE.json]

Prints JSON: per-layer RMS of the residual stream (`blk.N.out`) and of each sub-block input,
logits of every prompt position, greedy generated tokens and the top-1 margins.
"""
import argparse
import json

import numpy as np
import gguf


class Model:
    def __init__(self, path):
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

    def w(self, name):
        t = self.t[name]
        v = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType(t.tensor_type))
        shape = [int(x) for x in t.shape][::-1]
        return v.astype(np.float64).reshape(shape)

    def scale(self, name):
        return float(self.w(name).reshape(-1)[0]) if name in self.t else 1.0

    def proj(self, x, l, name):
        return (x @ self.w(f"blk.{l}.{name}.weight").T) * self.scale(f"blk.{l}.{name}.scale")


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_neox(x, pos, n_rot, base):
    # x: (T, H, hd); pairs (i, i + n_rot/2) rotated by pos * base^(-2i/n_rot).
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half) / n_rot)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    a, b = x[..., :half], x[..., half:n_rot]
    out[..., :half] = a * c - b * s
    out[..., half:n_rot] = a * s + b * c
    return out


def forward(m, tokens, embd_override=None):
    T = len(tokens)
    x = m.E[tokens].copy() if embd_override is None else embd_override.copy()
    pos = np.arange(T, dtype=np.float64)
    stats = []
    for l in range(m.n_layer):
        h = rmsnorm(x, m.w(f"blk.{l}.attn_norm.weight"), m.eps)
        q = m.proj(h, l, "attn_q").reshape(T, m.n_head, m.hd)
        k = m.proj(h, l, "attn_k").reshape(T, m.n_head_kv, m.hd)
        v = m.proj(h, l, "attn_v").reshape(T, m.n_head_kv, m.hd)
        q, k = rope_neox(q, pos, m.n_rot, m.base), rope_neox(k, pos, m.n_rot, m.base)
        r = m.n_head // m.n_head_kv
        att = np.zeros((T, m.n_head, m.hd))
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for hh in range(m.n_head):
            kh, vh = k[:, hh // r], v[:, hh // r]
            sc = q[:, hh] @ kh.T / np.sqrt(m.hd) + mask
            p = np.exp(sc - sc.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            att[:, hh] = p @ vh
        a = rmsnorm(att.reshape(T, m.n_embd), m.w(f"blk.{l}.attn_sub_norm.weight"), m.eps)
        o = m.proj(a, l, "attn_output")
        x = x + o
        h = rmsnorm(x, m.w(f"blk.{l}.ffn_norm.weight"), m.eps)
        g, u = m.proj(h, l, "ffn_gate"), m.proj(h, l, "ffn_up")
        act = g / (1.0 + np.exp(-g)) * u
        act = rmsnorm(act, m.w(f"blk.{l}.ffn_sub_norm.weight"), m.eps)
        d = m.proj(act, l, "ffn_down")
        x = x + d
        rms = lambda t: float(np.sqrt(np.mean(t * t)))
        stats.append({"layer": l, "q": rms(q), "attn_out": rms(o), "ffn_act": rms(act / 1.0),
                      "ffn_down": rms(d), "out": rms(x)})
    out = rmsnorm(x, m.w("output_norm.weight"), m.eps)
    return out @ m.E.T, stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--perturb-ulp", action="store_true",
                    help="also run with every input embedding value nudged by one f32 ulp")
    ap.add_argument("--out")
    a = ap.parse_args()
    m = Model(a.model)
    tokens = [int(t) for t in a.tokens.split(",")]
    logits, stats = forward(m, tokens)
    gen, margins, seq = [], [], list(tokens)
    for _ in range(a.generate):
        lg, _ = forward(m, seq)
        last = lg[-1]
        top = np.argsort(-last, kind="stable")[:2]
        gen.append(int(top[0]))
        margins.append(float(last[top[0]] - last[top[1]]))
        seq.append(int(top[0]))
    res = {"stats": stats, "logits": logits.tolist(), "generated": gen, "margins": margins,
           "logit_std": float(np.std(logits))}
    if a.perturb_ulp:
        e32 = m.E[tokens].astype(np.float32)
        nudged = np.nextafter(e32, np.float32(np.inf)).astype(np.float64)
        lp, _ = forward(m, tokens, nudged)
        res["perturbed_rel_l2"] = float(np.linalg.norm(lp - logits) / np.linalg.norm(logits))
        res["perturbed_argmax_equal"] = bool((lp.argmax(1) == logits.argmax(1)).all())
        if a.generate:
            seq = list(tokens)
            gp = []
            emb = nudged
            for _ in range(a.generate):
                lg, _ = forward(m, seq, emb)
                t = int(np.argmax(lg[-1]))
                gp.append(t)
                seq.append(t)
                emb = np.vstack([emb, np.nextafter(m.E[[t]].astype(np.float32), np.float32(np.inf))])
            res["perturbed_generated"] = gp
    text = json.dumps(res)
    if a.out:
        open(a.out, "w").write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
