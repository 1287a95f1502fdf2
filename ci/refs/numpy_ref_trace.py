"""numpy-ref's trace points and output (see numpy_ref.py): the point names and the `--points`
glob filter, and the trace files it writes (`.npy` values, `trace.jsonl` records with blake3
digests and summary statistics, written atomically), as the engine's tracer writes them.
"""

import json
import os
import re

import blake3
import numpy as np

from numpy_ref_gguf import RefError, UsageError


# --------------------------------------------------------------------------------------------
# Trace points, filtering, output
# --------------------------------------------------------------------------------------------

LAYER_STAGES = [
    "attn_norm", "q", "k", "v", "attn_probs", "kqv_out", "attn_sub_norm", "attn_out",
    "ffn_inp", "ffn_norm", "ffn_act", "ffn_sub_norm", "ffn_down", "out",
]


def point_of(name):
    """(layer or None, stage, order key) of a canonical name, in execution order."""
    if name.startswith("blk."):
        layer, stage = name[4:].split(".", 1)
        return int(layer), stage, (1, int(layer), LAYER_STAGES.index(stage))
    order = {"embeddings": (0, 0, 0), "output_norm": (2, 0, 0), "logits": (2, 0, 1)}
    return None, name, order[name]


def glob_regex(pattern):
    """A glob as globset reads it with `literal_separator(false)`: `*` and `**` match any run of
    characters (dots included), `?` one, `[...]`/`[!...]`/`[^...]` a class, `{a,b}` either,
    `\\` escapes the next character."""
    out, i, n, depth = [], 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise UsageError(f"bad trace point glob `{pattern}`: dangling escape")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(".*")
            continue
        if c == "?":
            out.append(".")
        elif c == "[":
            j = i + 1
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            start = j
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise UsageError(f"bad trace point glob `{pattern}`: unclosed character class")
            body = pattern[start:j].replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            out.append(("[^" if negate else "[") + body + "]")
            i = j
        elif c == "{":
            if depth:
                raise UsageError(f"bad trace point glob `{pattern}`: nested alternates")
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise UsageError(f"bad trace point glob `{pattern}`: unclosed alternate")
    return re.compile("(?s)^" + "".join(out) + "$")


class PointFilter:
    def __init__(self, patterns):
        self.patterns = patterns or ["*"]
        self.res = [glob_regex(p) for p in self.patterns]

    def matches(self, name):
        return any(r.match(name) for r in self.res)


def npy_bytes(a):
    """A C-order little-endian f32 array as .npy 1.0 bytes."""
    a = np.ascontiguousarray(a, dtype="<f4")
    shape = a.shape
    shape_str = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape_str
    unpadded = 10 + len(header) + 1
    header += " " * ((64 - unpadded % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + a.tobytes()


def write_atomic(dirpath, name, data):
    tmp = os.path.join(dirpath, f".{name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(dirpath, name))
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RefError(f"cannot write `{os.path.join(dirpath, name)}`: {e.strerror or e}")


def f32_json(v):
    """An f32 as serde_json writes it (shortest representation that reads back the same f32)."""
    v = np.float32(v)
    if not np.isfinite(v):
        return "null"
    s = np.format_float_positional(v, unique=True, trim="0") if abs(v) >= 1e-5 or v == 0 else None
    if s is None or len(s) > 20:
        s = np.format_float_scientific(v, unique=True, trim="0", exp_digits=1)
    if s.endswith("."):
        s += "0"
    return s.replace("e+", "e")


def f64_json(v):
    return repr(float(v)) if np.isfinite(v) else "null"


def trace_record(name, step, positions, values):
    """The JSON line of TraceRecord::summarize for `values` (f32, positions-first)."""
    layer, stage, _ = point_of(name)
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    v64 = flat.astype(np.float64)
    # Σv² in f64 from the first element to the last (cumsum keeps that order).
    sumsq = float(np.cumsum(v64 * v64)[-1]) if flat.size else 0.0
    nan = int(np.isnan(flat).sum())
    inf = int(np.isinf(flat).sum())
    finite = flat[np.isfinite(flat)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (np.float32(0), np.float32(0))
    rms = (sumsq / flat.size) ** 0.5 if flat.size else 0.0
    fields = [
        ("name", json.dumps(name)),
        ("step", str(step)),
        ("positions", f"[{positions[0]},{positions[1]}]"),
        ("layer", "null" if layer is None else str(layer)),
        ("stage", json.dumps(stage)),
        ("shape", "[" + ",".join(str(d) for d in values.shape) + "]"),
        ("dtype", '"f32"'),
        ("blake3", json.dumps(blake3.blake3(flat.tobytes()).hexdigest())),
        ("rms", f64_json(rms)),
        ("count", str(flat.size)),
        ("min", f32_json(lo)),
        ("max", f32_json(hi)),
        ("nan", str(nan)),
        ("inf", str(inf)),
        ("file", json.dumps(f"{name}.step{step}.npy")),
    ]
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields) + "}"


def merge_chunks(name, chunks):
    """One step's chunks of a point merged along positions; attention rows zero-padded to the
    last (widest) chunk's cached positions, as a one-shot prefill leaves masked positions."""
    if name.endswith(".attn_probs"):
        width = chunks[-1].shape[2]
        chunks = [
            np.pad(c, ((0, 0), (0, 0), (0, width - c.shape[2]))) if c.shape[2] < width else c
            for c in chunks
        ]
    return np.concatenate(chunks, axis=0)


def greedy(row):
    """argmax, ties (and NaN) resolved as the harness's greedy sampling: the first index wins,
    and a value wins only if it is greater than the best so far."""
    if np.isnan(row[0]):
        return 0
    r = np.where(np.isnan(row), -np.inf, row)
    return int(np.argmax(r))
