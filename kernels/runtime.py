"""The edge runtime: executes a verified artifact's graph with NumPy and the packed kernels.

No JAX anywhere: this module imports NumPy, Numba (through the kernels) and the artifact reader.

Weights of ``linear``/``conv`` nodes are turned into kernel containers once, at construction:

| artifact encoding                          | kernel at run time                                  |
|--------------------------------------------|-----------------------------------------------------|
| `dense`                                    | ``x @ W`` (NumPy / BLAS, float32)                   |
| `csr` (float or int8 codes + scales)       | `spmm_csr`                                          |
| `nm` float, 1:4 or 2:4                     | `spmm_nm`                                           |
| `nm` 2..4-bit codes, per-channel scales    | `spmm_nm` (4-bit values)                            |
| `nm` codes with per-group scales           | `qmatmul` on the packed dense codes (no N:M kernel  |
|                                            | with group scales yet)                              |
| `packed` 2/3/4/8-bit                       | `qmatmul` (per-channel or per-group scales)         |
| `packed` 5..7-bit                          | decoded once to float32, ``x @ W``                  |
| `codebook`                                 | decoded once to float32: `spmm_csr` when at most    |
|                                            | half the weights are nonzero, else ``x @ W``        |

A ``conv`` node is im2col + the weight's matmul (``K = prod(kernel spatial) * in_channels``).

Example:
  >>> from jaxcompress_kernels import runtime
  >>> rt = runtime.load("model.jcx", num_threads=1)        # doctest: +SKIP
  >>> logits = rt.run(x)                                     # doctest: +SKIP
  >>> rt.self_check().ok, rt.op_times()                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from jaxcompress_kernels import artifact as _artifact
from jaxcompress_kernels.errors import ArtifactError, JaxCompressValueError
from jaxcompress_kernels.formats import (
    CSRMatrix,
    csr_from_dense,
    nm_from_dense,
    nm_from_quantized,
    pack_weight,
)
from jaxcompress_kernels.quantized import qmatmul
from jaxcompress_kernels.runtime_config import get_num_threads, set_num_threads
from jaxcompress_kernels.sparse import spmm_csr, spmm_nm

__all__ = ["Runtime", "SelfCheck", "load", "exec_op"]

_SPARSE_DENSITY = 0.5


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


class Runtime:
    """Executes an artifact's graph.

    Args:
      artifact: a verified `jaxcompress_kernels.artifact.Artifact` (or a path, loaded and verified).
      num_threads: threads for the parallel kernels during `run` (None keeps the current
        setting). NumPy's BLAS (dense matmuls) keeps its own thread pool: set
        ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` before starting the process to pin it.

    Attributes:
      plan: ``{weight name: kernel description}`` chosen at load.
      last_times: ``[(node index, op, seconds)]`` of the last `run`.
    """

    def __init__(self, artifact, *, num_threads: int | None = None):
        if not isinstance(artifact, _artifact.Artifact):
            artifact = _artifact.load(artifact)
        self.artifact = artifact
        self.num_threads = num_threads
        g = artifact.graph
        self.graph = g
        self.nodes = g["nodes"]
        self.symbolic = g["batch"] == "symbolic"
        self.static_batch = int(artifact.sample_input.shape[0])
        self.input_shape = tuple(g["input_shapes"][0])
        self.plan: dict[str, str] = {}
        self.last_times: list[tuple[int, str, float]] = []
        tensors = artifact.tensors
        weight_names = {n["weight"] for n in self.nodes if "weight" in n}
        other = {r for n in self.nodes for r in n["in"] if isinstance(r, str) and r in tensors}
        other |= {o for o in g["outputs"] if o in tensors}
        try:
            self.env0 = {name: _artifact.decode_dense(tensors[name]) for name in other}
            self.weights = {name: self._weight(tensors[name]) for name in weight_names}
        except ArtifactError:
            raise
        except (JaxCompressValueError, ValueError, TypeError, IndexError, KeyError) as e:
            # a container invariant failed while decoding: the file is bad
            raise ArtifactError(f"artifact {artifact.path!r} refused: {e}") from None

    # -- weights -------------------------------------------------------------------------
    def _weight(self, e):
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
            self.plan[e.name] = (
                f"spmm_csr({'int8' if w.scales is not None else 'f32'}, "
                f"density={w.nnz / max(k * n, 1):.3f})"
            )
            return lambda x: spmm_csr(x, w)
        if enc == "csr_codebook":
            w = CSRMatrix(
                shape=(k, n),
                indptr=e.parts["indptr"].astype(np.int64),
                indices=e.parts["indices"],
                values=np.ascontiguousarray(_artifact.csr_codebook_values(e), np.float32),
            )
            self.plan[e.name] = f"spmm_csr(f32 from codebook, density={w.nnz / max(k * n, 1):.3f})"
            return lambda x: spmm_csr(x, w)
        if enc == "nm" and a["m"] == 4 and a["n"] in (1, 2):
            if "values" in e.parts:
                w = nm_from_dense(_artifact.decode_dense(e).reshape(k, n), n=a["n"])
                self.plan[e.name] = f"spmm_nm({a['n']}:4, f32)"
                return lambda x: spmm_nm(x, w)
            codes, scales, _ = _artifact.decode_codes(e)
            if a["bits"] <= 4 and a.get("group_size") is None:
                w = nm_from_quantized(
                    codes.astype(np.int8), np.ascontiguousarray(scales[0]), n=a["n"]
                )
                self.plan[e.name] = f"spmm_nm({a['n']}:4, {a['bits']}-bit per-channel)"
                return lambda x: spmm_nm(x, w)
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
                self.plan[e.name] = f"qmatmul({bits}-bit, {gdesc}" + (
                    ", from N:M storage)" if enc == "nm" else ")"
                )
                return lambda x: qmatmul(x, w)
        dense = np.ascontiguousarray(_artifact.decode_dense(e).reshape(k, n), np.float32)
        if enc != "dense" and k * n and np.count_nonzero(dense) <= _SPARSE_DENSITY * k * n:
            w = csr_from_dense(dense)
            self.plan[e.name] = f"spmm_csr(f32, decoded {enc}, density={w.nnz / (k * n):.3f})"
            return lambda x: spmm_csr(x, w)
        self.plan[e.name] = "matmul(f32)" + ("" if enc == "dense" else f", decoded {enc}")
        return lambda x: x @ dense

    # -- execution -----------------------------------------------------------------------
    def _ref(self, env, r):
        if isinstance(r, dict):
            return _lit_ref(r)
        return env[r]

    def run(self, inputs):
        """Runs the graph.

        Args:
          inputs: ``(batch, *input_shape)`` float32 array (or a one-element list/tuple of it).

        Returns:
          The output array (or a tuple when the graph has several outputs).

        Raises:
          JaxCompressValueError: the input has the wrong shape or dtype.
        """
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
        if self.num_threads is not None and get_num_threads() != self.num_threads:
            set_num_threads(self.num_threads)
        env = self.initial_env(x)
        times: list[tuple[int, str, float]] = []
        self.run_nodes(env, 0, len(self.nodes), b, times=times)
        self.last_times = times
        outs = tuple(np.asarray(env[o]) for o in self.graph["outputs"])
        return outs[0] if len(outs) == 1 else outs

    __call__ = run

    def initial_env(self, x: np.ndarray) -> dict:
        """The value environment before node 0: constants plus the graph input ``x``.

        ``x`` must already be validated (``run`` does it); used with :meth:`run_nodes` to run a
        graph piecewise, e.g. up to an edge-cloud split point and on from it.
        """
        env = dict(self.env0)
        env[self.graph["inputs"][0]] = np.ascontiguousarray(x)
        return env

    def run_nodes(self, env: dict, start: int, stop: int, batch: int, *, times=None) -> dict:
        """Execute nodes ``[start, stop)`` in order, reading and writing ``env`` (returned).

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
        clock = time.perf_counter
        for i in range(start, stop):
            node = self.nodes[i]
            t0 = clock()
            ins = [self._ref(env, r) for r in node["in"]]
            try:
                env[node["out"]] = self._exec(node, ins, batch)
            except JaxCompressValueError:
                raise
            except (ValueError, TypeError, IndexError, KeyError) as e:
                raise JaxCompressValueError(
                    f"graph execution failed at node {i} ({node['op']}): {e}"
                ) from None
            if times is not None:
                times.append((i, node["op"], clock() - t0))
        return env

    def _exec(self, node, ins, b):
        op = node["op"]
        if op == "linear":
            x = ins[0]
            k = x.shape[-1]
            y = self.weights[node["weight"]](np.ascontiguousarray(x.reshape(-1, k), np.float32))
            return y.reshape(*x.shape[:-1], y.shape[-1])
        if op == "conv":
            return self._conv(node, ins[0])
        return exec_op(node, ins, b)

    def _conv(self, node, x):
        kshape = node["kernel"]
        nd = len(kshape) - 2
        dil = node["dilation"]
        span = tuple((kshape[i] - 1) * dil[i] + 1 for i in range(nd))
        pads = [[0, 0]] + [list(p) for p in node["pads"]] + [[0, 0]]
        if any(p[0] or p[1] for p in pads):
            # negative padding crops (lax semantics)
            crop = tuple(
                slice(max(-p[0], 0), x.shape[i] - max(-p[1], 0)) for i, p in enumerate(pads)
            )
            x = np.pad(x[crop], [[max(p[0], 0), max(p[1], 0)] for p in pads])
        v = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(1, nd + 1)))
        v = v[(slice(None),) + tuple(slice(None, None, s) for s in node["strides"])]
        if any(d != 1 for d in dil):
            v = v[(Ellipsis,) + tuple(slice(None, None, d) for d in dil)]
        # v: (B, *out_spatial, C, *kernel_spatial) -> (B, *out_spatial, *kernel_spatial, C)
        perm = (*range(nd + 1), *range(nd + 2, 2 * nd + 2), nd + 1)
        cols = np.ascontiguousarray(np.transpose(v, perm), np.float32)
        outer = cols.shape[: nd + 1]
        y = self.weights[node["weight"]](cols.reshape(math.prod(outer), -1))
        return y.reshape(*outer, y.shape[-1])

    # -- diagnostics ---------------------------------------------------------------------
    def op_times(self) -> dict[str, float]:
        """Seconds per op type in the last `run` (summed over nodes of that type)."""
        out: dict[str, float] = {}
        for _, op, t in self.last_times:
            out[op] = out.get(op, 0.0) + t
        return out

    def self_check(self, *, rtol: float = 1e-5, raise_on_failure: bool = False) -> SelfCheck:
        """Runs the bundled sample input and compares with the bundled expected output.

        Passes when ``max |y - y_ref| <= rtol * max |y_ref|`` (float arithmetic differs from the
        exporter's only in summation order).

        Raises:
          ArtifactError: when `raise_on_failure` and the check fails.
        """
        y = np.asarray(self.run(self.artifact.sample_input), np.float32)
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


def load(path, *, num_threads: int | None = None) -> Runtime:
    """`jaxcompress_kernels.artifact.load` (full verification) + `Runtime`."""
    return Runtime(_artifact.load(path), num_threads=num_threads)
