"""The artifact container: a plain safetensors file whose metadata holds the checksummed manifest.

Layout: ``u64 little-endian N | N bytes of JSON header | data buffer``; the header maps each part
name to ``{"dtype", "shape", "data_offsets"}`` and ``__metadata__`` to
``{"format", "format_version", "manifest", "manifest_sha256"}``. The manifest (JSON) holds the
graph, the tensors' encodings and the sha256 of every part. `write_artifact` is the only writer
(export calls it); `jaxcompress_kernels.artifact.load` is the verifying reader.

Writes are deterministic (parts in name order, JSON with sorted keys: the same model and options
give byte-identical files) and atomic (`atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.fileio import atomic_write, stale_temporaries

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "write_artifact",
    "atomic_write",
    "stale_temporaries",
]

FORMAT = "jaxcompress-artifact"
# 2: conv nodes may carry "groups" (grouped / depthwise convolution); every node is validated
# against its op spec (unknown attributes refused).
# 3: full-integer graphs: the q-ops (`ops.QUANT_OPS`) and the graph's per-value quantization
# record ``graph["quant"]`` (`ops.validate_quant`). Versions 1 and 2 are still read.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int16): "I16",
    np.dtype(np.uint16): "U16",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint32): "U32",
    np.dtype(np.int64): "I64",
    np.dtype(np.bool_): "BOOL",
}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def container_bytes(manifest: dict, parts: dict) -> bytes:
    """The artifact's bytes: `manifest` (without ``parts``/``format``/``format_version``, which
    are filled in) plus the named arrays `parts`."""
    if not isinstance(manifest, dict):
        raise JaxCompressTypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    arrays = {}
    for name in sorted(parts):
        a = np.ascontiguousarray(parts[name])
        if a.dtype not in _DTYPES:
            raise JaxCompressValueError(f"part {name!r} has unsupported dtype {a.dtype}")
        arrays[name] = a.astype(a.dtype.newbyteorder("<"), copy=False)
    m = dict(manifest)
    m["format"] = FORMAT
    m["format_version"] = FORMAT_VERSION
    m["parts"] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()}
    mtext = _canonical(m)
    header = {
        "__metadata__": {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "manifest": mtext,
            "manifest_sha256": hashlib.sha256(mtext.encode()).hexdigest(),
        }
    }
    pos = 0
    for name, a in arrays.items():
        header[name] = {
            "dtype": _DTYPES[a.dtype.newbyteorder("=")],
            "shape": list(a.shape),
            "data_offsets": [pos, pos + a.nbytes],
        }
        pos += a.nbytes
    h = _canonical(header).encode()
    h += b" " * (-len(h) % 8)  # safetensors aligns the data buffer to 8 bytes
    return b"".join([struct.pack("<Q", len(h)), h, *(a.tobytes() for a in arrays.values())])


def write_artifact(path, manifest: dict, parts: dict) -> int:
    """Writes an artifact atomically; returns its size in bytes."""
    data = container_bytes(manifest, parts)
    atomic_write(os.fspath(path), data)
    return len(data)
