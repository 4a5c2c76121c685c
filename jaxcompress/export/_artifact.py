"""``save``: write a compressed model as one verified safetensors artifact (format in
``jaxcompress_kernels.artifact``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, key_path_str
from jaxcompress.export._capture import capture
from jaxcompress.quantization import QuantizedArray, dequantize_params, is_compressed
from jaxcompress.quantization._numerics import stored_offset
from jaxcompress_kernels.format.container import write_artifact
from jaxcompress_kernels.packing import pack_bits

__all__ = ["ExportInfo", "save", "resolve_apply", "reference_output"]

SAMPLE_INPUT = "__sample__:input"
SAMPLE_OUTPUT = "__sample__:output"


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """What `save` wrote.

    Attributes:
      path: the artifact file.
      file_bytes: its size.
      tensors: ``{name: {"encoding", "shape", "stored_bytes", "bits_per_weight"}}``.
      weight_count: elements in rank >= 2 parameters (kernels, embeddings).
      weight_bytes: bytes those parameters take in the file (codes, indices, scales, codebooks).
      bits_per_weight: ``8 * weight_bytes / weight_count``.
      graph_ops: ``{op: count}`` of the exported graph.
      folded: ``{kernel name: number of affine nodes folded into it}`` (batch norm folding).
    """

    path: str
    file_bytes: int
    tensors: dict
    weight_count: int
    weight_bytes: int
    bits_per_weight: float
    graph_ops: dict
    folded: dict = dataclasses.field(default_factory=dict)


def resolve_apply(model_or_apply: Any):
    """``apply(params, x) -> logits`` for an nnx module, a linen module or a callable."""
    try:
        import flax.linen as nn
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        nn = nnx = None
    if nnx is not None and isinstance(model_or_apply, nnx.Module):
        from jaxcompress.models import functional

        apply_fn, _ = functional(model_or_apply)
        return lambda p, x: apply_fn(p, x)
    if nn is not None and isinstance(model_or_apply, nn.Module):
        return lambda p, x: model_or_apply.apply(p, x)
    if callable(model_or_apply):
        return lambda p, x: model_or_apply(p, x)
    raise JaxCompressTypeError(
        f"model_or_apply must be an nnx/linen module or apply(params, x), got "
        f"{type(model_or_apply).__name__}"
    )


_JIT_CACHE: dict[int, tuple[Any, Any]] = {}


def _jitted(model_or_apply):
    """One ``jax.jit`` of the forward function per model object (no recompiles across calls)."""
    hit = _JIT_CACHE.get(id(model_or_apply))
    if hit is None or hit[0] is not model_or_apply:
        if len(_JIT_CACHE) > 64:
            _JIT_CACHE.clear()
        hit = (model_or_apply, jax.jit(resolve_apply(model_or_apply)))
        _JIT_CACHE[id(model_or_apply)] = hit
    return hit[1]


def reference_output(model_or_apply, params, x) -> np.ndarray:
    """The JAX model's output with compressed leaves dequantized (what the runtime must match)."""
    x = np.asarray(x, np.float32)
    return np.asarray(_jitted(model_or_apply)(dequantize_params(params), x), np.float32)


# ---------------------------------------------------------------------------------------------
# encodings


def _kn(shape) -> tuple[int, int]:
    n = shape[-1]
    return (int(np.prod(shape)) // n if n else 0), n


def _nm_structure(w2: np.ndarray, m: int = 4) -> int | None:
    """n (1 or 2) if every group of m consecutive K values of every column keeps <= n nonzeros."""
    k, n = w2.shape
    if k % m or k == 0 or n == 0:
        return None
    cnt = (w2 != 0).reshape(k // m, m, n).sum(1)
    mx = int(cnt.max())
    return max(mx, 1) if mx <= m // 2 else None


def _nm_slots(vals2: np.ndarray, nk: int, m: int = 4):
    """(K, N) -> (positions (N*G*nk,) uint8, slot values (N*G*nk,)) channel-major."""
    k, n = vals2.shape
    g = k // m
    grp = np.ascontiguousarray(vals2.T).reshape(n, g, m)
    nz = grp != 0
    # kept entries first (by position), then unused positions to fill the remaining slots
    order = np.argsort(~nz, axis=2, kind="stable")[:, :, :nk]
    vals = np.take_along_axis(grp, order, axis=2)
    return order.astype(np.uint8).reshape(-1), vals.reshape(-1)


def _unwrap(leaf: Any) -> Any:
    """The array (or QuantizedArray/ClusteredArray) inside an ``nnx.Variable``."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return leaf
    if isinstance(leaf, nnx.Variable):
        return leaf.get_value() if hasattr(leaf, "get_value") else leaf.value
    return leaf


def _pack_unsigned(u: np.ndarray, bits: int) -> np.ndarray:
    return pack_bits(np.ascontiguousarray(u.reshape(-1), np.uint8), bits)


class _Writer:
    def __init__(self, sparse_threshold: float, nm: bool):
        self.parts: dict[str, np.ndarray] = {}
        self.tensors: dict[str, dict] = {}
        self.sparse_threshold = sparse_threshold
        self.nm = nm

    def part(self, tensor: str, role: str, arr: np.ndarray) -> str:
        name = f"{tensor}:{role}"
        self.parts[name] = np.ascontiguousarray(arr)
        return name

    def add(self, name: str, leaf: Any) -> None:
        leaf = _unwrap(leaf)
        if isinstance(leaf, QuantizedArray):
            self.quantized(name, leaf)
        elif is_compressed(leaf):  # ClusteredArray
            self.clustered(name, leaf)
        else:
            self.plain(name, np.asarray(leaf))

    def dense(self, name, arr, **attrs):
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        self.tensors[name] = {
            "encoding": "dense",
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "parts": {"value": self.part(name, "value", arr)},
            **attrs,
        }

    def plain(self, name, w):
        if w.dtype.kind != "f" or w.ndim < 2 or w.size == 0:
            return self.dense(name, w)
        w = w.astype(np.float32)
        k, n = _kn(w.shape)
        w2 = w.reshape(k, n)
        density = np.count_nonzero(w2) / w2.size
        if density > self.sparse_threshold:
            return self.dense(name, w)
        nk = _nm_structure(w2) if self.nm else None
        base = {"shape": list(w.shape), "dtype": "float32"}
        if nk is not None:
            pos, vals = _nm_slots(w2, nk)
            self.tensors[name] = {
                "encoding": "nm",
                **base,
                "n": nk,
                "m": 4,
                "parts": {
                    "positions": self.part(name, "positions", pack_bits(pos, 2)),
                    "values": self.part(name, "values", vals.astype(np.float32)),
                },
            }
            return None
        self.csr(name, w2, base, w2)
        return None

    def csr(self, name, keep2, base, values2, scales=None):
        k, n = keep2.shape
        kt = keep2.T != 0
        indptr = np.zeros(n + 1, np.int32)
        np.cumsum(kt.sum(1), out=indptr[1:])
        rows, cols = np.nonzero(kt)
        parts = {
            "indptr": self.part(name, "indptr", indptr),
            "indices": self.part(
                name, "indices", cols.astype(np.uint16 if k <= 65536 else np.int32)
            ),
            "values": self.part(name, "values", np.ascontiguousarray(values2.T[rows, cols])),
        }
        if scales is not None:
            parts["scales"] = self.part(name, "scales", scales)
        self.tensors[name] = {"encoding": "csr", **base, "parts": parts}

    def quantized(self, name, q: QuantizedArray):
        shape = tuple(q.shape)
        deq = np.asarray(q._dequantize(), np.float32)
        if len(shape) < 2 or (q.axis is not None and q.axis != len(shape) - 1):
            # only output-channel (last axis) scales map to the kernels' layout
            return self.dense(name, deq, note=f"quantized with axis={q.axis}; stored dense")
        k, n = _kn(shape)
        bits = int(q.bits)
        off = stored_offset(bits, q.scheme)
        codes = (np.asarray(q.qvalue, np.int32) - off).reshape(k, n)
        zps = np.asarray(q.zero_point, np.int32) - off
        scale = np.asarray(q.scale, np.float32)
        if q.axis is None:
            scales = np.full((1, n), scale, np.float32)
            zps = np.full((1, n), zps, np.int32)
        elif q.group_size is None:
            scales = scale.reshape(1, n)
            zps = zps.reshape(1, n)
        else:
            scales = scale.reshape(k // q.group_size, n)
            zps = zps.reshape(k // q.group_size, n)
        symmetric = q.scheme != "affine"
        half = 1 << (bits - 1)
        base = {
            "shape": list(shape),
            "dtype": "float32",
            "bits": bits,
            "group_size": q.group_size,
            "symmetric": symmetric,
            "scheme": q.scheme,
        }
        density = np.count_nonzero(codes) / codes.size if codes.size else 1.0
        if symmetric and density <= self.sparse_threshold:
            nk = _nm_structure(codes) if self.nm else None
            if nk is not None:
                pos, slot_codes = _nm_slots(codes, nk)
                self.tensors[name] = {
                    "encoding": "nm",
                    **base,
                    "n": nk,
                    "m": 4,
                    "parts": {
                        "positions": self.part(name, "positions", pack_bits(pos, 2)),
                        "codes": self.part(name, "codes", _pack_unsigned(slot_codes + half, bits)),
                        "scales": self.part(name, "scales", scales),
                    },
                }
                return None
            nnz = int(np.count_nonzero(codes))
            csr_bytes = nnz * (1 + (2 if k <= 65536 else 4)) + 8 * n + 4
            if scales.shape[0] == 1 and csr_bytes < (k * n * bits + 7) // 8:
                base = {"shape": list(shape), "dtype": "float32", "bits": bits, "scheme": q.scheme}
                return self.csr(name, codes, base, codes.astype(np.int8), scales[0])
        u = codes + (half if symmetric else 0)
        parts = {
            "codes": self.part(name, "codes", _pack_unsigned(u.T, bits)),
            "scales": self.part(name, "scales", scales),
        }
        if not symmetric:
            parts["zero_points"] = self.part(name, "zero_points", zps.astype(np.uint8))
        self.tensors[name] = {"encoding": "packed", **base, "parts": parts}
        return None

    def clustered(self, name, c):
        shape = tuple(c.shape)
        bits = int(c.bits)
        idx = np.asarray(c.indices, np.uint8)
        cb = np.asarray(c.codebook, np.float32)
        if c.zero_index and len(shape) >= 2 and c.axis in (None, len(shape) - 1):
            # Deep Compression: pruned + shared weights -> CSR positions + codebook indices
            k, n = _kn(shape)
            idx2 = idx.reshape(k, n)
            nnz = int(np.count_nonzero(idx2))
            csr_bytes = nnz * (2 if k <= 65536 else 4) + (nnz * bits + 7) // 8 + 4 * (n + 1)
            if nnz <= self.sparse_threshold * idx2.size and csr_bytes < (idx2.size * bits + 7) // 8:
                kt = idx2.T != 0
                indptr = np.zeros(n + 1, np.int32)
                np.cumsum(kt.sum(1), out=indptr[1:])
                rows, cols = np.nonzero(kt)
                codes = np.ascontiguousarray(idx2.T[rows, cols])
                self.tensors[name] = {
                    "encoding": "csr_codebook",
                    "shape": list(shape),
                    "dtype": "float32",
                    "bits": bits,
                    "axis": c.axis,
                    "parts": {
                        "indptr": self.part(name, "indptr", indptr),
                        "indices": self.part(
                            name, "indices", cols.astype(np.uint16 if k <= 65536 else np.int32)
                        ),
                        "codes": self.part(name, "codes", _pack_unsigned(codes, bits)),
                        "codebook": self.part(name, "codebook", cb),
                    },
                }
                return
        self.tensors[name] = {
            "encoding": "codebook",
            "shape": list(shape),
            "dtype": "float32",
            "bits": bits,
            "axis": c.axis,
            "parts": {
                "indices": self.part(name, "indices", _pack_unsigned(idx, bits)),
                "codebook": self.part(name, "codebook", cb),
            },
        }


# ---------------------------------------------------------------------------------------------


def save(
    path: str | os.PathLike,
    model_or_apply: Any,
    params: Any,
    example_input: Any,
    *,
    sparse_threshold: float = 0.5,
    nm: bool = True,
    fold: bool = True,
    description: str = "",
) -> ExportInfo:
    """Exports a (compressed) model to one artifact file the edge runtime can run without JAX.

    The graph is captured from the model's own forward function (``jax.make_jaxpr``); every
    parameter leaf is stored under its key path with an encoding chosen from the leaf:

    - ``QuantizedArray`` with per-tensor / per-output-channel / per-group scales: ``packed``
      b-bit codes + scales (+ zero points); symmetric codes that are N:M sparse along K: ``nm``;
      symmetric per-channel codes with density <= `sparse_threshold`: ``csr`` with int8 codes
      when that is smaller than the packed codes.
    - ``ClusteredArray``: ``codebook`` (b-bit packed indices + codebook); pruned ones (reserved
      zero, density <= `sparse_threshold`): ``csr_codebook`` (CSR positions + b-bit indices of the
      nonzeros + codebook, Deep Compression's storage).
    - float arrays of rank >= 2 (pruned: exact zeros) with density <= `sparse_threshold`: ``nm``
      when every group of 4 along K keeps <= 2, else ``csr``; otherwise ``dense``.

    The file also bundles `example_input` and the JAX model's output on it (compressed leaves
    dequantized; several outputs are flattened and concatenated in graph order, their shapes in
    the manifest's ``sample.output_shapes``), and the sha256 of every stored part. It is written
    atomically (temporary file + fsync + ``os.replace``): an export killed half-way leaves any
    earlier file intact, and the next save of the same path removes the temporary it left.

    Args:
      path: destination file (conventionally ``*.jcx`` or ``*.safetensors``).
      model_or_apply: an ``nnx.Module`` (run through ``jaxcompress.models.functional``), a linen
        module (``module.apply(params, x)``), or ``apply(params, x) -> logits``.
      params: the parameter pytree, possibly with ``QuantizedArray``/``ClusteredArray`` leaves.
      example_input: ``(batch, ...)`` float32 input, bundled as the self-check sample.
      sparse_threshold: store rank >= 2 leaves sparsely when at most this fraction is nonzero.
      nm: detect N:M (1:4, 2:4) structure and store it as ``nm``.
      fold: fold per-channel affine chains that follow a float (uncompressed) dense/conv kernel
        into it (inference-mode batch norm: ``W' = W * gamma / sqrt(var + eps)``, one bias add).
        Compressed kernels are never rewritten (their codes are what was trained).
      description: free text kept in the manifest.

    Returns:
      An :class:`ExportInfo`.

    Raises:
      JaxCompressValueError: unsupported primitive (the message names it), layout or arguments.
      JaxCompressTypeError: `model_or_apply` is not a model or callable.

    Example:
      >>> from flax import nnx
      >>> from jaxcompress.models import LeNet300100, functional
      >>> apply_fn, params = functional(LeNet300100(rngs=nnx.Rngs(0)))
      >>> info = save("/tmp/lenet.jcx", apply_fn, params, np.zeros((1, 28, 28, 1), np.float32))
    """
    if not 0.0 <= float(sparse_threshold) <= 1.0:
        raise JaxCompressValueError(f"{sparse_threshold=} must be in [0, 1]")
    path = os.fspath(path)
    apply = resolve_apply(model_or_apply)
    x = np.asarray(example_input)
    if x.dtype.kind != "f":
        raise JaxCompressValueError(f"example_input.dtype={x.dtype} must be floating")
    x = x.astype(np.float32)
    dense_params = dequantize_params(params)
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_compressed)
    leaves = {key_path_str(p): _unwrap(leaf) for p, leaf in flat}
    plain = {n for n, leaf in leaves.items() if not is_compressed(leaf)}
    cap = capture(apply, dense_params, x, foldable=plain if fold else set())
    w = _Writer(float(sparse_threshold), bool(nm))
    for name in cap.params:
        w.add(name, cap.params[name] if name in plain else leaves[name])
    for name, arr in cap.consts.items():
        w.dense(name, arr)
    ys = jax.tree.leaves(_jitted(model_or_apply)(dense_params, x))  # graph output order
    ys = [np.asarray(v, np.float32) for v in ys]
    sample = {"input": SAMPLE_INPUT, "output": SAMPLE_OUTPUT}
    y = ys[0]
    if len(ys) > 1:  # several outputs: flattened and concatenated, their shapes in the manifest
        y = np.concatenate([v.reshape(-1) for v in ys])
        sample["output_shapes"] = [list(v.shape) for v in ys]
    w.parts[SAMPLE_INPUT] = np.ascontiguousarray(x)
    w.parts[SAMPLE_OUTPUT] = np.ascontiguousarray(y)
    import jaxcompress

    manifest = {
        "producer": {
            "jaxcompress": getattr(jaxcompress, "__version__", "?"),
            "jax": jax.__version__,
        },
        "description": description,
        "graph": cap.graph,
        "tensors": w.tensors,
        "sample": sample,
    }
    file_bytes = write_artifact(path, manifest, w.parts)
    tinfo, wcount, wbytes = {}, 0, 0
    for name, t in w.tensors.items():
        nbytes = sum(w.parts[p].nbytes for p in t["parts"].values())
        count = int(np.prod(t["shape"]))
        tinfo[name] = {
            "encoding": t["encoding"],
            "shape": tuple(t["shape"]),
            "stored_bytes": nbytes,
            "bits_per_weight": 8 * nbytes / count if count else 0.0,
        }
        if len(t["shape"]) >= 2 and not name.startswith("const/"):
            wcount += count
            wbytes += nbytes
    ops: dict[str, int] = {}
    for node in cap.graph["nodes"]:
        ops[node["op"]] = ops.get(node["op"], 0) + 1
    return ExportInfo(
        path=path,
        file_bytes=file_bytes,
        tensors=tinfo,
        weight_count=wcount,
        weight_bytes=wbytes,
        bits_per_weight=8 * wbytes / max(wcount, 1),
        graph_ops=ops,
        folded=dict(cap.folded),
    )
