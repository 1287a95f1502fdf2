"""numpy-ref's GGUF reader and its error types (see numpy_ref.py): the file's header, metadata
and tensor table, read from the specification
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), every size checked against the file
before anything is allocated or mapped.
"""

import os

import numpy as np


class RefError(Exception):
    """A user error: bad arguments, a bad or unsupported model file. One line, exit 1."""


class UsageError(RefError):
    """Bad command-line arguments: exit 2."""


# --------------------------------------------------------------------------------------------
# GGUF reading (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
# --------------------------------------------------------------------------------------------

# Metadata value types: id -> (name, numpy dtype) for the fixed-size ones.
GGUF_SCALARS = {
    0: ("uint8", "<u1"),
    1: ("int8", "<i1"),
    2: ("uint16", "<u2"),
    3: ("int16", "<i2"),
    4: ("uint32", "<u4"),
    5: ("int32", "<i4"),
    6: ("float32", "<f4"),
    7: ("bool", "<u1"),
    10: ("uint64", "<u8"),
    11: ("int64", "<i8"),
    12: ("float64", "<f8"),
}
GGUF_STRING, GGUF_ARRAY = 8, 9

# ggml tensor types this reference computes with: id -> (name, block elements, block bytes).
QK_K = 256
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    34: ("TQ1_0", QK_K, 54),  # qs[48] (5 trits a byte), qh[4] (4 trits a byte), f16 d
    35: ("TQ2_0", QK_K, 66),  # qs[64] (4 2-bit codes a byte), f16 d
    36: ("I2_S", 128, 32),  # bitnet.cpp: 128 2-bit codes in 32 bytes; one f32 scale after all
}
I2_S_TAIL = 32  # bytes after an I2_S tensor's codes: its f32 scale, padded to 32
ROW_CHUNK = 8192  # output rows of a dense or I2_S product computed at a time
# Names of the other ggml types, for the error message.
OTHER_TYPE_NAMES = {
    2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
    12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
    26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 39: "MXFP4",
}


class TensorInfo:
    def __init__(self, name, dims, type_id, offset):
        self.name = name
        self.dims = dims  # ggml order: dims[0] is the row length
        self.type_id = type_id
        self.offset = offset  # relative to the data section
        self.start = None  # absolute, set once the data section is known
        self.nbytes = None

    @property
    def type_name(self):
        return GGML_TYPES[self.type_id][0]

    @property
    def cols(self):
        return self.dims[0]

    @property
    def rows(self):
        n = 1
        for d in self.dims[1:]:
            n *= d
        return n


class GgufFile:
    """A parsed GGUF file: metadata `kv`, tensor infos, and the bytes (a read-only memmap).
    Every length read from the file is checked against the bytes left before it is used."""

    def __init__(self, path):
        self.path = path
        try:
            size = os.path.getsize(path)
            if not os.path.isfile(path):
                raise RefError(f"`{path}` is not a regular file")
        except OSError as e:
            raise RefError(f"cannot read `{path}`: {e.strerror or e}")
        if size < 24:
            raise RefError(f"`{path}`: {size} bytes is too short for a GGUF header (24 bytes)")
        try:
            self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise RefError(f"cannot map `{path}`: {e}")
        self.size = size
        self.pos = 0
        self.kv = {}
        self.tensors = {}
        self._parse()

    # -- primitive reads, every one bounds-checked --
    def _fail(self, what):
        return RefError(f"`{self.path}`: {what}")

    def _take(self, n, what):
        if n < 0 or self.pos + n > self.size:
            raise self._fail(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, the file has {self.size}"
            )
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def _scalar(self, dtype, what):
        dt = np.dtype(dtype)
        return np.frombuffer(self._take(dt.itemsize, what), dtype=dt)[0].item()

    def _u32(self, what):
        return self._scalar("<u4", what)

    def _u64(self, what):
        return self._scalar("<u8", what)

    def _string(self, what):
        n = self._u64(f"the length of {what}")
        if n > self.size - self.pos:
            raise self._fail(
                f"{what}: string length {n} runs past the end of the file "
                f"(offset {self.pos}, size {self.size})"
            )
        return bytes(self._take(n, what)).decode("utf-8", errors="replace")

    def _value(self, vtype, what, depth=0):
        if vtype in GGUF_SCALARS:
            v = self._scalar(GGUF_SCALARS[vtype][1], what)
            return bool(v) if vtype == 7 else v
        if vtype == GGUF_STRING:
            return self._string(what)
        if vtype == GGUF_ARRAY:
            if depth > 0:
                raise self._fail(f"{what}: nested arrays are not supported")
            etype = self._u32(f"the element type of {what}")
            count = self._u64(f"the length of {what}")
            left = self.size - self.pos
            if etype in GGUF_SCALARS:
                dt = np.dtype(GGUF_SCALARS[etype][1])
                if count > left // dt.itemsize:
                    raise self._fail(
                        f"{what}: array of {count} {GGUF_SCALARS[etype][0]} runs past the end "
                        f"of the file (offset {self.pos}, size {self.size})"
                    )
                return np.frombuffer(self._take(count * dt.itemsize, what), dtype=dt).copy()
            if etype == GGUF_STRING:
                if count > left // 8:
                    raise self._fail(
                        f"{what}: array of {count} strings runs past the end of the file "
                        f"(offset {self.pos}, size {self.size})"
                    )
                return [self._string(f"{what}[{i}]") for i in range(count)]
            if etype == GGUF_ARRAY:
                raise self._fail(f"{what}: nested arrays are not supported")
            raise self._fail(f"{what}: unknown array element type {etype}")
        raise self._fail(f"{what}: unknown metadata value type {vtype}")

    def _parse(self):
        magic = bytes(self._take(4, "the magic"))
        if magic != b"GGUF":
            raise self._fail(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
        version = self._u32("the version")
        if version not in (2, 3):
            raise self._fail(f"GGUF version {version} is not supported (2 or 3)")
        n_tensors = self._u64("the tensor count")
        n_kv = self._u64("the metadata count")
        # Each metadata pair takes at least 12 bytes, each tensor info at least 24.
        left = self.size - self.pos
        if n_kv * 12 + n_tensors * 24 > left:
            raise self._fail(
                f"the header announces {n_kv} metadata pairs and {n_tensors} tensors, more than "
                f"the {left} bytes after it can hold (a truncated or corrupt file)"
            )
        for i in range(n_kv):
            key = self._string(f"metadata key #{i}")
            vtype = self._u32(f"the type of metadata `{key}`")
            if key in self.kv:
                raise self._fail(f"metadata key `{key}` appears twice")
            self.kv[key] = self._value(vtype, f"metadata `{key}`")
        infos = []
        for i in range(n_tensors):
            name = self._string(f"the name of tensor #{i}")
            n_dims = self._u32(f"the dimension count of tensor `{name}`")
            if n_dims < 1 or n_dims > 4:
                raise self._fail(f"tensor `{name}` has {n_dims} dimensions (1 to 4 expected)")
            dims = [self._u64(f"dimension {d} of tensor `{name}`") for d in range(n_dims)]
            type_id = self._u32(f"the type of tensor `{name}`")
            offset = self._u64(f"the data offset of tensor `{name}`")
            if name in self.tensors:
                raise self._fail(f"tensor `{name}` appears twice")
            t = TensorInfo(name, dims, type_id, offset)
            self.tensors[name] = t
            infos.append(t)
        align = self.kv.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise self._fail(f"metadata `general.alignment` is {align!r}; expected a power of two")
        self.alignment = align
        data_start = (self.pos + align - 1) // align * align
        for t in infos:
            if t.offset % align:
                raise self._fail(
                    f"tensor `{t.name}`: data offset {t.offset} is not a multiple of the "
                    f"alignment {align}"
                )
            t.start = data_start + t.offset
            if t.type_id in GGML_TYPES:
                t.nbytes = tensor_nbytes(t, self.path)
                end = t.start + t.nbytes
                if end > self.size:
                    raise self._fail(
                        f"tensor `{t.name}` ({t.type_name} {t.dims}): its data "
                        f"[{t.start}, {end}) runs past the end of the file ({self.size} bytes)"
                    )

    def data(self, t):
        """The bytes of tensor `t` (already checked to lie inside the file)."""
        if t.type_id not in GGML_TYPES:
            name = OTHER_TYPE_NAMES.get(t.type_id, "unknown")
            raise RefError(
                f"`{self.path}`: tensor `{t.name}` has type {name} (id {t.type_id}); "
                "numpy-ref supports F32, F16, TQ1_0, TQ2_0 and I2_S"
            )
        return self.buf[t.start : t.start + t.nbytes]


def tensor_nbytes(t, path):
    _, block, size = GGML_TYPES[t.type_id]
    if any(d == 0 for d in t.dims):
        raise RefError(f"`{path}`: tensor `{t.name}` has an empty dimension {t.dims}")
    if t.cols % block:
        raise RefError(
            f"`{path}`: tensor `{t.name}` ({t.type_name}): row length {t.cols} is not a "
            f"multiple of the block size {block}"
        )
    n = (t.cols // block) * size * t.rows
    return n + I2_S_TAIL if t.type_name == "I2_S" else n
