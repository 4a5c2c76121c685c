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
from jaxcompress.quantization import (
    QuantizedArray,
    dequantize_params,
    is_compressed,
    stored_offset,
)
from jaxcompress_kernels.format import encodings as enc
from jaxcompress_kernels.format.container import write_artifact

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


def _unwrap(leaf: Any) -> Any:
    """The array (or QuantizedArray/ClusteredArray) inside an ``nnx.Variable``."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return leaf
    if isinstance(leaf, nnx.Variable):
        return leaf.get_value() if hasattr(leaf, "get_value") else leaf.value
    return leaf


class _Writer:
    """Chooses each leaf's encoding and stores it with the format package's encoders."""

    def __init__(self, sparse_threshold: float, nm: bool):
        self.parts: dict[str, np.ndarray] = {}
        self.tensors: dict[str, dict] = {}
        self.sparse_threshold = sparse_threshold
        self.nm = nm

    def put(self, name: str, encoded, **extra) -> None:
        entry, parts = encoded
        roles = {}
        for role, arr in parts.items():
            roles[role] = f"{name}:{role}"
            self.parts[roles[role]] = np.ascontiguousarray(arr)
        self.tensors[name] = {**entry, **extra, "parts": roles}

    def add(self, name: str, leaf: Any) -> None:
        leaf = _unwrap(leaf)
        if isinstance(leaf, QuantizedArray):
            self.quantized(name, leaf)
        elif is_compressed(leaf):  # ClusteredArray
            self.clustered(name, leaf)
        else:
            self.plain(name, np.asarray(leaf))

    def dense(self, name, arr, **attrs):
        self.put(name, enc.encode_dense(arr), **attrs)

    def plain(self, name, w):
        if w.dtype.kind != "f" or w.ndim < 2 or w.size == 0:
            return self.dense(name, w)
        w = w.astype(np.float32)
        k, n = enc.kn(w.shape)
        w2 = w.reshape(k, n)
        if np.count_nonzero(w2) / w2.size > self.sparse_threshold:
            return self.dense(name, w)
        nk = enc.nm_structure(w2) if self.nm else None
        if nk is not None:
            return self.put(name, enc.encode_nm(w.shape, w2, nk))
        return self.put(name, enc.encode_csr(w.shape, w2, w2))

    def quantized(self, name, q: QuantizedArray):
        shape = tuple(q.shape)
        deq = np.asarray(q.dequantize(), np.float32)
        if len(shape) < 2 or (q.axis is not None and q.axis != len(shape) - 1):
            # only output-channel (last axis) scales map to the kernels' layout
            return self.dense(name, deq, note=f"quantized with axis={q.axis}; stored dense")
        k, n = enc.kn(shape)
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
        attrs = {"group_size": q.group_size, "scheme": q.scheme}
        density = np.count_nonzero(codes) / codes.size if codes.size else 1.0
        if symmetric and density <= self.sparse_threshold:
            nk = enc.nm_structure(codes) if self.nm else None
            if nk is not None:
                e = enc.encode_nm(
                    shape, codes, nk, bits=bits, scales=scales, symmetric=True, **attrs
                )
                return self.put(name, e, bits=bits)
            nnz = int(np.count_nonzero(codes))
            csr_bytes = nnz * (1 + (2 if k <= 65536 else 4)) + 8 * n + 4
            if scales.shape[0] == 1 and csr_bytes < (k * n * bits + 7) // 8:
                e = enc.encode_csr(
                    shape, codes, codes.astype(np.int8), scales[0], bits=bits, scheme=q.scheme
                )
                return self.put(name, e)
        e = enc.encode_packed(shape, codes, scales, zps, bits=bits, symmetric=symmetric, **attrs)
        return self.put(name, e)

    def clustered(self, name, c):
        shape = tuple(c.shape)
        bits = int(c.bits)
        idx = np.asarray(c.indices, np.uint8)
        cb = np.asarray(c.codebook, np.float32)
        if c.zero_index and len(shape) >= 2 and c.axis in (None, len(shape) - 1):
            # Deep Compression: pruned + shared weights -> CSR positions + codebook indices
            k, n = enc.kn(shape)
            idx2 = idx.reshape(k, n)
            nnz = int(np.count_nonzero(idx2))
            csr_bytes = nnz * (2 if k <= 65536 else 4) + (nnz * bits + 7) // 8 + 4 * (n + 1)
            if nnz <= self.sparse_threshold * idx2.size and csr_bytes < (idx2.size * bits + 7) // 8:
                e = enc.encode_csr_codebook(shape, idx2, cb, bits=bits, axis=c.axis)
                return self.put(name, e)
        return self.put(name, enc.encode_codebook(shape, idx, cb, bits=bits, axis=c.axis))


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
    integer: bool = False,
    activation_ranges: Any = None,
    calibration_batches: Any = None,
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
      integer: write a full-integer graph (int8 activations with explicit scale / zero point,
        int8 weights, int32 biases, fixed-point requantization; float only at the input and
        output; ``docs/integer.md``). Needs static activation ranges: `model_or_apply` is the
        ``apply_fn`` of ``ptq(..., activation_bits=8)`` (or of ``quantize_activations(apply_fn,
        ranges)``, e.g. a QAT model), or `activation_ranges` is given; weights are
        ``QuantizedArray`` leaves, symmetric per output channel, <= 8 bits. The bundled sample
        output is then the JAX integer reference's (``quantization.integer_reference``).
      activation_ranges: an ``ActivationRanges`` overriding / supplying the observed ranges
        (integer export only).
      calibration_batches: float input batches measuring the ranges of the values that are no
        matmul/conv input (the logits, residual-add operands, average-pool outputs); integer
        export only. Pass the batches ``ptq`` was calibrated with.

    Returns:
      An :class:`ExportInfo`.

    Raises:
      JaxCompressValueError: unsupported primitive (the message names it), layout or arguments;
        with ``integer=True`` also: no static activation ranges, a range with NaN/Inf or zero
        width, float or grouped weights, or an op without an integer form (each names the layer).
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
    if not integer and (activation_ranges is not None or calibration_batches is not None):
        raise JaxCompressValueError(
            "activation_ranges / calibration_batches apply to integer=True exports only"
        )
    desc = None
    if integer:
        from jaxcompress.export._integer import activation_description

        float_apply, desc = activation_description(model_or_apply, activation_ranges)
        apply = resolve_apply(float_apply if float_apply is not None else model_or_apply)
    else:
        apply = resolve_apply(model_or_apply)
    x = np.asarray(example_input)
    if x.dtype.kind != "f":
        raise JaxCompressValueError(f"example_input.dtype={x.dtype} must be floating")
    x = x.astype(np.float32)
    dense_params = dequantize_params(params)
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_compressed)
    leaves = {key_path_str(p): _unwrap(leaf) for p, leaf in flat}
    plain = {n for n, leaf in leaves.items() if not is_compressed(leaf)}
    w = _Writer(float(sparse_threshold), bool(nm))
    if integer:
        from jaxcompress.export._integer import integer_graph
        from jaxcompress.quantization import integer_reference

        cap = capture(apply, dense_params, x, foldable=set())
        qweights = {n: leaf for n, leaf in leaves.items() if isinstance(leaf, QuantizedArray)}
        ig = integer_graph(cap, qweights, desc, calibration_batches, x)
        for name, arr in ig.tensors.items():
            w.dense(name, np.ascontiguousarray(arr))
        ys = integer_reference(ig.graph, ig.tensors)(x)
        ys = [np.asarray(v, np.float32) for v in (ys if isinstance(ys, tuple) else [ys])]
        cap.graph = ig.graph
    else:
        cap = capture(apply, dense_params, x, foldable=plain if fold else set())
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
