"""tensorfile.py: minimal safetensors reader and writer on numpy (no safetensors package).

Format: 8-byte little-endian header length, a JSON header mapping tensor name ->
{"dtype", "shape", "data_offsets": [begin, end)} relative to the data area (plus an
optional "__metadata__"), then the raw little-endian data.
read() returns every tensor as float32 (F32, F16 and BF16 are accepted).
write() emits tensors sorted by name, data contiguous in that order, the header padded
with spaces to a multiple of 8 and "__metadata__": {"format": "pt"}, as the demo
models' files are laid out.
"""
import json
import struct

import numpy as np

_READ_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_WRITE_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def read(path):
    """Return {name: float32 ndarray} for the safetensors file at path."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("%s: too short for a safetensors header" % path)
    (hlen,) = struct.unpack("<Q", blob[:8])
    if 8 + hlen > len(blob):
        raise ValueError("%s: header length %d past end of file" % (path, hlen))
    header = json.loads(blob[8:8 + hlen])
    data = memoryview(blob)[8 + hlen:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt = meta["dtype"]
        if dt not in _READ_DTYPES:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        b, e = meta["data_offsets"]
        shape = tuple(meta["shape"])
        raw = np.frombuffer(data[b:e], dtype=np.dtype(_READ_DTYPES[dt]).newbyteorder("<"))
        if raw.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s size does not match its shape" % (path, name))
        if dt == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.astype(np.float32)
        out[name] = arr.reshape(shape)
    return out


def write(path, tensors):
    """Write {name: ndarray (float32 or float16)} to path as safetensors."""
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    off = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _WRITE_DTYPES:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, arr.dtype))
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _WRITE_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in chunks:
            f.write(raw)
