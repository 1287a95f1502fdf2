#!/usr/bin/env python3
"""bitnet_cpp_convert: the converter half of `ci/refs/bitnet-cpp-ref`.

Turns the directory `bitnet-cpp-dump` (bitnet_cpp_dump.cpp) wrote into the trace directory of
the harness's external-reference protocol (harness/src/reference/mod.rs), file for file what
`harness ref-trace` (harness/src/reference/llama.rs) writes:

  bitnet_cpp_convert.py DUMPDIR -o OUTDIR [--points GLOB]...

- llama.cpp node names become canonical points as harness/src/reference/mapping.rs maps them,
  with the names bitnet.cpp's llama.cpp fork uses besides upstream's (`kq_soft_max_ext`,
  `attn_o_out`, and `ffn_out` for the ReLU² FFN of `build_bitnet_158`); other names are ignored;
- values are laid out positions first as llama.rs does: `q` as `[n_pos, n_head, head_dim]`, `k`
  and `v` as `[n_pos, n_head_kv, head_dim]`, `attn_probs` (ggml `[n_kv, n_pos, n_head]`)
  transposed to `[n_pos, n_head, n_kv]` and trimmed to the cached positions, the rest
  `[n_pos, ne[0]]`;
- the prompt's chunks (`--ubatch`) merge into step 0, `attn_probs` rows zero-padded to the last
  chunk's width;
- `--points` globs select points as the harness's PointFilter does;
- `build.json` says `implementation: bitnet.cpp`, with the instruction sets read from
  `llama_print_system_info()`.

Files are written under temporary names and renamed into place, `trace.jsonl` last. A malformed
dump (a missing or short file, sizes that disagree with shapes, no `done` record) is one line
on stderr, exit 1; usage errors exit 2. The protocol's helpers (globs, records, .npy, atomic
writes) are numpy_ref.py's, beside this file.
"""

import argparse
import json
import os
import re
import sys

# numpy_ref.py beside this file, imported without leaving a __pycache__ in the checkout.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from numpy_ref import (  # noqa: E402
    PointFilter,
    RefError,
    UsageError,
    merge_chunks,
    npy_bytes,
    point_of,
    trace_record,
    write_atomic,
)

PROG = "bitnet-cpp-ref"

# llama.cpp node name (without `-<layer>`) -> (canonical stage, per layer, operation it must
# have or None for any): mapping.rs's table plus bitnet.cpp's fork's names.
NODES = {
    "attn_norm": ("attn_norm", True, None),
    "Qcur": ("q", True, "rope"),
    "Kcur": ("k", True, "rope"),
    "Vcur": ("v", True, None),
    "kq_soft_max": ("attn_probs", True, "soft_max"),
    "kq_soft_max_ext": ("attn_probs", True, "soft_max"),
    "kqv_out": ("kqv_out", True, None),
    "attn_sub_norm": ("attn_sub_norm", True, None),
    "attn_out": ("attn_out", True, None),
    "attn_o_out": ("attn_out", True, None),
    "ffn_inp": ("ffn_inp", True, None),
    "ffn_norm": ("ffn_norm", True, None),
    "ffn_sub_out": ("ffn_act", True, None),
    "ffn_out": ("ffn_act", True, None),
    "ffn_sub_norm": ("ffn_sub_norm", True, None),
    "ffn_down": ("ffn_down", True, None),
    "l_out": ("out", True, None),
    "result_norm": ("output_norm", False, None),
    "result_output": ("logits", False, None),
}

# Instruction sets as `llama_print_system_info()` names them (`AVX2 = 1`); other flags it prints
# (LLAMAFILE, OPENMP, REPACK, ...) are not instruction sets.
ISA = [
    "sse3", "ssse3", "avx", "avx_vnni", "avx2", "f16c", "fma", "bmi2", "avx512", "avx512_vbmi",
    "avx512_vnni", "avx512_bf16", "amx_int8", "neon", "arm_fma", "fp16_va", "dotprod",
    "matmul_int8", "sve", "sme", "riscv_v", "vsx", "wasm_simd",
]


def canonical(name, op):
    """The canonical point of a node, or None (mapping.rs's `canonical`)."""
    if op == "token_rows":
        return "embeddings"
    m = re.fullmatch(r"(.+)-([0-9]+)", name)
    base, layer = (m.group(1), int(m.group(2))) if m else (name, None)
    entry = NODES.get(base)
    if entry is None:
        return None
    stage, per_layer, want = entry
    if per_layer != (layer is not None) or (want is not None and op != want):
        return None
    return f"blk.{layer}.{stage}" if per_layer else stage


def isa_of(system_info):
    on = {m.group(1).lower() for m in re.finditer(r"([A-Za-z0-9_]+) = 1\b", system_info)}
    return [f for f in ISA if f in on]


class Dump:
    """The dump directory: its index read and checked, its files read on demand."""

    def __init__(self, path):
        self.path = path
        index = os.path.join(path, "dump.jsonl")
        try:
            with open(index, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            raise RefError(f"the dump has no readable `dump.jsonl` in `{path}`: {e.strerror or e}")
        self.header, self.done = None, None
        self.tensors, self.logits = [], []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"`dump.jsonl` line {i}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise RefError(f"{where} is not JSON: {e}")
            kind = rec.get("kind") if isinstance(rec, dict) else None
            if self.header is None and kind != "header":
                raise RefError(f"{where}: expected the `header` record first, found `{kind}`")
            if kind == "header":
                self.header = self._header(rec, where)
            elif kind == "tensor":
                self.tensors.append(self._located(rec, where, ("name", "op", "ne")))
            elif kind == "logits":
                self.logits.append(self._located(rec, where, ("n_vocab",)))
            elif kind == "done":
                self.done = rec
        if self.header is None:
            raise RefError("`dump.jsonl` is empty: the dump tool wrote no header")
        if self.done is None:
            raise RefError(
                "the dump is incomplete: `dump.jsonl` has no `done` record (did the dump tool "
                "stop early?)"
            )

    @staticmethod
    def _header(rec, where):
        for key in ("n_vocab", "n_embd", "n_head", "n_head_kv", "tokens", "generate"):
            if key not in rec:
                raise RefError(f"{where}: the header lacks `{key}`")
        for key in ("n_vocab", "n_embd", "n_head", "n_head_kv"):
            if not isinstance(rec[key], int) or rec[key] < 1:
                raise RefError(
                    f"{where}: header `{key}` is `{rec[key]}`, expected a positive integer"
                )
        return rec

    @staticmethod
    def _located(rec, where, keys):
        for key in ("step", "chunk", "positions", "file") + keys:
            if key not in rec:
                raise RefError(f"{where}: `{rec.get('kind')}` record lacks `{key}`")
        p = rec["positions"]
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p)
                and 0 <= p[0] < p[1]):
            raise RefError(f"{where}: `positions` is `{p}`, expected [start, end) with start < end")
        f = rec["file"]
        if not isinstance(f, str) or os.path.basename(f) != f or f in ("", ".", ".."):
            raise RefError(f"{where}: `file` must be a plain file name, found `{f}`")
        if "ne" in keys:
            ne = rec["ne"]
            sizes = isinstance(ne, list) and all(isinstance(x, int) and x >= 0 for x in ne)
            if not (sizes and len(ne) == 4):
                raise RefError(f"{where}: `ne` is `{ne}`, expected four sizes")
        rec["where"] = where
        return rec

    def values(self, rec, count, what):
        """The f32 values of `rec`'s file, which must hold exactly `count` of them."""
        path = os.path.join(self.path, rec["file"])
        try:
            size = os.path.getsize(path)
            if size != 4 * count:
                raise RefError(
                    f"`{rec['file']}` ({what}, step {rec['step']}, chunk {rec['chunk']}) holds "
                    f"{size} bytes, expected {4 * count} ({count} f32 values)"
                )
            return np.fromfile(path, dtype="<f4")
        except OSError as e:
            raise RefError(
                f"cannot read `{rec['file']}` ({what}, step {rec['step']}, chunk {rec['chunk']}): "
                f"{e.strerror or e}"
            )


def layout(dump, rec, name, ne):
    """A node's values positions first, as llama.rs's `Capture::layout`."""
    h = dump.header
    p0, p1 = rec["positions"]
    n_pos = p1 - p0
    data = dump.values(rec, int(np.prod(ne, dtype=np.int64)), f"`{rec['name']}`")
    stage = name.rsplit(".", 1)[-1]
    head_dim = h["n_embd"] // h["n_head"]
    if stage == "q":
        shape = (n_pos, h["n_head"], head_dim)
    elif stage in ("k", "v"):
        shape = (n_pos, h["n_head_kv"], head_dim)
    elif stage == "attn_probs":
        # ggml: [n_kv (padded), n_pos, n_head]; keep the cached positions 0..p1.
        n_kv, keep = ne[0], p1
        if keep > n_kv or ne[1] != n_pos or ne[2] != h["n_head"] or ne[3] != 1:
            raise RefError(
                f"`{rec['name']}` (step {rec['step']}, chunk {rec['chunk']}) has shape {ne}, "
                f"expected [>={keep}, {n_pos}, {h['n_head']}, 1]"
            )
        a = data.reshape(h["n_head"], n_pos, n_kv)[:, :, :keep]
        return np.ascontiguousarray(a.transpose(1, 0, 2))
    else:
        shape = (n_pos, ne[0])
    if int(np.prod(shape)) != data.size:
        raise RefError(
            f"`{rec['name']}` (step {rec['step']}, chunk {rec['chunk']}) holds {data.size} values "
            f"(ne {ne}), expected shape {list(shape)} for {n_pos} positions"
        )
    return data.reshape(shape)


def step_chunks(dump):
    """{step: {chunk: positions}} over every tensor and logits record, checked to tile each
    step's positions without gaps."""
    steps = {}
    for rec in dump.tensors + dump.logits:
        chunks = steps.setdefault(rec["step"], {})
        p = tuple(rec["positions"])
        if chunks.setdefault(rec["chunk"], p) != p:
            raise RefError(
                f"{rec['where']}: step {rec['step']} chunk {rec['chunk']} covers positions "
                f"{list(p)}, another record says {list(chunks[rec['chunk']])}"
            )
    for step, chunks in steps.items():
        order = sorted(chunks)
        for a, b in zip(order, order[1:]):
            if chunks[a][1] != chunks[b][0]:
                raise RefError(
                    f"step {step}: chunk {a} ends at position {chunks[a][1]} but chunk {b} "
                    f"starts at {chunks[b][0]}"
                )
    return steps


def convert(dump_dir, out, patterns):
    filt = PointFilter(patterns)
    dump = Dump(dump_dir)
    h = dump.header
    steps = step_chunks(dump)

    # (step, point) -> {chunk: record}
    points = {}
    for rec in dump.tensors:
        name = canonical(rec["name"], rec["op"])
        if name is None or not filt.matches(name):
            continue
        chunks = points.setdefault((rec["step"], name), {})
        if rec["chunk"] in chunks:
            raise RefError(
                f"{rec['where']}: `{rec['name']}` and `{chunks[rec['chunk']]['name']}` both map "
                f"to `{name}` at step {rec['step']} chunk {rec['chunk']}"
            )
        chunks[rec["chunk"]] = rec

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RefError(f"cannot create `{out}`: {e.strerror or e}")
    lines = []
    for step, name in sorted(points, key=lambda k: (k[0], point_of(k[1])[2])):
        chunks = points[(step, name)]
        missing = sorted(set(steps[step]) - set(chunks))
        if missing:
            raise RefError(f"`{name}` at step {step} lacks chunk {missing[0]} of the step")
        arrays = [layout(dump, chunks[c], name, chunks[c]["ne"]) for c in sorted(chunks)]
        values = merge_chunks(name, arrays)
        first, last = min(steps[step]), max(steps[step])
        positions = (steps[step][first][0], steps[step][last][1])
        write_atomic(out, f"{name}.step{step}.npy", npy_bytes(values))
        lines.append(trace_record(name, step, positions, values))

    # The prompt's logits, every position, from the chunks of step 0.
    n_vocab, n = h["n_vocab"], len(h["tokens"])
    rows = []
    for rec in sorted((r for r in dump.logits if r["step"] == 0), key=lambda r: r["chunk"]):
        m = rec["positions"][1] - rec["positions"][0]
        rows.append(dump.values(rec, m * n_vocab, "logits").reshape(m, n_vocab))
    logits = np.concatenate(rows, axis=0) if rows else np.zeros((0, n_vocab), np.float32)
    if logits.shape[0] != n:
        raise RefError(f"the dump holds logits of {logits.shape[0]} prompt positions, expected {n}")

    generated = dump.done.get("generated")
    if not (isinstance(generated, list) and all(isinstance(t, int) and t >= 0 for t in generated)):
        raise RefError(f"the `done` record's `generated` is `{generated}`, expected token ids")
    if len(generated) != h["generate"]:
        raise RefError(f"the dump generated {len(generated)} tokens, expected {h['generate']}")

    system_info = str(h.get("system_info", "")).strip()
    if h.get("kv_cache"):
        # bitnet.cpp's fork keeps V in F16 (see bitnet_cpp_dump.cpp): say so beside the build.
        system_info += f" | KV cache: {h['kv_cache']}"
    build = {
        "implementation": "bitnet.cpp",
        "isa": isa_of(system_info),
        "arch": str(h.get("build_arch", "")),
        "system_info": system_info,
    }
    timing = {k: dump.done.get(k, 0) for k in ("prefill_seconds", "decode_seconds")}
    timing["prefill_tokens"] = n
    timing["decode_calls"] = max(h["generate"] - 1, 0)
    write_atomic(out, "logits.npy", npy_bytes(logits))
    write_atomic(out, "generated.json", json.dumps(generated, separators=(",", ":")).encode())
    write_atomic(out, "build.json", json.dumps(build).encode())
    write_atomic(out, "timing.json", json.dumps(timing).encode())
    # The trace last: a directory with `trace.jsonl` is complete.
    write_atomic(out, "trace.jsonl", "".join(l + "\n" for l in lines).encode())


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def main(argv):
    p = Parser(prog="bitnet_cpp_convert.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dump_dir")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--points", action="append", default=[])
    args = p.parse_args(argv)
    convert(args.dump_dir, args.output, args.points)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        sys.exit(2)
    except RefError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        sys.exit(1)
    except MemoryError:
        sys.stderr.write(f"{PROG}: error: out of memory converting the dump\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # an internal error: one line unless BITNET_CPP_REF_DEBUG is set
        if os.environ.get("BITNET_CPP_REF_DEBUG"):
            raise
        sys.stderr.write(
            f"{PROG}: internal error converting the dump: {type(e).__name__}: {e} "
            "(set BITNET_CPP_REF_DEBUG=1 for the traceback)\n"
        )
        sys.exit(3)
