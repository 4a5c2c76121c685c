"""Reader for jaxcompress artifacts: one safetensors file, verified before anything runs.

File layout (plain safetensors, readable by the ``safetensors`` library too)::

    u64 little-endian N | N bytes of JSON header | data buffer
    header = {part_name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
              "__metadata__": {"format": "jaxcompress-artifact", "format_version": "1",
                               "manifest": <JSON string>, "manifest_sha256": <hex>}}

The manifest (JSON) holds the op graph, one entry per logical tensor (its encoding and the parts
it is stored in), the sha256 of every part, and the names of the bundled sample input and output.

Encodings of a logical float32 tensor of shape ``S`` (2-D view ``(K, N)``, ``N = S[-1]``,
``K = prod(S[:-1])``; parts are named ``<tensor>:<role>``):

| encoding   | parts (role: dtype, shape)                                       | meaning                     |
|------------|------------------------------------------------------------------|-----------------------------|
| `dense`    | `value`: float32 ``S`` (or int32/bool for constants)             | the tensor                  |
| `csr`      | `indptr`: int32 ``(N+1,)``, `indices`: uint16/int32 ``(nnz,)``,  | CSR over output channels;   |
|            | `values`: float32 ``(nnz,)`` or int8 codes + `scales` f32 (N,)   | ``W = scales[n] * code``    |
| `nm`       | `positions`: uint8 2-bit LSB-first stream of ``N*(K/m)*n`` slots | n of every m along K kept;  |
|            | (channel-major, then group, then slot); `values` f32 per slot or | unused slots hold value 0   |
|            | `codes` b-bit stream (``code + 2**(b-1)``) + `scales` f32 (G, N) |                             |
| `packed`   | `codes`: b-bit LSB-first stream of unsigned codes, channel-major | ``W = s * (u - z)``         |
|            | (``W.T`` row-major), `scales` f32 (G, N), `zero_points` u8 (G, N)|  z = 2**(b-1) if symmetric  |
|            | if affine; ``G = K / group_size`` or 1 (per channel)              |                             |
| `codebook` | `indices`: b-bit stream of indices in ``S`` row-major order,     | ``W = codebook[(c,) idx]``  |
|            | `codebook` f32 ``(k,)`` or ``(S[axis], k)`` per channel           |                             |
| `csr_codebook` | `indptr`, `indices` as `csr`; `codes`: b-bit stream of the   | Deep Compression: sparse    |
|            | nonzeros' codebook indices; `codebook` f32 ``(k,)`` or ``(N, k)``| + shared weights            |

Verification order in `load`: the file size and the header length are checked before the header is
read; the header is parsed and every part's dtype, shape and byte range is checked against the file
size (ranges must tile the data buffer exactly) before any data is read; then the format version,
the manifest checksum, every part's sha256, the graph's structure and every tensor's encoding are
checked. Only then is an `Artifact` returned. Any failure raises `ArtifactError`; nothing in the
file is executed or decoded before it passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct

import numpy as np

from jaxcompress_kernels._validate import csr_structure_error, nm_positions_error
from jaxcompress_kernels.errors import ArtifactError
from jaxcompress_kernels.format import ops as _ops
from jaxcompress_kernels.format.container import FORMAT, FORMAT_VERSION, READABLE_VERSIONS
from jaxcompress_kernels.format.encodings import (
    csr_codebook_values,
    decode_codes,
    decode_dense,
    unpack_indices,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Artifact",
    "TensorEntry",
    "load",
    "decode_dense",
    "decode_codes",
    "csr_codebook_values",
    "unpack_indices",
    "OPS",
]

MAX_HEADER_BYTES = 64 << 20
# a decoded tensor may be at most this many times larger than the whole file (plus 1 Mi elements):
# bounds the memory a small malicious file can make the loader allocate
MAX_EXPANSION = 256

_ST_DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "U16": np.uint16,
    "I32": np.int32,
    "U32": np.uint32,
    "I64": np.int64,
    "BOOL": np.bool_,
}

# the op set and value dtypes live in the format package (one home); re-exported here
UNARY_OPS = _ops.UNARY_OPS
BINARY_OPS = _ops.BINARY_OPS
OPS = frozenset(_ops.OPS)
ENCODINGS = ("dense", "csr", "nm", "packed", "codebook", "csr_codebook")
VALUE_DTYPES = _ops.VALUE_DTYPES


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One logical tensor: its encoding, logical shape and stored parts (read-only arrays)."""

    name: str
    encoding: str
    shape: tuple[int, ...]
    dtype: str
    parts: dict
    attrs: dict

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def kn(self) -> tuple[int, int]:
        """The 2-D matmul view ``(K, N)`` (``N = shape[-1]``)."""
        n = self.shape[-1] if self.shape else 1
        return (self.size // n if n else 0), n

    @property
    def stored_bytes(self) -> int:
        return sum(int(p.nbytes) for p in self.parts.values())


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A verified artifact: the manifest, the logical tensors, the sample input and output."""

    path: str
    file_bytes: int
    manifest: dict
    tensors: dict
    sample_input: np.ndarray
    sample_output: np.ndarray

    @property
    def graph(self) -> dict:
        return self.manifest["graph"]


def _fail(msg: str, path) -> ArtifactError:
    return ArtifactError(f"artifact {os.fspath(path)!r} refused: {msg}")


def _read_exact(f, n: int, path, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise _fail(f"truncated file while reading {what} ({len(b)} of {n} bytes)", path)
    return b


def _check_header(header, data_len: int, path) -> dict:
    if not isinstance(header, dict):
        raise _fail("header is not a JSON object", path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail("header has no __metadata__ string map", path)
    if meta.get("format") != FORMAT:
        raise _fail(f"not a {FORMAT} file (format={meta.get('format')!r})", path)
    if meta.get("format_version") not in [str(v) for v in READABLE_VERSIONS]:
        raise _fail(
            f"unknown format_version={meta.get('format_version')!r}; this runtime reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
            path,
        )
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _fail(f"bad header entry for part {name!r}", path)
        dt = _ST_DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
        if dt is None:
            raise _fail(f"part {name!r} has unsupported dtype {e['dtype']!r}", path)
        shape, offs = e["shape"], e["data_offsets"]
        if not (
            isinstance(shape, list)
            and len(shape) <= 8
            and all(type(s) is int and 0 <= s <= data_len * 8 for s in shape)
        ):
            raise _fail(f"part {name!r} has a bad shape {shape!r}", path)
        if not (
            isinstance(offs, list)
            and len(offs) == 2
            and all(type(o) is int for o in offs)
            and 0 <= offs[0] <= offs[1] <= data_len
        ):
            raise _fail(
                f"part {name!r} has byte range {offs!r} outside the data ({data_len} B)", path
            )
        nbytes = math.prod(shape) * np.dtype(dt).itemsize
        if offs[1] - offs[0] != nbytes:
            raise _fail(
                f"part {name!r}: byte range {offs} does not hold shape {shape} "
                f"{e['dtype']} ({nbytes} B)",
                path,
            )
        entries[name] = (np.dtype(dt), tuple(shape), offs[0], offs[1])
    # the ranges must tile the data buffer exactly (no gaps, no overlaps, nothing hidden)
    pos = 0
    for _, _, b, e in sorted(entries.values(), key=lambda t: (t[2], t[3])):
        if b != pos:
            raise _fail("part byte ranges overlap or leave gaps", path)
        pos = e
    if pos != data_len:
        raise _fail(f"parts cover {pos} of {data_len} data bytes", path)
    return entries


def load(path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> Artifact:
    """Reads and verifies an artifact; refuses a bad file with `ArtifactError`.

    Checks, in order: file size; header length against the file size and `max_header_bytes`;
    header JSON; format and ``format_version``; every part's dtype, shape and byte range (against
    the file size, before reading data); the manifest's sha256; every part's sha256; the graph's
    structure (known ops, defined inputs); every tensor's encoding (part dtypes and shapes, index
    ranges). Memory use is bounded by the file size (decoded tensors are capped at
    `MAX_EXPANSION` times it).

    Args:
      path: the artifact file.
      max_header_bytes: refuse headers longer than this.

    Returns:
      An `Artifact`.

    Raises:
      ArtifactError: the file fails any check; the message says which.
    """
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise ArtifactError(f"cannot open artifact {os.fspath(path)!r}: {e}") from None
    with f:
        if size < 8:
            raise _fail(f"file is {size} bytes, too short for a safetensors header", path)
        (n,) = struct.unpack("<Q", _read_exact(f, 8, path, "the header length"))
        if n < 2 or n > size - 8 or n > max_header_bytes:
            raise _fail(f"header length {n} is impossible for a {size}-byte file", path)
        raw = _read_exact(f, n, path, "the header")
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise _fail(f"header is not valid JSON ({type(e).__name__})", path) from None
        data_len = size - 8 - n
        entries = _check_header(header, data_len, path)
        meta = header["__metadata__"]
        mtext = meta.get("manifest", "")
        digest = hashlib.sha256(mtext.encode("utf-8", "surrogatepass")).hexdigest()
        if meta.get("manifest_sha256") != digest:
            raise _fail("manifest sha256 mismatch (the header was edited or corrupted)", path)
        try:
            manifest = json.loads(mtext)
        except (json.JSONDecodeError, RecursionError):
            raise _fail("manifest is not valid JSON", path) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
            raise _fail("manifest has no parts table", path)
        if set(manifest["parts"]) != set(entries):
            raise _fail("the manifest's parts do not match the file's parts", path)
        data = _read_exact(f, data_len, path, "the data buffer")
    parts = {}
    for name, (dt, shape, b, e) in entries.items():
        chunk = memoryview(data)[b:e]
        if hashlib.sha256(chunk).hexdigest() != manifest["parts"][name]:
            raise _fail(f"sha256 mismatch in part {name!r} (corrupted tensor data)", path)
        arr = np.frombuffer(chunk, dtype=dt.newbyteorder("<")).reshape(shape)
        arr = arr.astype(dt.newbyteorder("="), copy=True)
        arr.flags.writeable = False
        parts[name] = arr
    try:
        return _build(path, size, manifest, parts, meta["format_version"])
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise _fail(f"malformed manifest ({type(e).__name__}: {e})", path) from None


def _build(path, size, manifest, parts, header_version) -> Artifact:
    if manifest.get("format_version") not in READABLE_VERSIONS or str(
        manifest.get("format_version")
    ) != str(header_version):
        raise _fail(f"manifest format_version={manifest.get('format_version')!r} is unknown", path)
    cap = MAX_EXPANSION * size + (1 << 20)
    tensors = {}
    spec = manifest["tensors"]
    if not isinstance(spec, dict):
        raise _fail("manifest tensors is not a map", path)
    owner: dict = {}
    for name, t in spec.items():
        entry = _entry(name, t, parts, cap, path)
        for role, p in entry.parts.items():
            # one stored part belongs to one tensor role: many tensors decoding one small part
            # would multiply the memory a small file makes the loader use
            prev = owner.setdefault(id(p), (name, role))
            if prev != (name, role):
                raise _fail(
                    f"tensor {name!r} part {role!r} reuses the part of tensor {prev[0]!r} "
                    f"({prev[1]!r}); every stored part belongs to one tensor",
                    path,
                )
        tensors[name] = entry
    sample = manifest["sample"]
    xin, xout = parts[sample["input"]], parts[sample["output"]]
    if xin.dtype != np.float32 or xout.dtype != np.float32:
        raise _fail("sample input/output must be float32", path)
    _check_graph(manifest["graph"], tensors, xin, path, cap)
    return Artifact(
        path=os.fspath(path),
        file_bytes=size,
        manifest=manifest,
        tensors=tensors,
        sample_input=xin,
        sample_output=xout,
    )


def _part(parts, t, role, dtypes, path, name, ndim=None):
    pname = t["parts"][role]
    if not isinstance(pname, str) or pname not in parts:
        raise _fail(f"tensor {name!r}: missing part {role!r}", path)
    a = parts[pname]
    if a.dtype.name not in dtypes:
        raise _fail(f"tensor {name!r}: part {role!r} has dtype {a.dtype}, expected {dtypes}", path)
    if ndim is not None and a.ndim != ndim:
        raise _fail(f"tensor {name!r}: part {role!r} must be {ndim}-D, got {a.shape}", path)
    return a


def _packed_len(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _entry(name, t, parts, cap, path) -> TensorEntry:
    if not isinstance(t, dict) or not isinstance(name, str):
        raise _fail(f"bad tensor entry {name!r}", path)
    enc = t["encoding"]
    if enc not in ENCODINGS:
        raise _fail(f"tensor {name!r} has unknown encoding {enc!r}", path)
    shape = t["shape"]
    if not (
        isinstance(shape, list)
        and len(shape) <= 8
        and all(type(s) is int and s >= 0 for s in shape)
    ):
        raise _fail(f"tensor {name!r} has a bad shape {shape!r}", path)
    shape = tuple(shape)
    dtype = t.get("dtype", "float32")
    if dtype not in VALUE_DTYPES:
        raise _fail(f"tensor {name!r} has unsupported dtype {dtype!r}", path)
    size = math.prod(shape)
    if size > cap:
        raise _fail(f"tensor {name!r} of shape {shape} is larger than the file allows", path)
    attrs = {k: v for k, v in t.items() if k not in ("encoding", "shape", "dtype", "parts")}
    roles = t["parts"]
    if not isinstance(roles, dict):
        raise _fail(f"tensor {name!r}: parts is not a map", path)
    got = {}
    n = shape[-1] if shape else 1
    k = size // n if n else 0
    if enc != "dense" and (len(shape) < 1 or dtype != "float32"):
        raise _fail(f"tensor {name!r}: encoding {enc!r} needs a float32 tensor of rank >= 1", path)
    if enc == "dense":
        v = _part(parts, t, "value", (dtype,), path, name)
        if v.shape != shape:
            raise _fail(f"tensor {name!r}: value shape {v.shape} != {shape}", path)
        got["value"] = v
    elif enc in ("csr", "csr_codebook"):
        ip = _part(parts, t, "indptr", ("int32", "int64"), path, name, 1)
        ix = _part(parts, t, "indices", ("uint16", "int32"), path, name, 1)
        nnz = ix.shape[0]
        if ip.shape != (n + 1,):
            raise _fail(f"tensor {name!r}: csr part shapes do not match (K, N)=({k}, {n})", path)
        if ip[0] != 0 or ip[-1] != nnz or (np.diff(ip.astype(np.int64)) < 0).any():
            raise _fail(f"tensor {name!r}: csr indptr is not monotone from 0 to nnz", path)
        if nnz and (int(ix.min()) < 0 or int(ix.max()) >= k):
            raise _fail(f"tensor {name!r}: csr index out of range", path)
        if msg := csr_structure_error(ip, ix, k):  # duplicate / unsorted columns in a row
            raise _fail(f"tensor {name!r}: csr {msg}", path)
        got.update(indptr=ip, indices=ix)
        if enc == "csr_codebook":
            bits = _bits(t, name, path, lo=1)
            codes = _part(parts, t, "codes", ("uint8",), path, name, 1)
            if codes.shape != (_packed_len(nnz, bits),):
                raise _fail(f"tensor {name!r}: codebook codes have {codes.shape[0]} bytes", path)
            cb = _part(parts, t, "codebook", ("float32",), path, name)
            per_channel = t.get("axis") is not None
            if per_channel and t.get("axis") != len(shape) - 1:
                raise _fail(f"tensor {name!r}: csr_codebook axis must be the last axis", path)
            want = 2 if per_channel else 1
            if (
                cb.ndim != want
                or not 1 <= cb.shape[-1] <= (1 << bits)
                or (per_channel and cb.shape[0] != n)
            ):
                raise _fail(f"tensor {name!r}: codebook shape {cb.shape} does not match", path)
            got.update(codes=codes, codebook=cb)
            if set(got) != set(roles):
                raise _fail(f"tensor {name!r}: unexpected parts", path)
            return TensorEntry(
                name=name, encoding=enc, shape=shape, dtype=dtype, parts=got, attrs=attrs
            )
        vals = _part(parts, t, "values", ("float32", "int8"), path, name, 1)
        if vals.shape != (nnz,):
            raise _fail(f"tensor {name!r}: csr values must hold nnz={nnz}", path)
        got["values"] = vals
        if vals.dtype == np.int8:
            sc = _part(parts, t, "scales", ("float32",), path, name)
            if sc.shape != (n,) or not np.isfinite(sc).all():
                raise _fail(f"tensor {name!r}: csr scales must be ({n},) and finite", path)
            got["scales"] = sc
    elif enc == "nm":
        nk, m = t["n"], t["m"]
        if type(nk) is not int or type(m) is not int or not (1 <= nk < m <= 16) or k % m:
            raise _fail(f"tensor {name!r}: bad n:m={nk}:{m} for K={k}", path)
        slots = n * (k // m) * nk
        pos = _part(parts, t, "positions", ("uint8",), path, name, 1)
        pbits = max(1, (m - 1).bit_length())
        if pos.shape != (_packed_len(slots, pbits),):
            raise _fail(f"tensor {name!r}: positions has {pos.shape[0]} bytes", path)
        if msg := nm_positions_error(_unpack(pos, pbits, slots).reshape(-1, nk), m):
            raise _fail(f"tensor {name!r}: {msg}", path)
        got["positions"] = pos
        if "values" in roles:
            vals = _part(parts, t, "values", ("float32",), path, name, 1)
            if vals.shape != (slots,):
                raise _fail(f"tensor {name!r}: nm values must hold {slots} slots", path)
            got["values"] = vals
        else:
            bits = _bits(t, name, path)
            if t.get("symmetric", True) is not True:
                raise _fail(f"tensor {name!r}: quantized nm tensors must be symmetric", path)
            codes = _part(parts, t, "codes", ("uint8",), path, name, 1)
            if codes.shape != (_packed_len(slots, bits),):
                raise _fail(f"tensor {name!r}: nm codes have {codes.shape[0]} bytes", path)
            got["codes"] = codes
            got["scales"] = _scales(parts, t, name, path, k, n)
    elif enc == "packed":
        bits = _bits(t, name, path)
        codes = _part(parts, t, "codes", ("uint8",), path, name, 1)
        if codes.shape != (_packed_len(size, bits),):
            raise _fail(f"tensor {name!r}: packed codes have {codes.shape[0]} bytes", path)
        got["codes"] = codes
        got["scales"] = sc = _scales(parts, t, name, path, k, n)
        if not isinstance(t.get("symmetric"), bool):
            raise _fail(f"tensor {name!r}: symmetric must be true or false", path)
        if not t["symmetric"]:
            zp = _part(parts, t, "zero_points", ("uint8",), path, name)
            if zp.shape != sc.shape or (zp.size and int(zp.max()) >= (1 << bits)):
                raise _fail(f"tensor {name!r}: zero_points do not match the scales", path)
            got["zero_points"] = zp
    else:  # codebook
        bits = _bits(t, name, path, lo=1)
        idx = _part(parts, t, "indices", ("uint8",), path, name, 1)
        if idx.shape != (_packed_len(size, bits),):
            raise _fail(f"tensor {name!r}: codebook indices have {idx.shape[0]} bytes", path)
        cb = _part(parts, t, "codebook", ("float32",), path, name)
        axis = t.get("axis")
        if axis is None:
            ok = cb.ndim == 1 and 1 <= cb.shape[0] <= (1 << bits)
        else:
            ok = (
                type(axis) is int
                and 0 <= axis < len(shape)
                and cb.ndim == 2
                and cb.shape[0] == shape[axis]
                and 1 <= cb.shape[1] <= (1 << bits)
            )
        if not ok:
            raise _fail(f"tensor {name!r}: codebook shape {cb.shape} does not match", path)
        got.update(indices=idx, codebook=cb)
    if set(got) != set(roles):
        raise _fail(f"tensor {name!r}: unexpected parts {sorted(set(roles) - set(got))}", path)
    return TensorEntry(name=name, encoding=enc, shape=shape, dtype=dtype, parts=got, attrs=attrs)


def _bits(t, name, path, lo=2) -> int:
    bits = t.get("bits")
    if type(bits) is not int or not lo <= bits <= 8:
        raise _fail(f"tensor {name!r}: bits={bits!r} must be in {lo}..8", path)
    return bits


def _scales(parts, t, name, path, k, n) -> np.ndarray:
    sc = _part(parts, t, "scales", ("float32",), path, name, 2)
    gs = t.get("group_size")
    if gs is None:
        want = (1, n)
    elif type(gs) is int and gs >= 1 and k % gs == 0:
        want = (k // gs, n)
    else:
        raise _fail(f"tensor {name!r}: group_size={gs!r} must divide K={k}", path)
    if sc.shape != want:
        raise _fail(f"tensor {name!r}: scales shape {sc.shape} != {want}", path)
    if sc.size and not np.isfinite(sc).all():
        raise _fail(f"tensor {name!r}: scales are not finite", path)
    return sc


def _check_graph(g, tensors, xin, path, cap) -> None:
    """The graph's structure: one named input, every node valid against its op spec
    (`jaxcompress_kernels.format.ops`: known op, input count, every attribute's schema), inputs
    defined before use, outputs defined. Shapes and sizes are checked by the runtime's plan."""
    if not isinstance(g, dict):
        raise _fail("graph is not a map", path)
    inputs, outputs, nodes = g["inputs"], g["outputs"], g["nodes"]
    if g.get("batch") not in ("symbolic", "static"):
        raise _fail("graph batch mode must be 'symbolic' or 'static'", path)
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], str)):
        raise _fail("graph must have exactly one named input", path)
    shapes = g["input_shapes"]
    if not (
        isinstance(shapes, list)
        and len(shapes) == 1
        and isinstance(shapes[0], list)
        and len(shapes[0]) < _ops.MAX_RANK
        and all(type(s) is int and 0 <= s <= cap for s in shapes[0])
    ):
        raise _fail("graph input_shapes is malformed", path)
    if xin.ndim < 1 or list(xin.shape[1:]) != shapes[0]:
        raise _fail(f"sample input shape {xin.shape} does not match the graph input", path)
    if inputs[0] in tensors:
        raise _fail("the graph input's name is also a tensor's", path)
    defined = set(tensors) | set(inputs)
    if not isinstance(nodes, list) or not isinstance(outputs, list) or not outputs:
        raise _fail("graph nodes/outputs are malformed", path)
    for i, node in enumerate(nodes):
        try:
            spec = _ops.validate_node(i, node)
        except ArtifactError as e:
            raise _fail(str(e), path) from None
        for r in node["in"]:
            if isinstance(r, str) and r not in defined:
                raise _fail(f"graph node {i} ({spec.name}) reads undefined {r!r}", path)
        for key in ("weight", "weight_scale", "bias"):
            if key in node and node[key] not in tensors:
                raise _fail(
                    f"graph node {i} ({spec.name}) names undefined {key} {node[key]!r}", path
                )
        if "weight" in node and spec.name not in _ops.QUANT_OPS:
            w = node["weight"]
            if len(tensors[w].shape) < 2 or tensors[w].dtype != "float32":
                raise _fail(f"graph node {i} has a bad weight {w!r}", path)
        if node["out"] in defined:
            raise _fail(f"graph node {i} output name is missing or redefined", path)
        defined.add(node["out"])
    for o in outputs:
        if not isinstance(o, str) or o not in defined:
            raise _fail(f"graph output {o!r} is undefined", path)
    try:  # full-integer graphs: every int8 value's (scale, zero point) and the q-ops' operands
        _ops.validate_quant(g, tensors)
    except ArtifactError as e:
        raise _fail(str(e), path) from None


# ----------------------------------------------------------------------------------------------
# decoding: the encodings' decoders live beside their encoders in the format package


def _unpack(stream: np.ndarray, bits: int, count: int) -> np.ndarray:
    from jaxcompress_kernels.packing import unpack_bits

    return unpack_bits(np.ascontiguousarray(stream), bits, count)
