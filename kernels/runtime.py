"""The edge runtime: plans a verified artifact's graph at load, then runs it with the kernels.

No JAX anywhere: this module imports NumPy, Numba (through the kernels) and the artifact reader.

At load (`kernels/_plan.py`, docs/export.md): every shape from the format's op specs, `Limits`
checked node by node, constants folded, fusion into steps, a kernel per weight node, one arena.
A weight node's candidates (the plan keeps the fastest on the planned shape when autotuning, the
encoding's own kernel otherwise):

| artifact encoding                          | its own kernel                                       |
|--------------------------------------------|------------------------------------------------------|
| `dense`                                    | BLAS / the register GEMV (linear), direct NHWC conv  |
| `csr` (float or int8 codes + scales)       | `spmm_csr` (conv: transposed im2col through it)      |
| `nm` float, 1:4 or 2:4                     | `spmm_nm`                                            |
| `nm` 2..4-bit codes, per-channel scales    | `spmm_nm` (4-bit values)                             |
| `nm` codes with per-group scales           | `qmatmul` on the packed dense codes                  |
| `packed` 2/3/4/8-bit                       | `qmatmul` (per-channel or per-group scales)          |
| `packed` 5..7-bit                          | decoded once to float32                              |
| `codebook` (per tensor)                    | `codebook_matmul` (LUT in registers) / `lut_matmul`  |
| `csr_codebook`                             | `spmm_csr` on the codebook values                    |

plus the decoded float32 kernels (BLAS, register GEMV, direct conv) when the decoded weight is at
most ``autotune_max_bytes``. Compressed convolutions run im2col + the weight's kernel.

Example:
  >>> from jaxcompress_kernels import runtime
  >>> rt = runtime.load("model.jcx", num_threads=1)        # doctest: +SKIP
  >>> logits = rt.run(x)                                     # doctest: +SKIP
  >>> rt.self_check().ok, print(rt.plan.table())             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from jaxcompress_kernels import _dynkernels as _dyn
from jaxcompress_kernels import _qkernels as _qk
from jaxcompress_kernels import artifact as _artifact
from jaxcompress_kernels._graph_kernels import (
    add_relu,
    bias_act,
    im2col_nhwc,
    im2col_t_nhwc,
    lut_matmul_unchecked,
    mlp_chain,
)
from jaxcompress_kernels._plan import ALIGN, Limits, Plan, assign_arena, infer_graph
from jaxcompress_kernels._sparse_conv import SparsePlaneConv
from jaxcompress_kernels._validate import check_int
from jaxcompress_kernels.conv import (
    prepare_avg_pool2d,
    prepare_conv2d,
    prepare_depthwise_conv2d,
    prepare_max_pool2d,
)
from jaxcompress_kernels.errors import ArtifactError, JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.format import ops as _ops
from jaxcompress_kernels.format import quant as _quant
from jaxcompress_kernels.formats import (
    CSRMatrix,
    nm_from_dense,
    nm_from_quantized,
    pack_weight,
)
from jaxcompress_kernels.quantized import (
    bind_lanes_gemv,
    codebook_matmul,
    codebook_weight,
    qmatmul,
)
from jaxcompress_kernels.runtime_config import _LAST_SET, set_num_threads
from jaxcompress_kernels.sparse import bind_nm24_gemv, nm24_gemv_ok, spmm_csr, spmm_nm

__all__ = [
    "Runtime",
    "SelfCheck",
    "Limits",
    "Plan",
    "load",
    "exec_op",
    "infer_graph",
    "ACTIVATIONS",
]

_F32 = np.dtype(np.float32)  # a singleton: `x.dtype is _F32` is the cheapest dtype test

# activation modes: exact float32 (default) and LiteRT-style dynamic-range int8
ACTIVATIONS = ("float", "dynamic_int8")
DYNAMIC_SELF_CHECK_RTOL = 5e-2


@dataclasses.dataclass(frozen=True)
class SelfCheck:
    """Result of `Runtime.self_check`: runtime output vs the bundled expected output."""

    ok: bool
    max_abs: float
    rel: float  # max |y - y_ref| / max |y_ref|
    top1_agreement: float
    rtol: float


def _unary(fn):
    return lambda ins, node, b: fn(ins[0])


def _erf(x):
    import math as _m

    return np.vectorize(_m.erf, otypes=[x.dtype])(x) if x.size else x


def _logistic(x):
    return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _rsqrt(x):
    return (1 / np.sqrt(x)).astype(x.dtype)


def _not(x):
    return np.logical_not(x) if x.dtype == np.bool_ else np.invert(x)


def _div(a, b):
    if np.result_type(a, b).kind in "iu":
        return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    return np.divide(a, b)


def _logic(fb, fi):
    def f(a, b):
        return fb(a, b) if np.result_type(a, b) == np.bool_ else fi(a, b)

    return f


_UNARY = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "logistic": _logistic,
    "sqrt": np.sqrt,
    "rsqrt": _rsqrt,
    "abs": np.abs,
    "square": np.square,
    "sign": np.sign,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "erf": _erf,
    "sin": np.sin,
    "cos": np.cos,
    "floor": np.floor,
    "ceil": np.ceil,
    "not": _not,
}
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": _div,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "gt": np.greater,
    "ge": np.greater_equal,
    "lt": np.less,
    "le": np.less_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "and": _logic(np.logical_and, np.bitwise_and),
    "or": _logic(np.logical_or, np.bitwise_or),
}


def _dims(shape, b: int) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else d[0] * b + d[1] for d in shape)


def _integer_pow(x, y: int):
    if y == 0:
        return np.ones_like(x)
    base = x if y > 0 else (1 / x).astype(x.dtype)
    e = abs(y)
    acc = None
    while e:
        if e & 1:
            acc = base if acc is None else acc * base
        e >>= 1
        if e:
            base = base * base
    return acc


def _broadcast_in_dim(x, shape, dims):
    shp = [1] * len(shape)
    for i, d in enumerate(dims):
        shp[d] = x.shape[i]
    return np.broadcast_to(x.reshape(shp), shape)


def _dot_general(a, b, contract, batch):
    (lc, rc), (lb, rb) = contract, batch
    lf = [i for i in range(a.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(b.ndim) if i not in rc and i not in rb]
    at = np.transpose(a, lb + lf + lc)
    bt = np.transpose(b, rb + rc + rf)
    bs = [a.shape[i] for i in lb]
    lfs = [a.shape[i] for i in lf]
    rfs = [b.shape[i] for i in rf]
    ck = math.prod(a.shape[i] for i in lc)
    a3 = at.reshape(math.prod(bs), math.prod(lfs), ck)
    b3 = bt.reshape(math.prod(bs), ck, math.prod(rfs))
    return np.matmul(a3, b3).reshape(bs + lfs + rfs)


def _windows(x, window, strides, pads, fill):
    if any(p[0] or p[1] for p in pads):
        x = np.pad(x, pads, constant_values=fill)
    v = np.lib.stride_tricks.sliding_window_view(x, window)
    return v[tuple(slice(None, None, s) for s in strides)]


def _reduce_window(x, node, reduce, fill):
    win = tuple(node["window"])
    v = _windows(x, win, node["strides"], node["pads"], x.dtype.type(fill))
    return reduce(v, axis=tuple(range(x.ndim, 2 * x.ndim)))


def _lit_ref(r):
    v = r["lit"]
    return np.asarray(float(v) if isinstance(v, str) else v, dtype=r["dtype"])


def exec_op(node, ins, b):
    """Evaluates one non-weight graph node with NumPy (``b`` = batch size for symbolic dims)."""
    op = node["op"]
    if op in _BINARY:
        return _BINARY[op](ins[0], ins[1])
    if op in _UNARY:
        return _UNARY[op](ins[0])
    if op == "integer_pow":
        return _integer_pow(ins[0], node["y"])
    if op == "convert":
        return ins[0].astype(node["dtype"])
    if op == "reshape":
        return np.reshape(ins[0], _dims(node["shape"], b))
    if op == "broadcast_in_dim":
        return _broadcast_in_dim(ins[0], _dims(node["shape"], b), node["dims"])
    if op == "transpose":
        return np.transpose(ins[0], node["perm"])
    if op == "squeeze":
        return np.squeeze(ins[0], axis=tuple(node["axes"]))
    if op == "expand_dims":
        return np.expand_dims(ins[0], tuple(node["axes"]))
    if op == "reduce_sum":
        return np.sum(ins[0], axis=tuple(node["axes"]), dtype=ins[0].dtype)
    if op == "reduce_max":
        return np.max(ins[0], axis=tuple(node["axes"]))
    if op == "reduce_min":
        return np.min(ins[0], axis=tuple(node["axes"]))
    if op in ("argmax", "argmin"):
        f = np.argmax if op == "argmax" else np.argmin
        return f(ins[0], axis=node["axis"]).astype(node["dtype"])
    if op == "dot_general":
        return _dot_general(ins[0], ins[1], node["contract"], node["batch"])
    if op == "reduce_window_max":
        return _reduce_window(ins[0], node, np.max, -np.inf)
    if op == "reduce_window_sum":
        return _reduce_window(ins[0], node, np.sum, 0)
    if op == "select_n":
        pred, cases = ins[0], ins[1:]
        if pred.dtype == np.bool_:
            return np.where(pred, cases[1], cases[0]) if len(cases) == 2 else cases[0]
        return np.choose(pred, cases)
    if op == "clamp":
        return np.clip(ins[1], ins[0], ins[2])
    if op == "concatenate":
        return np.concatenate(ins, axis=node["axis"])
    if op == "pad":
        v = _lit_ref(node["value"])
        return np.pad(ins[0], node["pads"], constant_values=v)
    if op == "rev":
        return np.flip(ins[0], axis=tuple(node["axes"]))
    if op == "slice":
        sl = tuple(
            slice(s, e, st)
            for s, e, st in zip(
                node["start"], _dims(node["limit"], b), node["strides"], strict=True
            )
        )
        return ins[0][sl]
    raise ArtifactError(f"unknown op {op!r}")  # unreachable: load() checks ops


# ----------------------------------------------------------------------------------------------
# weight kernels


class _WeightKernel:
    """One weight's candidate kernels, prepared once at load.

    ``candidates``: `_Cand` list; the first is the encoding's own kernel (none for dense float
    weights). ``dense()``: the float32 ``(K, N)`` weight, decoded once on demand (BLAS, the
    direct conv, grouped convs).
    """

    def __init__(self, entry):
        self.entry = entry
        self.k, self.n = entry.kn
        self._dense = None
        self._plane = None
        self._dyn: dict = {}
        self.candidates = []
        native = _native_kernel(entry)
        if native is not None:
            self.candidates.append(native)

    def dense(self) -> np.ndarray:
        if self._dense is None:
            e = self.entry
            self._dense = np.ascontiguousarray(
                _artifact.decode_dense(e).reshape(self.k, self.n), np.float32
            )
        return self._dense

    @property
    def decoded_bytes(self) -> int:
        return 4 * self.k * self.n

    def dense_candidate(self) -> _Cand:
        d = self.dense()
        label = "matmul(f32)" + (
            "" if self.entry.encoding == "dense" else f", decoded {self.entry.encoding}"
        )
        return _Cand(label, lambda x, bias: _dense_mm(x, d, bias), d.nbytes, dense=d)

    def gemv_candidate(self) -> _Cand:
        d = self.dense()
        label = "gemv(f32 direct" + (
            ")" if self.entry.encoding == "dense" else f", decoded {self.entry.encoding})"
        )
        return _Cand(label, None, d.nbytes, dense=d, gemv=True)

    @property
    def resident(self) -> int:
        """Bytes the kernels hold for this weight (its own container and any decoded copy)."""
        own = sum(c.nbytes for c in self.candidates)
        own += 0 if self._plane is None else self._plane.nbytes
        dyn = sum(w.nbytes for w in self._dyn.values() if w is not None)
        return own + dyn + (0 if self._dense is None else self._dense.nbytes)

    def dyn(self, *, vnni: bool, cin: int | None = None, kw: int | None = None):
        """The `DynWeight` of this weight for the dynamic-range kernels (packed once per tile
        layout: linear, or conv with `cin` input channels and, without dilation along W, its
        kernel width `kw`), or None when it is not stored as symmetric integer codes of at
        most 8 bits with per-channel scales."""
        key = (cin, kw, vnni)
        if key not in self._dyn:
            codes = _dyn_codes(self.entry)
            self._dyn[key] = (
                None
                if codes is None
                else _dyn.DynWeight(*codes, conv=cin is not None, cin=cin, kw=kw, vnni=vnni)
            )
        return self._dyn[key]


@dataclasses.dataclass(frozen=True)
class _Cand:
    """A kernel for one weight: ``fn(x2 (M, K), bias (N,) | None) -> (M, N)`` float32."""

    label: str
    fn: object
    nbytes: int
    dense: np.ndarray | None = None
    gemv: bool = False  # dense weight through the direct kernel as a 1x1 conv (bias, act fused)
    csr: object = None  # the CSRMatrix of a csr kernel (a conv streams transposed im2col rows)
    scaled: bool = False  # an affine epilogue wraps fn (the sparse conv path does not apply it)
    nm: object = None  # the NMSparse of an spmm_nm kernel (batch 1: the bound AVX-512 GEMV)
    lanes: object = None  # qmatmul's PackedWeight / codebook_weight (batch 1: bound lanes GEMV)
    scale: np.ndarray | None = None  # the (N,) affine scale `fn` applies when `scaled`
    plane: bool = False  # a pointwise conv runs this CSR as the planar sparse conv, not linear


def _native_kernel(e):
    """``(label, fn, bytes)`` of the encoding's own kernel, or None for dense float weights."""
    k, n = e.kn
    enc, a = e.encoding, e.attrs
    if enc == "csr":
        w = CSRMatrix(
            shape=(k, n),
            indptr=e.parts["indptr"].astype(np.int64),
            indices=e.parts["indices"],
            values=e.parts["values"],
            scales=e.parts.get("scales"),
        )
        label = (
            f"spmm_csr({'int8' if w.scales is not None else 'f32'}, "
            f"density={w.nnz / max(k * n, 1):.3f})"
        )
        return _Cand(label, lambda x, bias: spmm_csr(x, w, bias), w.nbytes, csr=w)
    if enc == "csr_codebook":
        w = CSRMatrix(
            shape=(k, n),
            indptr=e.parts["indptr"].astype(np.int64),
            indices=e.parts["indices"],
            values=np.ascontiguousarray(_artifact.csr_codebook_values(e), np.float32),
        )
        label = f"spmm_csr(f32 from codebook, density={w.nnz / max(k * n, 1):.3f})"
        return _Cand(label, lambda x, bias: spmm_csr(x, w, bias), w.nbytes, csr=w)
    if enc == "nm" and a["m"] == 4 and a["n"] in (1, 2):
        if "values" in e.parts:
            w = nm_from_dense(_artifact.decode_dense(e).reshape(k, n), n=a["n"])
            return _Cand(
                f"spmm_nm({a['n']}:4, f32)", lambda x, bias: spmm_nm(x, w, bias), w.nbytes, nm=w
            )
        codes, scales, _ = _artifact.decode_codes(e)
        if a["bits"] <= 4 and a.get("group_size") is None:
            w = nm_from_quantized(codes.astype(np.int8), np.ascontiguousarray(scales[0]), n=a["n"])
            label = f"spmm_nm({a['n']}:4, {a['bits']}-bit per-channel)"
            return _Cand(label, lambda x, bias: spmm_nm(x, w, bias), w.nbytes)
    if enc in ("packed", "nm") and "codes" in e.parts:
        bits, gs = a["bits"], a.get("group_size")
        if bits in (2, 3, 4, 8) and (gs is None or (gs % 8 == 0 and k % gs == 0)):
            codes, scales, zps = _artifact.decode_codes(e)
            sym = zps is None
            w = pack_weight(
                codes.astype(np.int8 if sym else np.uint8),
                scales,
                None if sym else zps.astype(np.uint8),
                bits=bits,
                group_size=gs,
            )
            gdesc = "per-channel" if gs is None else f"g={gs}"
            label = f"qmatmul({bits}-bit, {gdesc}" + (", from N:M storage)" if enc == "nm" else ")")
            lanes = w if w.lanes is not None else None
            return _Cand(label, lambda x, bias: qmatmul(x, w, bias), w.nbytes, lanes=lanes)
    if enc == "codebook":
        return _codebook_kernel(e)
    return None


def _dyn_codes(e):
    """``(codes (K, N) int8, scales (N,) float32)`` of a weight stored as symmetric integer codes
    (at most 8 bits) with per-channel scales, else None. Sparse encodings are densified (zeros
    are code 0)."""
    k, n = e.kn
    a = e.attrs
    if k > _dyn.MAX_K:
        return None
    if e.encoding == "csr" and e.parts.get("scales") is not None:
        v = e.parts["values"]
        if v.dtype != np.int8:
            return None
        ip = e.parts["indptr"].astype(np.int64)
        rows = np.repeat(np.arange(n), np.diff(ip))
        codes = np.zeros((n, k), np.int8)
        codes[rows, e.parts["indices"].astype(np.int64)] = v
        return np.ascontiguousarray(codes.T), np.asarray(e.parts["scales"], np.float32)
    if e.encoding in ("packed", "nm") and "codes" in e.parts:
        if a.get("bits", 9) > 8 or a.get("group_size") is not None:
            return None
        if not a.get("symmetric", True):
            return None
        codes, scales, zps = _artifact.decode_codes(e)
        if zps is not None or scales.shape[0] != 1:
            return None
        return codes.astype(np.int8), np.ascontiguousarray(scales[0], np.float32)
    return None


def _codebook_kernel(e):
    """A per-tensor codebook weight through a lookup table, never decoded to float32: up to 16
    centroids on AVX-512 hosts, the 4-bit `qmatmul` lanes kernel with the codebook as its
    ``vpermps`` table (`codebook_matmul`); otherwise `lut_matmul` (one channel's row decoded
    through the table at a time). Per-channel codebooks: None (decoded)."""
    k, n = e.kn
    bits = e.attrs["bits"]
    cb = e.parts["codebook"]
    if e.attrs.get("axis") is not None or cb.ndim != 1:
        return None
    idx = _artifact.unpack_indices(e).reshape(k, n)
    table = np.ascontiguousarray(cb, np.float32)
    cw = codebook_weight(idx, table) if table.shape[0] <= 16 else None
    if cw is not None:
        label = f"codebook_matmul({bits}-bit, {table.shape[0]} centroids, LUT)"
        return _Cand(label, lambda x, bias: codebook_matmul(x, cw, bias), cw[0].nbytes, lanes=cw)
    idx_t = np.ascontiguousarray(idx.T.astype(np.uint8))
    label = f"lut_matmul({bits}-bit codebook, {table.shape[0]} centroids)"
    return _Cand(label, lambda x, bias: lut_matmul_unchecked(x, idx_t, table, bias), idx_t.nbytes)


# ----------------------------------------------------------------------------------------------
# the runtime


_F32 = np.dtype(np.float32)


class Runtime:
    """Executes an artifact's graph through a plan made at load.

    Args:
      artifact: a verified `jaxcompress_kernels.artifact.Artifact` (or a path, loaded and verified).
      num_threads: threads for the parallel kernels during `run` (None keeps the current
        setting; set through `set_num_threads`, whose last value the hot path compares with
        instead of querying Numba). NumPy's BLAS (dense matmuls) keeps its own thread pool: set
        ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` before starting the process to pin it.
      limits: `Limits` the plan must respect (activation bytes and FLOPs per example, weight
        bytes, nodes); an artifact over them is refused with `ArtifactError` naming the node.
      autotune: time each weight node's candidate kernels (the encoding's own kernel, and the
        decoded float32 kernel when the decoded weight is at most ``autotune_max_bytes``) on the
        planned shape and keep the fastest; False runs every encoding's own kernel.
      autotune_max_bytes: largest decoded float32 weight the autotuner may hold.
      allow_float_nodes: in a full-integer graph (one with q-ops), let nodes without an integer
        kernel (a float op between ``dequantize`` and ``quantize``) run in float32; they are then
        listed in ``plan.float_nodes``. False (default): such a graph is refused with
        `ArtifactError` naming the node.
      int8_kernels: the integer GEMM path: ``"auto"`` (VNNI ``vpdpbusd`` when the CPU has
        ``avx512_vnni``, else portable), ``"vnni"`` (error if unavailable) or ``"portable"``.
        Results are identical either way. The same choice applies to the ``dynamic_int8``
        kernels.
      activations: ``"float"`` (default): activations stay float32 and integer-coded weights
        are dequantized inside their kernels (exact weight-only arithmetic, equal to JAX to
        float rounding). ``"dynamic_int8"``: the counterpart of LiteRT's dynamic-range
        quantization: every ``linear`` and (non-grouped) ``conv`` node whose weight is stored as
        symmetric integer codes of at most 8 bits with per-channel scales (``packed``, int8
        ``csr``, quantized ``nm``; sparse ones are densified to int8 at load) quantizes its float
        input on each call (asymmetric uint8, one scale and zero point per row of a linear
        layer's input and per image of a conv's input), runs an ``u8 x s8 -> s32`` GEMM (VNNI
        ``vpdpbusd`` where available) and a float epilogue (scales, bias, batch-norm affine,
        activation); consecutive such linear layers run as one compiled chain. The outputs are
        an approximation (docs/export.md gives the error bound); other nodes run as in
        ``"float"``. The plan's kernels for these nodes are labelled ``dyn_qgemm``,
        ``dyn_qconv`` and ``dyn_mlp_chain``.

    Attributes:
      plan: the `Plan` for the load-time batch (1, or the exported batch of a static-batch
        artifact): a mapping ``{weight name: kernel}`` with ``plan.nodes`` (per node: shape,
        dtype, FLOPs, bytes, kernel, step), ``plan.arena_bytes``, ``plan.flops``.
      last_times: ``[(first node index, step label, seconds)]`` of the last `run`, one per step.
    """

    def __init__(
        self,
        artifact,
        *,
        num_threads: int | None = None,
        limits: Limits | None = None,
        autotune: bool = True,
        autotune_max_bytes: int = 2 << 20,
        allow_float_nodes: bool = False,
        int8_kernels: str = "auto",
        activations: str = "float",
    ):
        if not isinstance(activations, str) or activations not in ACTIVATIONS:
            raise JaxCompressValueError(
                f"activations={activations!r} must be one of {', '.join(map(repr, ACTIVATIONS))}"
            )
        self.activations = activations
        self.dynamic = activations == "dynamic_int8"
        if int8_kernels not in ("auto", "vnni", "portable"):
            raise JaxCompressValueError(
                f"int8_kernels={int8_kernels!r} must be 'auto', 'vnni' or 'portable'"
            )
        if int8_kernels == "vnni" and not _qk.HAS_VNNI:
            raise JaxCompressValueError("int8_kernels='vnni' but this CPU has no avx512_vnni")
        self.vnni = _qk.HAS_VNNI if int8_kernels == "auto" else int8_kernels == "vnni"
        if not isinstance(artifact, _artifact.Artifact):
            artifact = _artifact.load(artifact)
        if limits is None:
            limits = Limits()
        elif not isinstance(limits, Limits):
            raise JaxCompressTypeError(f"limits must be a Limits, got {type(limits).__name__}")
        self.artifact = artifact
        self.num_threads = num_threads
        self.limits = limits
        self.autotune = bool(autotune)
        self.autotune_max_bytes = int(autotune_max_bytes)
        g = artifact.graph
        self.graph = g
        self.nodes = g["nodes"]
        self.symbolic = g["batch"] == "symbolic"
        self.static_batch = int(artifact.sample_input.shape[0])
        self.input_shape = tuple(g["input_shapes"][0])
        self._ndim = len(self.input_shape) + 1
        self._last_b = 0
        self._plans: dict[int, _Exec] = {}
        self._choice: dict[tuple[int, int], int] = {}
        path = artifact.path
        tensors = artifact.tensors
        b0 = 1 if self.symbolic else self.static_batch
        # shapes and bounds first: nothing is decoded or allocated for a graph that fails them
        self._shapes1, self._dtypes1, self._static, records = infer_graph(
            g, tensors, b0, limits, path=path
        )
        self.quant = g.get("quant") or {}
        self.float_nodes = self._float_nodes(allow_float_nodes)
        self._qweights: dict = {}
        try:
            self.weights = {}
            wbytes = 0
            for n in self.nodes:
                name = n.get("weight")
                if name is None or name in self.weights or n["op"] in _ops.QUANT_OPS:
                    continue
                wk = _WeightKernel(tensors[name])
                self.weights[name] = wk
                wbytes += sum(c.nbytes for c in wk.candidates) or wk.decoded_bytes
                if wbytes > limits.max_weight_bytes:
                    raise ArtifactError(
                        f"{path}: weights up to {name!r} take {wbytes} bytes as the kernels "
                        f"hold them, over limits.max_weight_bytes={limits.max_weight_bytes}"
                    )
            self._consts = self._fold_constants()
        except ArtifactError:
            raise
        except (JaxCompressValueError, ValueError, TypeError, IndexError, KeyError) as e:
            # a container invariant failed while decoding: the file is bad
            raise ArtifactError(f"artifact {path!r} refused: {e}") from None
        self._records1 = records
        self.plan = self._exec(b0).plan

    # -- planning --------------------------------------------------------------------------
    def _float_nodes(self, allow: bool) -> list[int]:
        """In a full-integer graph: the computing nodes that have no integer kernel (float ops
        other than views and data movement, outside ``quantize``/``dequantize``)."""
        nodes = self.nodes
        if not self.quant and not any(n["op"] in _ops.QUANT_OPS for n in nodes):
            return []
        out = [
            i
            for i, n in enumerate(nodes)
            if n["out"] not in self._static
            and n["op"] not in _ops.QUANT_OPS
            and _ops.OPS[n["op"]].kind not in ("alias", "move")
        ]
        if out and not allow:
            i = out[0]
            raise ArtifactError(
                f"{self.artifact.path}: full-integer graph node {i} ({nodes[i]['op']}, output "
                f"{nodes[i]['out']!r}) has no integer kernel"
                + (f" (nor nodes {out[1:]})" if len(out) > 1 else "")
                + "; pass allow_float_nodes=True to run such nodes in float32"
            )
        return out

    def qweight(self, i: int) -> _qk.QGemmWeight:
        """The prepared integer GEMM weight of q-node ``i`` (built once, batch independent)."""
        w = self._qweights.get(i)
        if w is None:
            n = self.nodes[i]
            t = self.artifact.tensors
            wq = t[n["weight"]].parts["value"]
            ws = t[n["weight_scale"]].parts["value"]
            bias = t[n["bias"]].parts["value"] if "bias" in n else None
            xr, yr = self.quant[n["in"][0]], self.quant[n["out"]]
            mult, shift = _quant.channel_multipliers(xr["scale"], ws, yr["scale"])
            w2 = wq.reshape(-1, wq.shape[-1])
            w = _qk.pack_qgemm(w2, bias, xr["zero_point"], mult, shift, vnni=self.vnni)
            self._qweights[i] = w
        return w

    def _fold_constants(self) -> dict:
        tensors = self.artifact.tensors
        env = {}
        for name in {r for n in self.nodes for r in n["in"] if isinstance(r, str)} | set(
            self.graph["outputs"]
        ):
            if name in tensors:
                env[name] = _artifact.decode_dense(tensors[name])
        for i, node in enumerate(self.nodes):
            if node["out"] in self._static:
                ins = [_lit_ref(r) if isinstance(r, dict) else env[r] for r in node["in"]]
                try:
                    env[node["out"]] = np.asarray(exec_op(node, ins, 1))
                except (ValueError, TypeError, IndexError, KeyError) as e:
                    raise ArtifactError(
                        f"{self.artifact.path}: folding graph node {i} ({node['op']}) failed: {e}"
                    ) from None
        return env

    def _exec(self, batch: int) -> _Exec:
        ex = self._plans.get(batch)
        if ex is None:
            if len(self._plans) > 8:
                self._plans.clear()
            ex = _Exec(self, batch)
            self._plans[batch] = ex
        return ex

    # -- execution -----------------------------------------------------------------------
    def _check_input(self, inputs) -> np.ndarray:
        x = inputs
        if (  # the common case, in a few cheap comparisons (this runs on every call)
            type(x) is np.ndarray
            and x.dtype is _F32
            and x.shape[1:] == self.input_shape
            and (x.shape[0] == self.static_batch or (self.symbolic and x.shape[0] >= 1))
        ):
            return x
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 1:
                raise JaxCompressValueError(f"inputs must hold 1 array, got {len(inputs)}")
            inputs = inputs[0]
        x = np.asarray(inputs)
        if x.dtype != np.float32:
            if x.dtype.kind not in "fiu":
                raise JaxCompressValueError(f"inputs.dtype={x.dtype} must be float32")
            x = x.astype(np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise JaxCompressValueError(
                f"inputs.shape={x.shape} must be (batch, *{self.input_shape})"
            )
        b = x.shape[0]
        if not self.symbolic and b != self.static_batch:
            raise JaxCompressValueError(
                f"this artifact was exported for batch {self.static_batch}, got {b}"
            )
        if b < 1:
            raise JaxCompressValueError("inputs must hold at least one example")
        return x

    def run(self, inputs):
        """Runs the graph.

        Args:
          inputs: ``(batch, *input_shape)`` float32 array (or a one-element list/tuple of it).

        Returns:
          The output array (or a tuple when the graph has several outputs).

        Raises:
          JaxCompressValueError: the input has the wrong shape or dtype.
          ArtifactError: the plan for this batch size exceeds the runtime's limits.
        """
        x = inputs
        if not (  # the common case in a few identity / tuple comparisons, else checked in full
            x.__class__ is np.ndarray
            and x.dtype is _F32
            and x.ndim == self._ndim
            and x.shape[1:] == self.input_shape
            and x.shape[0] >= 1
            and (self.symbolic or x.shape[0] == self.static_batch)
        ):
            x = self._check_input(inputs)
        if self.num_threads is not None and _LAST_SET[0] != self.num_threads:
            set_num_threads(self.num_threads)  # numba.get_num_threads() alone costs ~5 us
        ex = self._plans.get(x.shape[0]) or self._exec(x.shape[0])
        outs = ex.run(x)
        return outs[0] if len(outs) == 1 else outs

    __call__ = run

    def plan_for(self, batch: int) -> Plan:
        """The `Plan` for `batch` (made and cached on first use)."""
        return self._exec(check_int("batch", batch, 1, 1 << 24)).plan

    def initial_env(self, x: np.ndarray) -> dict:
        """The value environment before node 0: constants plus the graph input ``x``.

        ``x`` must already be validated (``run`` does it); used with :meth:`run_nodes` to run a
        graph piecewise, e.g. up to an edge-cloud split point and on from it.
        """
        env = dict(self._consts)
        env[self.graph["inputs"][0]] = np.ascontiguousarray(x)
        return env

    def run_nodes(self, env: dict, start: int, stop: int, batch: int, *, times=None) -> dict:
        """Executes nodes ``[start, stop)`` one by one (no fusion), reading and writing ``env``.

        Weight nodes run the kernel the plan chose for them; this path is for running a graph
        piecewise (edge-cloud split points), `run` is the fast one.

        Args:
          env: value environment (from :meth:`initial_env` or an earlier ``run_nodes``).
          start, stop: node range, ``0 <= start <= stop <= len(self.nodes)``.
          batch: the batch size the symbolic shapes resolve to.
          times: optional list that receives ``(index, op, seconds)`` per node.

        Raises:
          JaxCompressValueError: a bad range, or a node that fails on these inputs.
        """
        if not 0 <= start <= stop <= len(self.nodes):
            raise JaxCompressValueError(
                f"node range [{start=}, {stop=}) must lie within 0..{len(self.nodes)}"
            )
        ex = self._exec(batch)
        clock = time.perf_counter
        for i in range(start, stop):
            node = self.nodes[i]
            if node["out"] in self._static:
                env[node["out"]] = self._consts[node["out"]]
                continue
            t0 = clock()
            ins = [_lit_ref(r) if isinstance(r, dict) else env[r] for r in node["in"]]
            try:
                env[node["out"]] = ex.exec_node(i, ins)
            except JaxCompressValueError:
                raise
            except (ValueError, TypeError, IndexError, KeyError) as e:
                raise JaxCompressValueError(
                    f"graph execution failed at node {i} ({node['op']}): {e}"
                ) from None
            if times is not None:
                times.append((i, node["op"], clock() - t0))
        return env

    # -- diagnostics ---------------------------------------------------------------------
    @property
    def last_times(self) -> list[tuple[int, str, float]]:
        """``[(first node index, step label, seconds)]`` of the last `run`, one per step."""
        ex = self._plans.get(self._last_b)
        return ex.times() if ex is not None else []

    def op_times(self) -> dict[str, float]:
        """Seconds per step label in the last `run` (summed over steps with that label)."""
        out: dict[str, float] = {}
        for _, op, t in self.last_times:
            out[op] = out.get(op, 0.0) + t
        return out

    def node_times(self) -> list[float]:
        """Seconds per graph node in the last `run`: a step's time goes to the nodes it
        computes in proportion to their FLOPs (views and folded nodes get 0)."""
        ex = self._plans.get(self._last_b) if self.last_times else None
        out = [0.0] * len(self.nodes)
        if ex is None:
            return out
        for (_, _, t), members in zip(self.last_times, ex.step_members, strict=True):
            fl = [max(ex.plan.nodes[j].flops, 1.0) for j in members]
            tot = sum(fl)
            for j, f in zip(members, fl, strict=True):
                out[j] += t * f / tot
        return out

    def self_check(self, *, rtol: float | None = None, raise_on_failure: bool = False) -> SelfCheck:
        """Runs the bundled sample input and compares with the bundled expected output.

        A graph with several outputs is compared on its outputs flattened and concatenated in
        graph order (how `jaxcompress.export.save` bundles them).

        Passes when ``max |y - y_ref| <= rtol * max |y_ref|``. Default `rtol`: 1e-5 with float
        activations (float arithmetic differs from the exporter's only in summation order);
        ``DYNAMIC_SELF_CHECK_RTOL`` (5e-2) with ``activations="dynamic_int8"``, whose outputs
        carry the activation quantization error (a sanity check that the quantized graph still
        computes the model, not an accuracy bound).

        Raises:
          ArtifactError: when `raise_on_failure` and the check fails.
        """
        if rtol is None:
            rtol = DYNAMIC_SELF_CHECK_RTOL if self.dynamic else 1e-5
        y = self.run(self.artifact.sample_input)
        if isinstance(y, tuple):  # several outputs: bundled flattened and concatenated in order
            shapes = self.artifact.manifest["sample"].get("output_shapes")
            if shapes is not None and [list(o.shape) for o in y] != shapes:
                raise ArtifactError(f"self-check: output shapes differ from bundled {shapes}")
            y = np.concatenate([np.asarray(o, np.float32).reshape(-1) for o in y])
        y = np.asarray(y, np.float32)
        ref = self.artifact.sample_output
        if y.shape != ref.shape:
            raise ArtifactError(f"self-check: output shape {y.shape} != bundled {ref.shape}")
        diff = float(np.max(np.abs(y - ref))) if y.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = diff / scale if scale else diff
        top1 = float(np.mean(y.argmax(-1) == ref.argmax(-1))) if y.ndim >= 2 else 1.0
        res = SelfCheck(ok=bool(rel <= rtol), max_abs=diff, rel=rel, top1_agreement=top1, rtol=rtol)
        if raise_on_failure and not res.ok:
            raise ArtifactError(f"self-check failed: relative error {rel:.3g} > {rtol}")
        return res


def load(
    path,
    *,
    num_threads: int | None = None,
    limits: Limits | None = None,
    autotune: bool = True,
    allow_float_nodes: bool = False,
    int8_kernels: str = "auto",
    activations: str = "float",
) -> Runtime:
    """`jaxcompress_kernels.artifact.load` (full verification) + `Runtime` (the load-time plan).

    ``activations="dynamic_int8"`` selects the dynamic-range int8 mode (see `Runtime`)."""
    if not isinstance(activations, str) or activations not in ACTIVATIONS:
        raise JaxCompressValueError(
            f"activations={activations!r} must be one of {', '.join(map(repr, ACTIVATIONS))}"
        )
    return Runtime(
        _artifact.load(path),
        num_threads=num_threads,
        limits=limits,
        autotune=autotune,
        allow_float_nodes=allow_float_nodes,
        int8_kernels=int8_kernels,
        activations=activations,
    )


# ----------------------------------------------------------------------------------------------
# the plan for one batch size: fused steps over one arena

_RELU, _RELU6 = "relu", "relu6"


def _is_lit(r, value) -> bool:
    return isinstance(r, dict) and r["dtype"] == "float32" and _lit_value(r) == value


def _lit_value(r):
    v = r["lit"]
    return float(v) if isinstance(v, str) else v


class _Exec:
    """Shapes, fusion, kernel choice, arena and step closures for one batch size."""

    def __init__(self, rt: Runtime, batch: int):
        self.rt = rt
        self.batch = batch
        art = rt.artifact
        g = rt.graph
        nodes = rt.nodes
        if batch == (1 if rt.symbolic else rt.static_batch) and hasattr(rt, "_records1"):
            shapes, dtypes, records = rt._shapes1, rt._dtypes1, rt._records1
        else:
            shapes, dtypes, _, records = infer_graph(
                g, art.tensors, batch, rt.limits, path=art.path
            )
        self.shapes, self.dtypes = shapes, dtypes
        records = [dataclasses.replace(r) for r in records]
        static = rt._static
        consts = rt._consts
        # uses of every activation value (graph outputs count as a use)
        uses: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for r in n["in"]:
                if isinstance(r, str) and r not in static:
                    uses.setdefault(r, []).append(i)
        outputs = list(g["outputs"])
        for o in outputs:
            uses.setdefault(o, []).append(len(nodes))
        # ---- fusion: group nodes into steps
        groups: list[dict] = []
        owner: dict[int, int] = {}
        root: dict[str, str] = {}  # alias value -> the value whose buffer it views
        for i, n in enumerate(nodes):
            if i in owner or n["out"] in static:
                continue
            spec = _ops.OPS[n["op"]]
            if spec.kind == "alias" and isinstance(n["in"][0], str):
                src = n["in"][0]
                root[n["out"]] = root.get(src, src)
                records[i].kernel = "view"
                continue
            grp = {"kind": "op", "nodes": [i], "out": n["out"]}
            if n["op"] in _ops.QUANT_OPS:
                grp = {"kind": "q", "nodes": [i], "out": n["out"]}
            elif n["op"] in ("linear", "conv"):
                grp = self._fuse(i, nodes, uses, static, consts, owner)
            else:
                grp = self._fuse_pool_or_add(i, nodes, uses, static, owner) or grp
            for j in grp["nodes"]:
                owner[j] = len(groups)
            groups.append(grp)
        # ---- buffers and liveness (in step indices)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        inp = g["inputs"][0]
        first[inp] = -1
        last[inp] = -1
        step_of = {}
        for s, grp in enumerate(groups):
            first[grp["out"]] = s
            last.setdefault(grp["out"], s)
            for j in grp["nodes"]:
                step_of[j] = s
                for r in nodes[j]["in"]:
                    if isinstance(r, str) and r not in static:
                        b = root.get(r, r)
                        last[b] = max(last.get(b, s), s)
        for o in outputs:
            b = root.get(o, o)
            last[b] = len(groups)
        sizes = {}
        for v in first:
            shp = shapes[v]
            sizes[v] = max(math.prod(shp) * _ops.ITEMSIZE[dtypes[v]], 1)
        for s, grp in enumerate(groups):
            if grp.get("scratch"):
                name = f"__scratch{s}"
                sizes[name] = grp["scratch"]
                first[name] = last[name] = s
                grp["scratch_name"] = name
        offsets, total = assign_arena(sizes, {v: (first[v], last[v]) for v in sizes})
        if total > rt.limits.max_activation_bytes * batch:
            raise ArtifactError(
                f"{art.path}: the activation arena needs {total} bytes at batch {batch}, over "
                f"limits.max_activation_bytes={rt.limits.max_activation_bytes} per example"
            )
        self.arena = np.zeros(total + ALIGN, np.uint8)
        base = (-self.arena.ctypes.data) % ALIGN
        views: dict = {}

        def view(v):
            if v in views:
                return views[v]
            if v in static:
                a = consts[v]
            elif v in root:
                a = view(root[v]).reshape(shapes[v])
            else:
                off = base + offsets[v]
                nb = math.prod(shapes[v]) * _ops.ITEMSIZE[dtypes[v]]
                a = self.arena[off : off + nb].view(dtypes[v]).reshape(shapes[v])
            views[v] = a
            return a

        self.view = view
        self.input_view = view(inp)
        self.output_views = [view(o) if isinstance(o, str) else None for o in outputs]
        self.steps = []
        self.labels = []
        self.step_members = []
        built = [self._build(grp, nodes, view, records, offsets, base) for grp in groups]
        groups, built = self._chain_layers(groups, built, uses, outputs)
        groups, built = self._chain_qlayers(groups, built, nodes, root, outputs, view)
        for s, (grp, (fn, label)) in enumerate(zip(groups, built, strict=True)):
            self.steps.append(fn)
            self.labels.append(label)
            self.step_members.append(grp["nodes"])
            for j in grp["nodes"]:
                records[j].step = s
                if not records[j].kernel:
                    records[j].kernel = label if j == grp["nodes"][0] else f"fused into step {s}"
        for r in records:
            if r.static:
                r.kernel = "folded at load"
        self._t = [0.0] * len(self.steps)
        first_idx = [grp["nodes"][0] for grp in groups]
        self._first = first_idx
        kernels = {}
        for grp, label in zip(groups, self.labels, strict=True):
            for j in grp["nodes"]:  # a fused chain: every layer's weight runs the chain kernel
                w = nodes[j].get("weight")
                if w is not None and (j == grp["nodes"][0] or grp["kind"] == "chain"):
                    kernels.setdefault(w, grp.get("wlabel", label))
        const_bytes = sum(
            int(np.asarray(v).nbytes) for k, v in consts.items() if k not in art.tensors
        )
        wbytes = sum(wk.resident for wk in rt.weights.values())
        self.plan = Plan(
            batch=batch,
            nodes=records,
            steps=list(zip(first_idx, self.labels, strict=True)),
            arena_bytes=int(total),
            const_bytes=const_bytes,
            weight_bytes=int(wbytes),
            flops=float(sum(r.flops for r in records if not r.static)),
            kernels=kernels,
            float_nodes=list(rt.float_nodes),
            activations=rt.activations,
        )

    # -- fusion ------------------------------------------------------------------------------
    def _fuse(self, i, nodes, uses, static, consts, owner) -> dict:
        """linear/conv at node i + bias add + ReLU/ReLU6 (+ max pool after a conv)."""
        n = nodes[i]
        grp = {"kind": n["op"], "nodes": [i], "out": n["out"], "bias": None, "act": None}
        nout = self.shapes[n["out"]][-1]
        cur = n["out"]

        def single_next():
            u = uses.get(cur, [])
            if len(u) != 1 or u[0] >= len(nodes) or u[0] in owner:
                return None
            return u[0]

        # a per-output-channel affine chain (bias add; inference batch norm on compressed
        # kernels, which export does not fold): y = conv(x) * a + c
        a = np.ones(nout, np.float32)
        c = np.zeros(nout, np.float32)
        scaled = False
        j = single_next()
        while j is not None and nodes[j]["op"] in ("add", "sub", "mul", "div"):
            ins = nodes[j]["in"]
            if len(ins) != 2 or ins[0] == ins[1] or cur not in ins:
                break
            first = ins[0] == cur
            other = ins[1] if first else ins[0]
            v = _channel_vector(other, static, consts, nout, len(self.shapes[cur]))
            if v is None:
                break
            op = nodes[j]["op"]
            if op == "add":
                c = c + v
            elif op == "sub":
                a, c = (a, c - v) if first else (-a, v - c)
            elif op == "mul":
                a, c = a * v, c * v
            elif first:  # div by a per-channel constant
                a, c = a / v, c / v
            else:
                break
            scaled = scaled or op in ("mul", "div") or (op == "sub" and not first)
            grp["nodes"].append(j)
            cur = nodes[j]["out"]
            j = single_next()
        if len(grp["nodes"]) > 1:
            grp["bias"] = c.astype(np.float32)
            grp["scale"] = a.astype(np.float32) if scaled else None
        if j is not None:
            nj = nodes[j]
            ins = nj["in"]
            if nj["op"] == "max" and len(ins) == 2 and cur in ins:
                other = ins[1] if ins[0] == cur else ins[0]
                if _is_lit(other, 0.0):
                    grp["act"] = _RELU
                    grp["nodes"].append(j)
                    cur = nj["out"]
                    j = single_next()
                    if j is not None and nodes[j]["op"] == "min":
                        ins = nodes[j]["in"]
                        other = ins[1] if ins[0] == cur else ins[0]
                        if cur in ins and _is_lit(other, 6.0):
                            grp["act"] = _RELU6
                            grp["nodes"].append(j)
                            cur = nodes[j]["out"]
                            j = single_next()
            elif nj["op"] == "clamp" and ins[1] == cur and _is_lit(ins[0], 0.0):
                if _is_lit(ins[2], 6.0):
                    grp["act"] = _RELU6
                    grp["nodes"].append(j)
                    cur = nj["out"]
                    j = single_next()
        if n["op"] == "conv" and j is not None and nodes[j]["op"] == "reduce_window_max":
            pool = nodes[j]
            rank = len(self.shapes[cur])
            if (
                rank == 4
                and pool["window"][0] == pool["window"][-1] == 1
                and pool["strides"][0] == pool["strides"][-1] == 1
                and all(p == [0, 0] for p in pool["pads"])
            ):
                grp["pool"] = (tuple(pool["window"][1:3]), tuple(pool["strides"][1:3]))
                grp["nodes"].append(j)
                cur = pool["out"]
        grp["out"] = cur
        return grp

    def _chain_layers(self, groups, built, uses, outputs):
        """Runs of consecutive float linear steps, each reading only the previous one's output,
        become one `mlp_chain` step when that measures faster than the separate steps; runs of
        dynamic-range int8 linear steps always become one `_dynkernels.DynChain` step."""
        groups, built = self._chain_dyn(groups, built, uses, outputs)
        if not self.rt.autotune:
            return groups, built
        out_groups, out_built = [], []
        s = 0
        while s < len(groups):
            e = s
            while (
                e + 1 < len(groups)
                and "chain" in groups[e]
                and "chain" in groups[e + 1]
                and _same_buffer(groups[e]["chain"][1], groups[e + 1]["chain"][0])
                and uses.get(groups[e]["out"], []) == [groups[e + 1]["nodes"][0]]
                and groups[e]["out"] not in outputs
            ):
                e += 1
            if e > s:
                layers = [(g["chain"][2], g["chain"][3], g["chain"][4]) for g in groups[s : e + 1]]
                x_in, y_out = groups[s]["chain"][0], groups[e]["chain"][1]
                if x_in.shape[0] > 1 and np.shares_memory(x_in, y_out):
                    # the arena may give the chain's output the memory of its input (dead after
                    # the first layer of the unfused plan); rows are written while later input
                    # rows are still to be read, so the chain reads a private copy
                    chain = _copy_then(x_in, layers, y_out)
                else:
                    chain = mlp_chain(layers, x_in, y_out)
                apart = [built[t][0] for t in range(s, e + 1)]
                if _min_time([chain]) < 0.95 * _min_time(apart):
                    members = [j for g in groups[s : e + 1] for j in g["nodes"]]
                    out_groups.append({"kind": "chain", "nodes": members, "out": groups[e]["out"]})
                    out_built.append((chain, f"mlp_chain({e - s + 1} layers, f32)"))
                    s = e + 1
                    continue
            out_groups.append(groups[s])
            out_built.append(built[s])
            s += 1
        return out_groups, out_built

    def _chain_qlayers(self, groups, built, nodes, root, outputs, view):
        """Runs of full-integer steps ``[quantize] -> qlinear+ -> [dequantize]`` (each step the
        only reader of the previous one's output, views included) become one `qmlp_chain` step:
        one compiled call instead of one dispatch per layer (small MLPs are dispatch-bound)."""
        readers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            if _ops.OPS[n["op"]].kind == "alias":
                continue
            for r in n["in"]:
                if isinstance(r, str):
                    readers.setdefault(root.get(r, r), []).append(i)
        outs = {root.get(o, o) for o in outputs if isinstance(o, str)}

        def op(g):
            return nodes[g["nodes"][0]]["op"] if g["kind"] == "q" else None

        def feeds(a, b):  # group a's output is read by group b's node only
            v = root.get(a["out"], a["out"])
            src = nodes[b["nodes"][0]]["in"][0]
            return (
                v not in outs
                and readers.get(v) == [b["nodes"][0]]
                and isinstance(src, str)
                and root.get(src, src) == v
            )

        out_groups, out_built = [], []
        s = 0
        while s < len(groups):
            e = s + 1 if op(groups[s]) == "quantize" else s
            if (
                e < len(groups)
                and op(groups[e]) == "qlinear"
                and (e == s or feeds(groups[s], groups[e]))
            ):
                while (
                    e + 1 < len(groups)
                    and op(groups[e + 1]) == "qlinear"
                    and feeds(groups[e], groups[e + 1])
                ):
                    e += 1
                if (
                    e + 1 < len(groups)
                    and op(groups[e + 1]) == "dequantize"
                    and feeds(groups[e], groups[e + 1])
                ):
                    e += 1
                step = self._qchain_step(groups[s : e + 1], nodes, view) if e > s else None
                if step is not None:
                    out_groups.append(
                        {
                            "kind": "qchain",
                            "nodes": [j for g in groups[s : e + 1] for j in g["nodes"]],
                            "out": groups[e]["out"],
                        }
                    )
                    out_built.append(step)
                    s = e + 1
                    continue
            out_groups.append(groups[s])
            out_built.append(built[s])
            s += 1
        return out_groups, out_built

    def _chain_dyn(self, groups, built, uses, outputs):
        out_groups, out_built = [], []
        s = 0
        while s < len(groups):
            e = s
            while (
                e + 1 < len(groups)
                and "dynchain" in groups[e]
                and "dynchain" in groups[e + 1]
                and _same_buffer(groups[e]["dynchain"][1], groups[e + 1]["dynchain"][0])
                and uses.get(groups[e]["out"], []) == [groups[e + 1]["nodes"][0]]
                and groups[e]["out"] not in outputs
            ):
                e += 1
            if e > s:
                layers = [g["dynchain"][2:] for g in groups[s : e + 1]]
                chain = _dyn.DynChain(layers)
                fn = chain.bind(groups[s]["dynchain"][0], groups[e]["dynchain"][1])
                fn()  # compiled at load, not in the first `run`
                members = [j for g in groups[s : e + 1] for j in g["nodes"]]
                label = (
                    f"dyn_mlp_chain({e - s + 1} layers, u8 x s8, "
                    f"{'VNNI' if self.rt.vnni else 'portable'})"
                )
                out_groups.append(
                    {"kind": "chain", "nodes": members, "out": groups[e]["out"], "wlabel": label}
                )
                out_built.append((fn, label))
                s = e + 1
                continue
            if "dynchain" in groups[s]:
                built[s][0]()  # a lone dyn linear step: compiled at load, not in `run`
            out_groups.append(groups[s])
            out_built.append(built[s])
            s += 1
        return out_groups, out_built

    def _qchain_step(self, grps, nodes, view):
        rt = self.rt
        recs = rt.quant
        first, last = nodes[grps[0]["nodes"][0]], nodes[grps[-1]["nodes"][0]]
        quant_in = dequant_out = None
        if first["op"] == "quantize":
            r = recs[first["out"]]
            quant_in = (np.float32(r["scale"]), int(r["zero_point"]))
            grps = grps[1:]
        if last["op"] == "dequantize":
            r = recs[last["in"][0]]
            dequant_out = (np.float32(r["scale"]), int(r["zero_point"]))
            grps = grps[:-1]
        layers = []
        for g in grps:
            i = g["nodes"][0]
            n = nodes[i]
            yr = recs[n["out"]]
            layers.append(
                (
                    rt.qweight(i),
                    int(yr["zero_point"]),
                    int(n.get("qmin", -128)),
                    int(n.get("qmax", 127)),
                )
            )
        x = view(first["in"][0])
        y = view(last["out"])
        k0, nl = layers[0][0].k, layers[-1][0].n
        rows = x.size // k0
        if x.size != rows * k0 or y.size != rows * nl:
            return None
        try:
            fn = _qk.qmlp_chain(
                layers, x.reshape(rows, k0), y.reshape(rows, nl), quant_in, dequant_out
            )
        except JaxCompressValueError:  # layers that do not chain: keep the separate steps
            return None
        path = "vnni" if layers[0][0].vnni else "portable"
        parts = (
            ("quantize+" if quant_in else "")
            + f"{len(layers)} qgemm"
            + ("+dequantize" if dequant_out else "")
        )
        return fn, f"qmlp_chain({parts}, int8, {path})"

    def _fuse_pool_or_add(self, i, nodes, uses, static, owner) -> dict | None:
        """Average pooling (``reduce_window_sum`` over H, W or ``reduce_sum`` over axes 1, 2,
        then a division by the window size) and a residual ``add`` followed by ReLU."""
        n = nodes[i]
        u = uses.get(n["out"], [])
        j = u[0] if len(u) == 1 and u[0] < len(nodes) and u[0] not in owner else None
        if j is None:
            return None
        nj = nodes[j]
        x = n["in"][0]
        if not isinstance(x, str) or x in static or self.dtypes[x] != "float32":
            return None
        xs = self.shapes[x]
        if n["op"] in ("reduce_window_sum", "reduce_sum") and len(xs) == 4:
            if n["op"] == "reduce_window_sum":
                win, st, pads = n["window"], n["strides"], n["pads"]
                ok = win[0] == win[3] == st[0] == st[3] == 1 and pads[0] == pads[3] == [0, 0]
                window, strides, sp = (
                    (win[1], win[2]),
                    (st[1], st[2]),
                    (tuple(pads[1]), tuple(pads[2])),
                )
            else:
                ok = sorted(n["axes"]) == [1, 2]
                window, strides, sp = (xs[1], xs[2]), (1, 1), ((0, 0), (0, 0))
            if (
                ok
                and nj["op"] == "div"
                and nj["in"][0] == n["out"]
                and _is_lit(nj["in"][1], float(window[0] * window[1]))
            ):
                return {
                    "kind": "avgpool",
                    "nodes": [i, j],
                    "out": nj["out"],
                    "pool": (window, strides, sp),
                }
            return None
        if n["op"] == "add" and nj["op"] == "max" and len(n["in"]) == 2:
            a, b = n["in"]
            other = nj["in"][1] if nj["in"][0] == n["out"] else nj["in"][0]
            if (
                isinstance(b, str)
                and b not in static
                and self.shapes[a] == self.shapes[b] == self.shapes[n["out"]]
                and self.dtypes[b] == "float32"
                and _is_lit(other, 0.0)
            ):
                return {"kind": "add_relu", "nodes": [i, j], "out": nj["out"]}
        return None

    # -- step closures -------------------------------------------------------------------------
    def _build(self, grp, nodes, view, records, offsets, base):
        if grp["kind"] == "q":
            i = grp["nodes"][0]
            return _qstep(self.rt, i, nodes[i], view)
        if grp["kind"] == "op":
            i = grp["nodes"][0]
            return self._generic(i, nodes[i], view), nodes[i]["op"]
        if grp["kind"] == "avgpool":
            n = nodes[grp["nodes"][0]]
            x = view(n["in"][0])
            window, strides, sp = grp["pool"]
            oshape = (
                x.shape[0],
                (x.shape[1] + sp[0][0] + sp[0][1] - window[0]) // strides[0] + 1,
                (x.shape[2] + sp[1][0] + sp[1][1] - window[1]) // strides[1] + 1,
                x.shape[-1],
            )
            out = view(grp["out"]).reshape(oshape)
            pool = prepare_avg_pool2d(window, x.shape[-1], strides=strides, pads=sp).call_unchecked
            return (lambda: pool(x, out)), f"avg_pool{window[0]}x{window[1]}"
        if grp["kind"] == "add_relu":
            n = nodes[grp["nodes"][0]]
            a, b = view(n["in"][0]), view(n["in"][1])
            out = view(grp["out"])
            return (lambda: add_relu(a, b, out)), "add+relu"
        return self._weight_step(grp, nodes, view, records)

    def _generic(self, i, node, view):
        ins = [_lit_ref(r) if isinstance(r, dict) else view(r) for r in node["in"]]
        out = view(node["out"])
        op = node["op"]
        b = self.batch
        uf = _UFUNCS.get(op)
        if uf is not None and out.dtype == np.result_type(*ins) and op not in _CMP:
            return lambda: uf(*ins, out=out)
        if op == "reduce_window_max" and out.ndim == 4 and ins[0].dtype == np.float32:
            win, st, pads = node["window"], node["strides"], node["pads"]
            if win[0] == win[3] == st[0] == st[3] == 1 and all(p == [0, 0] for p in pads):
                pool = prepare_max_pool2d(
                    (win[1], win[2]), ins[0].shape[-1], strides=(st[1], st[2])
                ).call_unchecked
                x = ins[0]
                return lambda: pool(x, out)

        def f():
            out[...] = exec_op(node, ins, b)

        return f

    def _weight_step(self, grp, nodes, view, records):
        i = grp["nodes"][0]
        node = nodes[i]
        wk = self.rt.weights[node["weight"]]
        x = view(node["in"][0])
        out = view(grp["out"])
        bias, act, pool = grp["bias"], grp["act"], grp.get("pool")
        scale = grp.get("scale")
        sfx = "+affine" if scale is not None else ""
        if self.rt.dynamic:
            dyn = self._dyn_step(grp, node, wk, x, out, bias, act, pool, scale)
            if dyn is not None:
                step, label = dyn
                if "dynchain" not in grp:  # linear steps: warmed up once chains are formed
                    step()  # compiles the dyn drivers (not cached on disk) at load, not in run
                grp["wlabel"] = label
                return step, label + sfx + _suffix(bias, act, pool)
        if node["op"] == "linear":
            x2 = x.reshape(-1, wk.k)
            y2 = out.reshape(x2.shape[0], wk.n)
            cand = self._choose(i, wk, x2.shape)
            grp["wlabel"] = cand.label
            sc = _scaled(cand, scale)
            step = _linear_step(sc, x2, y2, bias, act)
            if sc.dense is not None:  # a float layer: may join a fused chain of small layers
                code = {None: 0, _RELU: 1, _RELU6: 2}[act]
                grp["chain"] = (x2, y2, sc.dense, bias, code)
            return step, cand.label + sfx + _suffix(bias, act, None)
        conv = _ConvGeometry(node, x.shape)
        if pool is None:
            conv_out = out
        else:
            conv_out = np.empty((*x.shape[:1], *conv.out, wk.n), np.float32)
        cand = self._choose(i, wk, None, conv=conv)
        grp["wlabel"] = cand.label
        sc = _scaled(cand, scale, wk)
        step = _conv_step(sc, wk, conv, x, conv_out, bias, act, pool, out)
        label = cand.label
        if _plane_ok(sc, conv) and (sc.plane or not conv.pointwise):
            label = label.replace("spmm_csr(", "spmm_csr_conv(planar, ", 1)
            grp["wlabel"] = label
        return step, label + sfx + _suffix(bias, act, pool)

    def _dyn_step(self, grp, node, wk, x, out, bias, act, pool, scale):
        """A dynamic-range int8 step (``activations="dynamic_int8"``) for a linear or non-grouped
        1-D/2-D conv node whose weight has integer codes; None otherwise (the float path runs)."""
        rt = self.rt
        path = "VNNI" if rt.vnni else "portable"
        if node["op"] == "linear":
            dw = wk.dyn(vnni=rt.vnni)
            if dw is None:
                return None
            if scale is not None:
                dw = dw.rescaled(scale)
            x2 = x.reshape(-1, wk.k)
            y2 = out.reshape(x2.shape[0], wk.n)
            grp["dynchain"] = (x2, y2, dw, bias, act)
            return _dyn.bind_linear(dw, x2, y2, bias, act), f"dyn_qgemm(u8 x s8, {path})"
        conv = _ConvGeometry(node, x.shape)
        if conv.groups != 1 or conv.nd not in (1, 2):
            return None
        dw = wk.dyn(vnni=rt.vnni, cin=conv.kernel[-2], kw=_dyn_kw(conv))
        if dw is None:
            return None
        if scale is not None:
            dw = dw.rescaled(scale)
        if pool is None:
            conv_out = out
        else:
            conv_out = np.empty((*x.shape[:1], *conv.out, wk.n), np.float32)
        run = _dyn_conv_bind(dw, conv, x, conv_out, bias, act)
        label = f"dyn_qconv(u8 x s8, {path})"
        if pool is None:
            return run, label
        win, st = pool
        mp = prepare_max_pool2d(win, conv_out.shape[-1], strides=st).call_unchecked

        def pooled():
            run()
            mp(conv_out, out)

        return pooled, label

    def _choose(self, i, wk, x2_shape, conv=None) -> _Cand:
        """The kernel for weight node i at this input shape: the encoding's own kernel or, when
        autotuning and the decoded weight is small, whichever of it and float32 (BLAS for
        linear, the direct kernel for conv) is faster on this shape. Grouped convs run float32."""
        rt = self.rt
        cands = list(wk.candidates)
        if conv is not None and conv.groups != 1:
            return wk.direct_candidate()
        if conv is not None and rt.autotune and wk.entry.encoding not in ("csr", "csr_codebook"):
            # a conv weight with at most half its entries nonzero (N:M, or pruned and then
            # quantized / clustered into a dense encoding) may run the planar sparse conv on its
            # nonzeros as CSR; timed like any candidate
            if np.count_nonzero(wk.dense()) <= 0.5 * wk.k * wk.n:
                plane = wk.plane_candidate()
                if _plane_ok(plane, conv):
                    cands.append(plane)
        if conv is not None and conv.pointwise and rt.autotune:
            # a 1x1 conv runs a CSR weight as a linear kernel over the pixels; the planar
            # sparse conv (pixels in vector lanes) is the other candidate
            cands += [
                dataclasses.replace(c, plane=True)
                for c in cands
                if c.csr is not None and _plane_ok(c, conv)
            ]
        n_native = len(cands)
        if not cands or (rt.autotune and wk.decoded_bytes <= rt.autotune_max_bytes):
            if conv is not None:
                cands.append(wk.direct_candidate())
                if conv.pointwise and rt.autotune:
                    cands.append(wk.dense_candidate())
            else:
                cands.append(wk.dense_candidate())
                if rt.autotune and x2_shape[0] <= 4:  # small batches: the register-tiled GEMV
                    cands.append(wk.gemv_candidate())
        if len(cands) == 1 or not rt.autotune:
            return cands[0]
        key = (i, self.batch)
        if key not in rt._choice:
            rt._choice[key] = _fastest(cands, n_native, x2_shape, conv, wk)
        return cands[rt._choice[key]]

    # -- running -----------------------------------------------------------------------------
    def run(self, x):
        self.input_view[...] = x  # x is float32 of this shape (checked); cheaper than np.copyto
        clock = time.perf_counter
        t = self._t
        k = 0
        for fn in self.steps:
            t0 = clock()
            fn()
            t[k] = clock() - t0
            k += 1
        self.rt._last_b = self.batch
        return tuple([np.array(v) if v is None else v.copy() for v in self.output_views])

    def times(self):
        return list(zip(self._first, self.labels, list(self._t), strict=True))

    def exec_node(self, i, ins):
        """One node on its own (no fusion): weight nodes run the plan's kernel for them."""
        node = self.rt.nodes[i]
        op = node["op"]
        if op in _ops.QUANT_OPS:  # the reference arithmetic: equal to the kernels bit for bit
            t = self.rt.artifact.tensors
            arrs = {node[k]: t[node[k]].parts["value"] for k in _QW if k in node}
            return _quant.reference_node(node, ins, self.rt.quant, arrs)
        rt = self.rt
        if op == "linear":
            wk = rt.weights[node["weight"]]
            x = ins[0]
            x2 = np.ascontiguousarray(x.reshape(-1, wk.k), np.float32)
            dw = wk.dyn(vnni=rt.vnni) if rt.dynamic else None
            if dw is not None:
                return _dyn.dyn_linear(x2, dw).reshape(*x.shape[:-1], wk.n)
            y = self._choose(i, wk, x2.shape).fn(x2, None)
            return y.reshape(*x.shape[:-1], wk.n)
        if op == "conv":
            wk = rt.weights[node["weight"]]
            x = np.ascontiguousarray(ins[0], np.float32)
            conv = _ConvGeometry(node, x.shape)
            y = np.empty((x.shape[0], *conv.out, wk.n), np.float32)
            if rt.dynamic and conv.groups == 1 and conv.nd in (1, 2):
                dw = wk.dyn(vnni=rt.vnni, cin=conv.kernel[-2], kw=_dyn_kw(conv))
                if dw is not None:
                    _dyn_conv_bind(dw, conv, x, y, None, None)()
                    return y
            cand = self._choose(i, wk, None, conv=conv)
            _conv_step(cand, wk, conv, x, y, None, None, None, y)()
            return y
        return exec_op(node, ins, self.batch)


def _scaled(cand: _Cand, scale, wk=None) -> _Cand:
    """`cand` with its outputs multiplied per channel by `scale` (a folded affine chain): float
    candidates get the scale folded into their own decoded copy of W, the encoding's own
    kernels an epilogue."""
    if scale is None:
        return cand
    if cand.dense is not None or cand.fn is None:
        d = cand.dense if cand.dense is not None else wk.dense()
        return dataclasses.replace(cand, dense=np.ascontiguousarray(d * scale, np.float32))
    fn = cand.fn

    def scaled_fn(x, bias):
        y = fn(x, None)
        y *= scale
        if bias is not None:
            y += bias
        return y

    return dataclasses.replace(
        cand, fn=scaled_fn, scaled=True, scale=np.ascontiguousarray(scale, np.float32)
    )


def _copy_then(src, layers, out):
    """An `mlp_chain` closure reading a private copy of ``src`` (refreshed on each call)."""
    buf = np.empty_like(src)
    inner = mlp_chain(layers, buf, out)
    copy = np.copyto

    def f():
        copy(buf, src)
        inner()

    return f


def _same_buffer(a, b) -> bool:
    return a.ctypes.data == b.ctypes.data and a.nbytes == b.nbytes


def _min_time(fns, reps: int = 9) -> float:
    """Minimum over `reps` runs of calling every function in `fns` once (after a warm-up)."""
    for f in fns:
        f()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for f in fns:
            f()
        best = min(best, time.perf_counter() - t0)
    return best


def _channel_vector(ref, static, consts, n, rank):
    """A static float32 operand that varies only along the last axis, as an ``(n,)`` vector."""
    if isinstance(ref, dict):
        if ref["dtype"] != "float32":
            return None
        return np.full(n, _lit_value(ref), np.float32)
    if not isinstance(ref, str) or ref not in static:
        return None
    b = np.asarray(consts[ref])
    if (
        b.dtype != np.float32
        or b.ndim > rank
        or any(d != 1 for d in b.shape[:-1])
        or (b.ndim and b.shape[-1] not in (1, n))
    ):
        return None
    return np.broadcast_to(b.reshape(-1), (n,)).astype(np.float32)


def _suffix(bias, act, pool) -> str:
    parts = (["+bias"] if bias is not None else []) + ([f"+{act}"] if act else [])
    if pool:
        parts.append(f"+maxpool{pool[0][0]}x{pool[0][1]}")
    return "".join(parts)


def _dense_mm(x, w, bias):
    y = x @ w
    if bias is not None:
        y += bias
    return y


def _activate(y, act):
    if act == _RELU:
        np.maximum(y, 0.0, out=y)
    elif act == _RELU6:
        np.clip(y, 0.0, 6.0, out=y)


def _linear_step(cand, x2, y2, bias, act):
    """One fused linear step writing into the arena view ``y2``."""
    dense = cand.dense
    if cand.gemv:  # x2 rows as a batch of 1x1 images through the direct conv kernel
        k, n = dense.shape
        cw = prepare_conv2d(dense.reshape(1, 1, k, n), bias, activation=act)
        run = cw.call_unchecked
        x4 = x2.reshape(x2.shape[0], 1, 1, k)
        y4 = y2.reshape(y2.shape[0], 1, 1, n)
        return lambda: run(x4, y4)
    if dense is not None:  # BLAS straight into the arena, then the epilogue in place
        mm = np.matmul
        if act is None and bias is None:
            return lambda: mm(x2, dense, out=y2)
        b = np.zeros(dense.shape[1], np.float32) if bias is None else bias
        code = {None: 0, _RELU: 1, _RELU6: 2}[act]

        def f():
            mm(x2, dense, out=y2)
            bias_act(y2, b, code)

        return f
    if x2.shape[0] == 1:  # batch 1: a bound GEMV, affine scale, bias and act fused
        code = {None: 0, _RELU: 1, _RELU6: 2}[act]
        if cand.nm is not None and nm24_gemv_ok(cand.nm):
            return bind_nm24_gemv(cand.nm, x2[0], y2[0], bias, code, scale=cand.scale)
        if cand.lanes is not None:
            return bind_lanes_gemv(cand.lanes, x2[0], y2[0], bias, code, scale=cand.scale)
    fn = cand.fn

    def h():
        y2[...] = fn(x2, bias)  # the packed / sparse kernels apply the bias themselves
        if act is not None:
            _activate(y2, act)

    return h


class _ConvGeometry:
    """Output size, padding and im2col shape of one conv node at one input shape."""

    def __init__(self, node, xshape):
        self.node = node
        kshape = node["kernel"]
        self.nd = nd = len(kshape) - 2
        self.groups = node.get("groups", 1)
        self.kernel = tuple(kshape)
        self.strides = tuple(node["strides"])
        self.dilation = tuple(node["dilation"])
        self.pads = tuple(tuple(p) for p in node["pads"])
        self.xshape = tuple(xshape)
        out = []
        for i in range(nd):
            span = (kshape[i] - 1) * self.dilation[i] + 1
            lo, hi = self.pads[i]
            out.append((xshape[i + 1] + lo + hi - span) // self.strides[i] + 1)
        self.out = tuple(out)
        self.rows = xshape[0] * math.prod(out)
        self.k = math.prod(kshape[:-1])
        self.pointwise = (
            self.groups == 1
            and all(k == 1 for k in kshape[:nd])
            and all(st == 1 for st in self.strides)
            and all(p == (0, 0) for p in self.pads)
        )


def _dyn_kw(conv) -> int | None:
    """The kernel width for the window-row packing of `_dynkernels` (None: dilated along W)."""
    return conv.kernel[conv.nd - 1] if conv.dilation[-1] == 1 else None


def _dyn_conv_bind(dw, conv, x, conv_out, bias, act):
    """`_dynkernels.bind_conv2d` for a 1-D or 2-D `_ConvGeometry` (1-D as H = 1)."""
    if conv.nd == 2:
        x4 = x
        kern, st, dil, pads = conv.kernel[:2], conv.strides, conv.dilation, conv.pads
    else:
        x4 = x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
        kern, st, dil = (1, conv.kernel[0]), (1, conv.strides[0]), (1, conv.dilation[0])
        pads = ((0, 0), conv.pads[0])
    out2 = conv_out.reshape(conv.rows, dw.n)
    return _dyn.bind_conv2d(
        dw, x4, out2, kernel_hw=kern, strides=st, dilation=dil, pads=pads, bias=bias, act=act
    )


def _conv_step(cand, wk, conv, x, conv_out, bias, act, pool, out):
    """One fused conv step: the direct float32 kernel, or im2col + the weight's own kernel;
    then bias, activation and max pooling into ``out``."""
    if conv.pointwise and not cand.label.startswith("conv(") and not cand.plane:
        # a 1x1 stride-1 conv is a matmul over the pixels: any linear kernel, no im2col
        run = _linear_step(
            cand, x.reshape(conv.rows, conv.k), conv_out.reshape(conv.rows, wk.n), bias, act
        )
    elif cand.dense is not None or cand.fn is None:
        dense = cand.dense if cand.dense is not None else wk.dense()
        run = _direct_conv(conv, dense, x, conv_out, bias, act)
    elif _plane_ok(cand, conv):
        fused = pool is not None and conv.nd == 2
        run = _plane_conv(cand.csr, conv, x, out if fused else conv_out, bias, act,
                          pool if fused else None, cand.scale)  # fmt: skip
        if fused:
            return run
    elif cand.csr is not None and conv.nd in (1, 2) and not cand.scaled:
        run = _sparse_conv(cand.csr, conv, x, conv_out, bias, act)
    else:
        cols = np.empty((conv.rows, conv.k), np.float32)
        fill = _im2col(conv, x, cols)
        y2 = conv_out.reshape(conv.rows, wk.n)
        fn = cand.fn

        def run():
            fill()
            y2[...] = fn(cols, bias)
            if act is not None:
                _activate(y2, act)

    if pool is None:
        return run
    win, st = pool
    mp = prepare_max_pool2d(win, conv_out.shape[-1], strides=st).call_unchecked

    def pooled():
        run()
        mp(conv_out, out)

    return pooled


def _fastest(cands, n_native, x2_shape, conv, wk) -> int:
    """Index of the fastest candidate on a zero input of the planned shape: candidates timed
    round robin (so a burst of load hits all of them), the minimum of 9 runs each; a decoded
    float32 candidate (after the first `n_native`) must beat the encoding's own kernels by 5% to
    be chosen (a tie keeps the smaller weight)."""
    clock = time.perf_counter
    if conv is not None:
        x = np.zeros(conv.xshape, np.float32)
        y = np.empty((conv.xshape[0], *conv.out, wk.n), np.float32)
    else:
        x = np.zeros(x2_shape, np.float32)
        y = np.empty((x2_shape[0], wk.n), np.float32)
    steps = []
    for c in cands:
        if conv is not None:
            steps.append(_conv_step(c, wk, conv, x, y, None, None, None, y))
        else:
            steps.append(_linear_step(c, x, y, None, None))
    for step in steps:
        step()  # compile / warm up
    best = [math.inf] * len(steps)
    for _ in range(3):
        for ci, step in enumerate(steps):
            for _ in range(3):
                t0 = clock()
                step()
                best[ci] = min(best[ci], clock() - t0)
    floats = range(n_native, len(steps))
    if not n_native:
        return min(floats, key=best.__getitem__)
    native = min(range(n_native), key=best.__getitem__)
    fl = min(floats, key=best.__getitem__) if len(floats) else native
    # a float linear layer at a small batch may join an `mlp_chain` with its neighbours, which
    # saves a step of its own: credit it that step's cost (else a chain of small compressed
    # layers is cut into separate steps that are each a little faster and together slower)
    credit = _CHAIN_CREDIT_S if conv is None and x2_shape[0] <= 4 else 0.0
    return fl if best[fl] - credit < 0.95 * best[native] else native


# Measured on LeNet-5 / FC AutoEncoder steps (AMD EPYC, one thread): a layer run as its own step
# costs ~1 us more than the same layer inside an `mlp_chain` (dispatch, call, arena views).
_CHAIN_CREDIT_S = 1.0e-6


def _direct_candidate(self) -> _Cand:
    d = self.dense()
    label = (
        "conv(f32"
        + ("" if self.entry.encoding == "dense" else f", decoded {self.entry.encoding}")
        + ")"
    )
    return _Cand(label, None, d.nbytes, dense=d)


_WeightKernel.direct_candidate = _direct_candidate


def _plane_candidate(self) -> _Cand:
    """The weight's nonzeros as CSR (for a sparse encoding without its own CSR, e.g. N:M): the
    planar sparse conv's input. Built once from the decoded weight."""
    if self._plane is None:
        d = self.dense()
        nz = d.T != 0  # (N, K)
        indptr = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64)
        cols = np.nonzero(nz)[1]
        w = CSRMatrix(
            shape=(self.k, self.n),
            indptr=indptr,
            indices=cols.astype(np.uint16 if self.k <= 65536 else np.int32),
            values=np.ascontiguousarray(d.T[nz], np.float32),
        )
        label = f"spmm_csr(f32 from {self.entry.encoding}, density={w.nnz / max(d.size, 1):.3f})"
        self._plane = _Cand(label, lambda x, bias: spmm_csr(x, w, bias), w.nbytes, csr=w)
    return self._plane


_WeightKernel.plane_candidate = _plane_candidate


def _im2col(conv, x, cols):
    """A closure filling ``cols`` with the im2col of ``x`` (2-D convs; 1-D as H = 1)."""
    if conv.nd == 2:
        x4 = x
        kern, st, dil = conv.kernel[:2], conv.strides, conv.dilation
        lo, out_hw = (conv.pads[0][0], conv.pads[1][0]), conv.out
    elif conv.nd == 1:
        x4 = x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
        kern, st, dil = (1, conv.kernel[0]), (1, conv.strides[0]), (1, conv.dilation[0])
        lo, out_hw = (0, conv.pads[0][0]), (1, conv.out[0])
    else:
        node = conv.node

        def generic():
            cols[...] = _im2col_numpy(node, x).reshape(cols.shape)

        return generic
    return lambda: im2col_nhwc(x4, cols, kern, st, dil, lo, out_hw)


def _im2col_numpy(node, x):
    kshape = node["kernel"]
    nd = len(kshape) - 2
    dil = node["dilation"]
    span = tuple((kshape[i] - 1) * dil[i] + 1 for i in range(nd))
    pads = [[0, 0]] + [list(p) for p in node["pads"]] + [[0, 0]]
    if any(p[0] or p[1] for p in pads):
        # negative padding crops (lax semantics)
        crop = tuple(slice(max(-p[0], 0), x.shape[i] - max(-p[1], 0)) for i, p in enumerate(pads))
        x = np.pad(x[crop], [[max(p[0], 0), max(p[1], 0)] for p in pads])
    v = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(1, nd + 1)))
    v = v[(slice(None),) + tuple(slice(None, None, s) for s in node["strides"])]
    if any(d != 1 for d in dil):
        v = v[(Ellipsis,) + tuple(slice(None, None, d) for d in dil)]
    perm = (*range(nd + 1), *range(nd + 2, 2 * nd + 2), nd + 1)
    return np.ascontiguousarray(np.transpose(v, perm), np.float32)


def _direct_conv(conv, dense2d, x, out, bias, act):
    """A closure computing the float32 conv of ``x`` into ``out`` with the direct NHWC kernels
    of `jaxcompress_kernels.conv` (bias and activation fused; 1-D convs run as H = 1)."""
    kern = dense2d.reshape(conv.kernel)
    if conv.nd not in (1, 2):
        return _grouped_conv(conv, kern, x, out, bias, act)
    if conv.nd == 1:
        x4 = x.reshape(x.shape[0], 1, *x.shape[1:])
        o4 = out.reshape(out.shape[0], 1, *out.shape[1:])
        kern = kern.reshape(1, *kern.shape)
        st, dil = (1, conv.strides[0]), (1, conv.dilation[0])
        pads = ((0, 0), conv.pads[0])
    else:
        x4, o4, st, dil, pads = x, out, conv.strides, conv.dilation, conv.pads
    cin = x.shape[-1]
    if conv.groups == 1:
        cw = prepare_conv2d(kern, bias, strides=st, pads=pads, dilation=dil, activation=act)
    elif conv.groups == cin and conv.kernel[-2] == 1:
        cw = prepare_depthwise_conv2d(
            kern,
            bias,
            multiplier=conv.kernel[-1] // cin,
            strides=st,
            pads=pads,
            dilation=dil,
            activation=act,
        )
    else:
        return _grouped_conv(conv, dense2d.reshape(conv.kernel), x, out, bias, act)
    run = cw.call_unchecked
    return lambda: run(x4, o4)


def _plane_ok(cand, conv) -> bool:
    """A CSR weight on a stride-1 1-D/2-D conv runs `_sparse_conv.SparsePlaneConv` (an affine
    scale is folded into its values)."""
    return (
        cand.csr is not None
        and conv.nd in (1, 2)
        and conv.groups == 1
        and all(st == 1 for st in conv.strides)
        and all(lo >= 0 and hi >= 0 for lo, hi in conv.pads)
        and math.prod(d + lo + hi for d, (lo, hi) in zip(conv.xshape[1:-1], conv.pads, strict=True))
        * conv.xshape[-1]
        < 2**30
    )


def _plane_conv(w, conv, x, out, bias, act, pool, scale=None):
    """A CSR conv, stride 1: one output plane per channel in registers, one vector FMA per
    nonzero and 16 pixels (`_sparse_conv`); bias, activation and (2-D) max pooling fused."""
    if conv.nd == 2:
        x4, kern, dil, pads = x, conv.kernel[:2], conv.dilation, conv.pads
    else:
        x4 = x.reshape(x.shape[0], 1, *x.shape[1:])
        kern, dil, pads = (1, conv.kernel[0]), (1, conv.dilation[0]), ((0, 0), conv.pads[0])
    code = {None: 0, _RELU: 1, _RELU6: 2}[act]
    sp = SparsePlaneConv(w.indptr, w.indices, w.values, w.scales, kernel_hw=kern, dilation=dil,
                         pads=pads, xshape=x4.shape, bias=bias, act=code, pool=pool,
                         col_scale=scale)  # fmt: skip
    o4 = out.reshape(sp.out_shape)
    run = sp.run
    return lambda: run(x4, o4)


def _sparse_conv(w, conv, x, out, bias, act):
    """A CSR conv: the transposed im2col (taps x pixels), then per output channel one vector over
    the pixels per nonzero weight (`sparse._spmm_csr_kernel`), then bias/activation into out."""
    from jaxcompress_kernels.sparse import _spmm_csr_kernel

    if conv.nd == 2:
        x4, kern, st, dil = x, conv.kernel[:2], conv.strides, conv.dilation
        lo, out_hw = (conv.pads[0][0], conv.pads[1][0]), conv.out
    else:
        x4 = x.reshape(x.shape[0], 1, *x.shape[1:])
        kern, st, dil = (1, conv.kernel[0]), (1, conv.strides[0]), (1, conv.dilation[0])
        lo, out_hw = (0, conv.pads[0][0]), (1, conv.out[0])
    cols_t = np.empty((conv.k, conv.rows), np.float32)
    out_t = np.zeros((w.shape[1], conv.rows), np.float32)
    y2 = out.reshape(conv.rows, w.shape[1])
    q = w.scales is not None
    sc = w.scales if q else np.ones(1, np.float32)
    b = np.zeros(w.shape[1], np.float32) if bias is None else bias
    code = {None: 0, _RELU: 1, _RELU6: 2}[act]

    def run():
        im2col_t_nhwc(x4, cols_t, kern, st, dil, lo, out_hw)
        out_t[...] = 0.0
        _spmm_csr_kernel(cols_t, w.indptr, w.indices, w.values, sc, q, out_t)
        y2[...] = out_t.T
        bias_act(y2, b, code)

    return run


def _grouped_conv(conv, kern, x, out, bias, act):
    g = conv.groups
    cin_g = kern.shape[-2]
    cout_g = kern.shape[-1] // g
    node = conv.node

    def run():
        for gi in range(g):
            xs = np.ascontiguousarray(x[..., gi * cin_g : (gi + 1) * cin_g])
            cols = _im2col_numpy(node, xs)
            w = kern[..., gi * cout_g : (gi + 1) * cout_g].reshape(-1, cout_g)
            out[..., gi * cout_g : (gi + 1) * cout_g] = (
                cols.reshape(-1, w.shape[0]).dot(w).reshape(*out.shape[:-1], cout_g)
            )
        if bias is not None:
            np.add(out, bias, out=out)
        if act is not None:
            _activate(out, act)

    return run


_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
    "neg": np.negative,
    "exp": np.exp,
    "tanh": np.tanh,
    "abs": np.abs,
    "sqrt": np.sqrt,
    "square": np.square,
}
_CMP = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})


# ----------------------------------------------------------------------------------------------
# full-integer steps (`_qkernels`; arithmetic of `format.quant`)

_QW = ("weight", "weight_scale", "bias")


def _qstep(rt: Runtime, i: int, node: dict, view):
    """``(closure, label)`` running q-node ``i`` with the integer kernels into its arena view."""
    op = node["op"]
    recs = rt.quant
    src = node["in"][0]
    x = view(src)
    out = view(node["out"])
    if op == "quantize":
        r = recs[node["out"]]
        s, zp = np.float32(r["scale"]), int(r["zero_point"])
        xf, of = x.reshape(-1), out.reshape(-1)
        return (lambda: _qk.quantize_q(xf, s, zp, of)), "quantize(f32->int8)"
    if op == "dequantize":
        r = recs[src]
        s, zp = np.float32(r["scale"]), int(r["zero_point"])
        xf, of = x.reshape(-1), out.reshape(-1)
        return (lambda: _qk.dequantize_q(xf, s, zp, of)), "dequantize(int8->f32)"
    xr, yr = recs[src], recs[node["out"]]
    x_zp, y_zp = int(xr["zero_point"]), int(yr["zero_point"])
    qmin, qmax = int(node.get("qmin", -128)), int(node.get("qmax", 127))
    if op == "qlinear":
        w = rt.qweight(i)
        x2 = x.reshape(-1, w.k)
        y2 = out.reshape(x2.shape[0], w.n)
        label = f"qgemm(int8, {'vnni' if w.vnni else 'portable'})"
        if w.kp == w.k:
            return w.bind(x2, y2, y_zp, qmin, qmax), label
        xp = np.zeros((x2.shape[0], w.kp), np.int8)
        xv = xp[:, : w.k]
        gemm = w.bind(xp, y2, y_zp, qmin, qmax)

        def padded():
            np.copyto(xv, x2)
            gemm()

        return padded, label
    if op == "qconv2d":
        return _qconv_step(rt, i, node, x, out, x_zp, y_zp, qmin, qmax)
    if op == "qmax_pool2d":
        (kh, kw), (sh, sw), pads = node["window"], node["strides"], node["pads"]
        pt, pl = pads[0][0], pads[1][0]
        return (lambda: _qk.maxpool_q(x, kh, kw, sh, sw, pt, pl, out)), f"qmax_pool{kh}x{kw}"
    if op == "qavg_pool2d":
        (kh, kw), (sh, sw), pads = node["window"], node["strides"], node["pads"]
        pt, pl = pads[0][0], pads[1][0]
        m, r = _quant.pool_multiplier(xr["scale"], yr["scale"], node["count"])
        acc = np.zeros(x.shape[-1], np.int32)

        def avg():
            _qk.avgpool_q(x, kh, kw, sh, sw, pt, pl, x_zp, m, r, y_zp, qmin, qmax, acc, out)

        return avg, f"qavg_pool{kh}x{kw}"
    if op == "qmean":
        axes = sorted(node["axes"])
        count = math.prod(x.shape[a] for a in axes)
        m, r = _quant.pool_multiplier(xr["scale"], yr["scale"], count)
        if axes != list(range(axes[0], axes[-1] + 1)):  # non-adjacent axes: rare; reference
            recs_, n_ = recs, node

            def slow():
                out[...] = _quant.reference_node(n_, [x], recs_, {})

            return slow, "qmean(numpy reference)"
        a0, a1 = axes[0], axes[-1] + 1
        x3 = x.reshape(math.prod(x.shape[:a0]), count, math.prod(x.shape[a1:]))
        o2 = out.reshape(x3.shape[0], x3.shape[2])
        acc = np.zeros(x3.shape[2], np.int32)
        return (lambda: _qk.mean_q(x3, x_zp, m, r, y_zp, qmin, qmax, acc, o2)), "qmean"
    if op == "qadd":
        br = recs[node["in"][1]]
        b = view(node["in"][1]).reshape(-1)
        ma, mb, r = _quant.add_multipliers(xr["scale"], br["scale"], yr["scale"])
        b_zp = int(br["zero_point"])
        af, of = x.reshape(-1), out.reshape(-1)
        return (lambda: _qk.add_q(af, b, x_zp, b_zp, ma, mb, r, y_zp, qmin, qmax, of)), "qadd"
    raise ArtifactError(f"graph node {i} ({op}) has no integer kernel")  # unreachable


def _qconv_step(rt, i, node, x, out, x_zp, y_zp, qmin, qmax):
    t = rt.artifact.tensors
    wq = t[node["weight"]].parts["value"]
    kh, kw, cg, cout = wq.shape
    groups = node.get("groups", 1)
    (sh, sw), (dh, dw), pads = node["strides"], node["dilation"], node["pads"]
    pt, pl = pads[0][0], pads[1][0]
    b, _, _, cin = x.shape
    _, oh, ow, _ = out.shape
    path = "vnni" if rt.vnni else "portable"
    if groups > 1 and cg == 1 and cout == cin:  # depthwise, multiplier 1
        ws = t[node["weight_scale"]].parts["value"]
        xr, yr = rt.quant[node["in"][0]], rt.quant[node["out"]]
        mult, shift = _quant.channel_multipliers(xr["scale"], ws, yr["scale"])
        beff = (
            t[node["bias"]].parts["value"].astype(np.int64)
            if "bias" in node
            else np.zeros(cout, np.int64)
        )
        if min(min(p) for p in pads) >= 0:
            bias = t[node["bias"]].parts["value"] if "bias" in node else None
            dwq = _qk.QDepthwise(
                wq, bias, x_zp, mult, shift, x.shape, out.shape, (sh, sw), (dh, dw), pads
            )
            return dwq.bind(x, out, y_zp, qmin, qmax), f"qdepthwise{kh}x{kw}(int8 padded rows)"
        chan = np.stack([beff, mult, np.left_shift(np.int64(1), shift - 1), shift])
        chant = np.ascontiguousarray(np.tile(chan, (1, ow)))
        wt = np.ascontiguousarray(np.tile(wq.reshape(kh * kw, cout).astype(np.int32), (1, ow)))
        prm = np.array([y_zp, qmin, qmax, x_zp, sh, sw, dh, dw, pt, pl, kw], np.int64)
        dwk = _qk.depthwise_q
        return (lambda: dwk(x, wt, chant, prm, out)), f"qdepthwise{kh}x{kw}(int8)"
    rows = b * oh * ow
    if groups == 1:
        y2 = out.reshape(rows, cout)
        pointwise = (
            kh == kw == 1 and (sh, sw) == (1, 1) and all(p == [0, 0] for p in pads) and cin % 4 == 0
        )
        if pointwise:
            w = rt.qweight(i)
            x2 = x.reshape(rows, cin)
            return w.bind(x2, y2, y_zp, qmin, qmax), f"qgemm(int8 1x1, {path})"
        if rt.vnni and dw == 1 and min(min(p) for p in pads) >= 0:
            ws = t[node["weight_scale"]].parts["value"]
            xr, yr = rt.quant[node["in"][0]], rt.quant[node["out"]]
            mult, shift = _quant.channel_multipliers(xr["scale"], ws, yr["scale"])
            bias = t[node["bias"]].parts["value"] if "bias" in node else None
            d = _qk.QConvDirect(
                wq, bias, x_zp, mult, shift, x.shape, out.shape, (sh, sw), (dh, dw), pads
            )
            return d.bind(x, y2, y_zp, qmin, qmax), f"qconv{kh}x{kw}(int8 direct, vnni)"
        w = rt.qweight(i)
        cols = np.zeros((rows, w.kp), np.int8)
        geo = np.array([kh, kw, sh, sw, dh, dw, pt, pl, 0, cin, x_zp, oh, ow], np.int64)
        conv = w.bind_conv(x, geo, cols, y2, y_zp, qmin, qmax)
        return conv, f"qconv{kh}x{kw}(int8 im2col+qgemm, {path})"
    # grouped (incl. depthwise with a channel multiplier): one GEMM per group
    ws = t[node["weight_scale"]].parts["value"]
    xr, yr = rt.quant[node["in"][0]], rt.quant[node["out"]]
    bias = t[node["bias"]].parts["value"] if "bias" in node else None
    og = cout // groups
    gw = []
    for g in range(groups):
        sl = slice(g * og, (g + 1) * og)
        mult, shift = _quant.channel_multipliers(xr["scale"], ws[sl], yr["scale"])
        w2 = wq[..., sl].reshape(-1, og)
        gw.append(
            _qk.pack_qgemm(
                w2,
                None if bias is None else bias[sl],
                xr["zero_point"],
                mult,
                shift,
                vnni=rt.vnni,
            )
        )
    cols = np.zeros((rows, gw[0].kp), np.int8)
    tmp = np.empty((rows, og), np.int8)
    y2 = out.reshape(rows, cout)
    steps = []
    for g in range(groups):
        geo = np.array([kh, kw, sh, sw, dh, dw, pt, pl, g * cg, cg, x_zp, oh, ow], np.int64)
        steps.append(gw[g].bind_conv(x, geo, cols, tmp, y_zp, qmin, qmax))

    def grouped():
        for g in range(groups):
            steps[g]()
            y2[:, g * og : (g + 1) * og] = tmp

    return grouped, f"qconv{kh}x{kw}(int8 grouped x{groups}, {path})"
