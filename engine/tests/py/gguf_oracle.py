"""Independent oracle for GGUF files: llama.cpp's own `gguf` Python package.

  gguf_oracle.py read FILE OUTDIR   -> OUTDIR/metadata.json, OUTDIR/<tensor>.npy (dequantized f32)
  gguf_oracle.py write FILE OUTDIR  -> FILE written by gguf.GGUFWriter; for each tensor
                                       OUTDIR/<name>.in.npy (input), <name>.bin (gguf-py's bytes),
                                       <name>.npy (gguf-py's dequantization)
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q


def value_json(field):
    types = [t.name for t in field.types]
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if len(field.types) > 1 and field.types[1] == gguf.GGUFValueType.ARRAY:
            return {"type": "nested", "types": types}
        if field.types[-1] == gguf.GGUFValueType.STRING:
            vals = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        else:
            vals = [field.parts[i].tolist()[0] for i in field.data]
        return {"type": "array", "elem": types[-1], "values": vals}
    part = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return {"type": "STRING", "value": bytes(part).decode("utf-8")}
    v = part.tolist()[0]
    if isinstance(v, float):
        v = float(np.float64(v))
    return {"type": types[0], "value": v}


def read(path, out):
    out.mkdir(parents=True, exist_ok=True)
    r = gguf.GGUFReader(path)
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        meta[name] = value_json(field)
    tensors = []
    for t in r.tensors:
        qt = Q(t.tensor_type)
        vals = gguf.quants.dequantize(np.asarray(t.data), qt).astype(np.float32).reshape(-1)
        np.save(out / f"{t.name}.npy", vals)
        tensors.append({"name": t.name, "type": qt.name, "shape": [int(x) for x in t.shape],
                        "offset": int(t.data_offset)})
    (out / "metadata.json").write_text(json.dumps({"metadata": meta, "tensors": tensors}))


def write(path, out):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, arch="bitnet")
    w.add_uint32("test.u32", 7)
    w.add_int64("test.i64", -9)
    w.add_float64("test.f64", 0.1)
    w.add_string("test.str", "héllo")
    w.add_array("test.arr", ["a", "bc"])
    w.add_bool("test.bool", True)
    specs = [("w.f32", Q.F32, (3, 8)), ("w.f16", Q.F16, (4, 64)), ("w.bf16", Q.BF16, (2, 64)),
             ("w.q8_0", Q.Q8_0, (3, 64)), ("w.tq1_0", Q.TQ1_0, (2, 512)), ("w.tq2_0", Q.TQ2_0, (3, 256))]
    for name, qt, shape in specs:
        x = rng.standard_normal(shape).astype(np.float32)
        if qt in (Q.TQ1_0, Q.TQ2_0):
            # Mostly ternary data, plus noise and an exact-half case, to exercise rounding.
            x = (rng.integers(-1, 2, size=shape) * 0.37 + 0.05 * x).astype(np.float32)
            x.reshape(-1)[5] = 0.5 * np.abs(x).reshape(-1)[:256].max()
        # Rounding ties for Q8_0 and the float formats.
        x.reshape(-1)[1] = np.float32(1.0) + np.float32(2.0 ** -8)
        data = gguf.quants.quantize(x, qt)
        w.add_tensor(name, data, raw_dtype=qt)
        np.save(out / f"{name}.in.npy", x.reshape(-1))
        (out / f"{name}.bin").write_bytes(data.tobytes())
        np.save(out / f"{name}.npy", gguf.quants.dequantize(data, qt).astype(np.float32).reshape(-1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    cmd, path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    {"read": read, "write": write}[cmd](path, out)
