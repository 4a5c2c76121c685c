"""ONNX export of an artifact's graph and a three-way cross-check (JAX, our runtime, ONNX Runtime).

The ONNX model is built *from the artifact file* (through the verified reader), so ONNX Runtime runs
exactly the codes and scales the edge runtime runs:

| artifact weight                                   | ONNX                                               |
|---------------------------------------------------|----------------------------------------------------|
| 4-bit symmetric codes (`packed` or `nm`), groups  | ``com.microsoft.MatMulNBits`` (bits=4, block_size = |
| of a power of two >= 16 or per channel            | group size, or K rounded up to a power of two)     |
| other codes (2..8-bit, `packed`/`nm`/int8 `csr`)  | ``DequantizeLinear`` (int8/uint8 codes, per-channel|
|                                                   | ``axis`` or blocked ``block_size``) -> MatMul/Conv |
| float (`dense`, float `csr`/`nm`, `codebook`)     | decoded float32 initializer -> MatMul/Conv         |

Shapes are concrete in ONNX: the model is built for one batch size (``batch_size``).
ONNX Runtime sessions pin ``graph_optimization_level`` (basic) and
``session.qdq_matmulnbits_accuracy_level`` (fp32): at defaults ONNX Runtime rewrites weight-only
int8 ``DequantizeLinear -> MatMul`` into an int8-activation kernel and moves outputs by ~1%.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from jaxcompress._core import JaxCompressValueError
from jaxcompress_kernels import artifact as _artifact
from jaxcompress_kernels.packing import to_matmulnbits

__all__ = ["to_onnx", "save_onnx", "onnx_session", "cross_check", "CrossCheck", "ORT_OPTIONS"]

OPSET = 21
ORT_OPTIONS = {
    "graph_optimization_level": "ORT_ENABLE_BASIC",
    "session.qdq_matmulnbits_accuracy_level": "1",  # 1 = fp32 compute
    "MatMulNBits.accuracy_level": 1,
}


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:  # pragma: no cover
        raise JaxCompressValueError(
            "ONNX export needs the `onnx` package (pip install 'jaxcompress[test]')"
        ) from e
    return onnx, TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, art: _artifact.Artifact, batch_size: int):
        self.onnx, self.TP, self.h, self.nh = _onnx()
        self.art = art
        self.b = batch_size
        self.nodes = []
        self.inits = []
        self.names: dict[str, str] = {}  # our value/tensor name -> onnx name
        self.count = 0
        self.done_weights: dict[str, tuple] = {}
        self.shapes: dict[str, tuple] = {}

    def fresh(self, hint="t") -> str:
        self.count += 1
        return f"{hint.replace('/', '_').replace('%', 'v').replace(':', '_')}_{self.count}"

    def init(self, arr: np.ndarray, hint="c") -> str:
        name = self.fresh(hint)
        self.inits.append(self.nh.from_array(np.asarray(arr), name))
        return name

    def node(self, op, ins, *, hint=None, domain=None, **attrs) -> str:
        out = self.fresh(hint or op.lower())
        kw = {"domain": domain} if domain else {}
        self.nodes.append(self.h.make_node(op, ins, [out], name=out, **kw, **attrs))
        return out

    def ref(self, r) -> str:
        if isinstance(r, dict):
            v = r["lit"]
            return self.init(np.asarray(float(v) if isinstance(v, str) else v, r["dtype"]), "lit")
        if r not in self.names:
            e = self.art.tensors[r]  # a tensor read by a non-weight op: dense float
            self.names[r] = self.init(np.ascontiguousarray(_artifact.decode_dense(e)), r)
        return self.names[r]

    def dims(self, shape) -> list[int]:
        return [d if isinstance(d, int) else d[0] * self.b + d[1] for d in shape]

    def i64(self, vals) -> str:
        return self.init(np.asarray(vals, np.int64), "i64")

    # -- weights -------------------------------------------------------------------------
    def matmul(self, x: str, wname: str) -> str:
        e = self.art.tensors[wname]
        k, n = e.kn
        a = e.attrs
        if (
            e.encoding in ("packed", "nm")
            and "codes" in e.parts
            and a["bits"] == 4
            and a.get("symmetric", True)
        ):
            gs = a.get("group_size")
            block = gs if gs is not None else max(16, 1 << max(k - 1, 1).bit_length())
            if block >= 16 and block & (block - 1) == 0:
                codes, scales, _ = _artifact.decode_codes(e)
                if gs is None:
                    scales = scales.reshape(1, n)
                u = (codes + 8).astype(np.uint8)
                bq, s, _ = to_matmulnbits(
                    u, np.ascontiguousarray(scales, np.float32), bits=4, block_size=block
                )
                ins = [x, self.init(bq, wname + "_B"), self.init(s, wname + "_scales")]
                return self.node(
                    "MatMulNBits",
                    ins,
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=4,
                    block_size=block,
                    accuracy_level=ORT_OPTIONS["MatMulNBits.accuracy_level"],
                )
        w = self.weight_2d(e)
        return self.node("MatMul", [x, w])

    def quantized_codes(self, e):
        """(codes (K, N) int8/uint8, scales (G, N), zero points or None) or None if float."""
        if e.encoding in ("packed", "nm") and "codes" in e.parts:
            codes, scales, zps = _artifact.decode_codes(e)
            if zps is None:
                return codes.astype(np.int8), scales, None
            return codes.astype(np.uint8), scales, zps.astype(np.uint8)
        if e.encoding == "csr" and e.parts["values"].dtype == np.int8:
            k, n = e.kn
            ip = e.parts["indptr"].astype(np.int64)
            rows = np.repeat(np.arange(n), np.diff(ip))
            codes = np.zeros((n, k), np.int8)
            codes[rows, e.parts["indices"].astype(np.int64)] = e.parts["values"]
            return np.ascontiguousarray(codes.T), e.parts["scales"].reshape(1, n), None
        return None

    def dequant(self, codes, scales, zps, axis, block, hint) -> str:
        """DequantizeLinear over `codes` with (G, N) `scales` along `axis` (or blocks)."""
        ins = [self.init(codes, hint + "_codes")]
        if scales.shape[0] == 1:
            ins.append(self.init(np.ascontiguousarray(scales[0]), hint + "_scale"))
            zp = np.zeros(scales.shape[1], codes.dtype) if zps is None else zps[0]
            ins.append(self.init(np.ascontiguousarray(zp), hint + "_zp"))
            return self.node("DequantizeLinear", ins, axis=axis)
        ins.append(self.init(np.ascontiguousarray(scales), hint + "_scale"))
        zp = np.zeros(scales.shape, codes.dtype) if zps is None else zps
        ins.append(self.init(np.ascontiguousarray(zp), hint + "_zp"))
        return self.node("DequantizeLinear", ins, axis=0, block_size=block)

    def weight_2d(self, e) -> str:
        q = self.quantized_codes(e)
        if q is not None:
            codes, scales, zps = q
            return self.dequant(codes, scales, zps, 1, e.attrs.get("group_size"), e.name)
        k, n = e.kn
        return self.init(np.ascontiguousarray(_artifact.decode_dense(e).reshape(k, n)), e.name)

    def weight_conv(self, e) -> str:
        """Conv weight in ONNX layout (out, in, *spatial)."""
        shape = e.shape
        nd = len(shape) - 2
        perm = (nd + 1, nd, *range(nd))
        q = self.quantized_codes(e)
        if q is not None and q[1].shape[0] == 1:
            codes, scales, zps = q
            c = np.ascontiguousarray(np.transpose(codes.reshape(shape), perm))
            return self.dequant(c, scales, zps, 0, None, e.name)
        w = np.ascontiguousarray(np.transpose(_artifact.decode_dense(e), perm))
        return self.init(w, e.name)

    # -- graph ---------------------------------------------------------------------------
    def build(self):
        h, TP = self.h, self.TP
        g = self.art.graph
        in_name = g["inputs"][0]
        in_shape = [self.b, *g["input_shapes"][0]]
        self.names[in_name] = "input"
        for node in g["nodes"]:
            self.names[node["out"]] = self.emit(node)
        outs = []
        for i, o in enumerate(g["outputs"]):
            name = f"output_{i}" if len(g["outputs"]) > 1 else "output"
            self.nodes.append(h.make_node("Identity", [self.names[o]], [name]))
            outs.append(h.make_tensor_value_info(name, TP.FLOAT, list(self.value_shapes[o])))
        graph = h.make_graph(
            self.nodes,
            "jaxcompress",
            [h.make_tensor_value_info("input", TP.FLOAT, in_shape)],
            outs,
            self.inits,
        )
        model = h.make_model(
            graph,
            opset_imports=[h.make_opsetid("", OPSET), h.make_opsetid("com.microsoft", 1)],
            producer_name="jaxcompress",
        )
        model.ir_version = 10
        return model

    def emit(self, node) -> str:
        fn = EMITTERS.get(node["op"])
        if fn is None:
            raise JaxCompressValueError(f"ONNX export does not support the op {node['op']!r} yet")
        return fn(self, node, [self.ref(r) for r in node["in"]])

    def integer_pow(self, x, y):
        if y <= 0:
            raise JaxCompressValueError(f"ONNX export: integer_pow with y={y} <= 0")
        base, acc, e = x, None, y
        while e:
            if e & 1:
                acc = base if acc is None else self.node("Mul", [acc, base])
            e >>= 1
            if e:
                base = self.node("Mul", [base, base])
        return acc

    def conv(self, node, x):
        nd = len(node["kernel"]) - 2
        to_first = [0, nd + 1, *range(1, nd + 1)]
        to_last = [0, *range(2, nd + 2), 1]
        w = self.weight_conv(self.art.tensors[node["weight"]])
        pads = [p[0] for p in node["pads"]] + [p[1] for p in node["pads"]]
        xt = self.node("Transpose", [x], perm=to_first)
        y = self.node(
            "Conv",
            [xt, w],
            strides=node["strides"],
            pads=pads,
            dilations=node["dilation"],
            kernel_shape=node["kernel"][:nd],
            group=node.get("groups", 1),
        )
        return self.node("Transpose", [y], perm=to_last)

    def pool(self, node, x):
        win, st, pads = node["window"], node["strides"], node["pads"]
        nd = len(win) - 2
        if (
            win[0] != 1
            or win[-1] != 1
            or st[0] != 1
            or st[-1] != 1
            or any(pads[i] != [0, 0] for i in (0, len(win) - 1))
        ):
            raise JaxCompressValueError("ONNX export: pooling over batch/channel axes")
        to_first = [0, nd + 1, *range(1, nd + 1)]
        to_last = [0, *range(2, nd + 2), 1]
        sp = [p[0] for p in pads[1:-1]] + [p[1] for p in pads[1:-1]]
        xt = self.node("Transpose", [x], perm=to_first)
        if node["op"] == "reduce_window_max":
            y = self.node("MaxPool", [xt], kernel_shape=win[1:-1], strides=st[1:-1], pads=sp)
        else:
            y = self.node(
                "AveragePool",
                [xt],
                kernel_shape=win[1:-1],
                strides=st[1:-1],
                pads=sp,
                count_include_pad=1,
            )
            y = self.node("Mul", [y, self.init(np.float32(math.prod(win)))])
        return self.node("Transpose", [y], perm=to_last)

    def dot_general(self, node, ins):
        (lc, rc), (lb, rb) = node["contract"], node["batch"]
        a_shape, b_shape = self.shape_of(node["in"][0]), self.shape_of(node["in"][1])
        lf = [i for i in range(len(a_shape)) if i not in lc and i not in lb]
        rf = [i for i in range(len(b_shape)) if i not in rc and i not in rb]
        bs = [a_shape[i] for i in lb]
        lfs, rfs = [a_shape[i] for i in lf], [b_shape[i] for i in rf]
        ck = math.prod(a_shape[i] for i in lc)
        at = self.node("Transpose", [ins[0]], perm=lb + lf + lc)
        bt = self.node("Transpose", [ins[1]], perm=rb + rc + rf)
        a3 = self.node("Reshape", [at, self.i64([math.prod(bs), math.prod(lfs), ck])])
        b3 = self.node("Reshape", [bt, self.i64([math.prod(bs), ck, math.prod(rfs)])])
        y = self.node("MatMul", [a3, b3])
        return self.node("Reshape", [y, self.i64(bs + lfs + rfs)])

    def shape_of(self, ref):
        if isinstance(ref, dict):
            return ()
        if ref in self.art.tensors:
            return self.art.tensors[ref].shape
        return self.value_shapes[ref]


def _value_shapes(art, batch_size: int) -> dict:
    """Concrete shapes of every graph value for `batch_size`, from the format's op specs (the
    same shape inference the runtime's plan runs)."""
    from jaxcompress_kernels.runtime import Limits, infer_graph

    shapes, _, _, _ = infer_graph(art.graph, art.tensors, batch_size, Limits(), path=art.path)
    return shapes


def to_onnx(artifact_path, *, batch_size: int = 1):
    """Builds an ONNX model (opset 21 + ``com.microsoft``) from a verified artifact.

    Args:
      artifact_path: an artifact written by ``jaxcompress.export.save`` (or a loaded Artifact).
      batch_size: the (concrete) batch size of the ONNX model's input.

    Returns:
      An ``onnx.ModelProto`` with input ``"input"`` and output ``"output"``.

    Raises:
      ArtifactError: the artifact fails verification.
      JaxCompressValueError: an op has no ONNX translation yet.
    """
    art = (
        artifact_path
        if isinstance(artifact_path, _artifact.Artifact)
        else _artifact.load(artifact_path)
    )
    if art.graph["batch"] == "static" and batch_size != art.sample_input.shape[0]:
        raise JaxCompressValueError(
            f"{batch_size=} but the artifact was exported for batch {art.sample_input.shape[0]}"
        )
    b = _Builder(art, int(batch_size))
    b.value_shapes = _value_shapes(art, int(batch_size))
    b.value_shapes[art.graph["inputs"][0]] = (batch_size, *art.graph["input_shapes"][0])
    model = b.build()
    b.onnx.checker.check_model(model)
    return model


def save_onnx(artifact_path, onnx_path, *, batch_size: int = 1) -> int:
    """Writes `to_onnx` to `onnx_path`; returns its size in bytes."""
    onnx = _onnx()[0]
    model = to_onnx(artifact_path, batch_size=batch_size)
    onnx.save(model, os.fspath(onnx_path))
    return os.path.getsize(onnx_path)


def onnx_session(model, *, num_threads: int = 1):
    """An ONNX Runtime CPU session with the pinned options (`ORT_OPTIONS`)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, ORT_OPTIONS["graph_optimization_level"]
    )
    so.add_session_config_entry(
        "session.qdq_matmulnbits_accuracy_level",
        ORT_OPTIONS["session.qdq_matmulnbits_accuracy_level"],
    )
    so.intra_op_num_threads = int(num_threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


@dataclasses.dataclass(frozen=True)
class CrossCheck:
    """Pairwise agreement between JAX, our runtime and ONNX Runtime on the same input.

    ``pairs[("jax", "runtime")] = {"max_abs", "rel", "top1"}`` where ``rel = max_abs / max|ref|``
    (ref = the first of the pair) and ``top1`` is the fraction of equal argmax.
    """

    pairs: dict
    outputs: dict

    @property
    def max_rel(self) -> float:
        return max(p["rel"] for p in self.pairs.values())

    def table(self) -> str:
        lines = ["| pair | max abs error | relative error | top-1 agreement |", "|---|---|---|---|"]
        for (a, b), p in self.pairs.items():
            lines.append(f"| {a} vs {b} | {p['max_abs']:.3g} | {p['rel']:.3g} | {p['top1']:.4f} |")
        return "\n".join(lines)


def _compare(ref, y) -> dict:
    diff = float(np.max(np.abs(ref - y))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    top1 = float(np.mean(ref.argmax(-1) == y.argmax(-1))) if ref.ndim >= 2 else 1.0
    return {"max_abs": diff, "rel": diff / scale if scale else diff, "top1": top1}


def cross_check(
    artifact_path, x, *, model_or_apply=None, params=None, num_threads: int = 1
) -> CrossCheck:
    """Runs `x` through our runtime, ONNX Runtime (pinned options) and, when `model_or_apply`
    and `params` are given, the JAX model with compressed leaves dequantized.

    Args:
      artifact_path: the artifact.
      x: ``(batch, ...)`` float32 input.
      model_or_apply, params: the JAX model (as for ``save``); optional.
      num_threads: threads for both runtimes.

    Returns:
      A :class:`CrossCheck`.

    Raises:
      JaxCompressValueError: the graph has several outputs (compared one output only).
    """
    from jaxcompress_kernels.runtime import Runtime

    x = np.ascontiguousarray(np.asarray(x, np.float32))
    art = _artifact.load(artifact_path)
    if len(art.graph["outputs"]) != 1:
        n_out = len(art.graph["outputs"])
        raise JaxCompressValueError(f"cross_check compares one output; this graph has {n_out}")
    outs = {}
    if model_or_apply is not None:
        from jaxcompress.export._artifact import reference_output

        outs["jax"] = reference_output(model_or_apply, params, x)
    outs["runtime"] = np.asarray(Runtime(art, num_threads=num_threads).run(x))
    sess = onnx_session(to_onnx(art, batch_size=x.shape[0]), num_threads=num_threads)
    outs["onnxruntime"] = np.asarray(sess.run(None, {"input": x})[0])
    names = list(outs)
    pairs = {
        (a, b): _compare(outs[a], outs[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    }
    return CrossCheck(pairs=pairs, outputs=outs)


# ---------------------------------------------------------------------------------------------
# one ONNX emitter per op of the artifact format (a test checks it covers every op in
# jaxcompress_kernels.format.ops.OPS)

_SIMPLE = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
    "lt": "Less",
    "le": "LessOrEqual",
    "eq": "Equal",
    "and": "And",
    "or": "Or",
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "sign": "Sign",
    "erf": "Erf",
    "sin": "Sin",
    "cos": "Cos",
    "floor": "Floor",
    "ceil": "Ceil",
    "not": "Not",
}


def _simple(onnx_op):
    return lambda b, node, ins: b.node(onnx_op, ins)


def _convert(b, node, ins):
    to = {
        "float32": b.TP.FLOAT,
        "int32": b.TP.INT32,
        "bool": b.TP.BOOL,
        "uint8": b.TP.UINT8,
        "int8": b.TP.INT8,
    }[node["dtype"]]
    return b.node("Cast", ins, to=to)


def _broadcast_in_dim(b, node, ins):
    # insert unit axes where the output has no input axis (dims are increasing), expand
    shape = b.dims(node["shape"])
    axes = [i for i in range(len(shape)) if i not in node["dims"]]
    x = b.node("Unsqueeze", [ins[0], b.i64(axes)]) if axes else ins[0]
    return b.node("Expand", [x, b.i64(shape)])


def _reduce(onnx_op):
    return lambda b, node, ins: b.node(onnx_op, [ins[0], b.i64(node["axes"])], keepdims=0)


def _arg(onnx_op):
    def f(b, node, ins):
        r = b.node(onnx_op, ins, axis=node["axis"], keepdims=0)
        return b.node("Cast", [r], to=b.TP.INT32)

    return f


def _select_n(b, node, ins):
    if len(ins) != 3:
        raise JaxCompressValueError("ONNX export: select_n with != 2 cases")
    return b.node("Where", [ins[0], ins[2], ins[1]])


def _pad(b, node, ins):
    pads = [p[0] for p in node["pads"]] + [p[1] for p in node["pads"]]
    return b.node("Pad", [ins[0], b.i64(pads), b.ref(node["value"])])


def _slice(b, node, ins):
    lim = b.dims(node["limit"])
    axes = list(range(len(lim)))
    return b.node(
        "Slice",
        [ins[0], b.i64(node["start"]), b.i64(lim), b.i64(axes), b.i64(node["strides"])],
    )


def _rev(b, node, ins):
    ax = node["axes"]
    return b.node(
        "Slice",
        [
            ins[0],
            b.i64([-1] * len(ax)),
            b.i64([-(2**62)] * len(ax)),
            b.i64(ax),
            b.i64([-1] * len(ax)),
        ],
    )


EMITTERS = {op: _simple(onnx_op) for op, onnx_op in _SIMPLE.items()}
EMITTERS.update(
    {
        "ne": lambda b, node, ins: b.node("Not", [b.node("Equal", ins)]),
        "rsqrt": lambda b, node, ins: b.node("Reciprocal", [b.node("Sqrt", ins)]),
        "square": lambda b, node, ins: b.node("Mul", [ins[0], ins[0]]),
        "log1p": lambda b, node, ins: b.node(
            "Log", [b.node("Add", [ins[0], b.init(np.float32(1))])]
        ),
        "expm1": lambda b, node, ins: b.node("Sub", [b.node("Exp", ins), b.init(np.float32(1))]),
        "integer_pow": lambda b, node, ins: b.integer_pow(ins[0], node["y"]),
        "convert": _convert,
        "reshape": lambda b, node, ins: b.node("Reshape", [ins[0], b.i64(b.dims(node["shape"]))]),
        "broadcast_in_dim": _broadcast_in_dim,
        "transpose": lambda b, node, ins: b.node("Transpose", ins, perm=node["perm"]),
        "squeeze": lambda b, node, ins: b.node("Squeeze", [ins[0], b.i64(node["axes"])]),
        "expand_dims": lambda b, node, ins: b.node("Unsqueeze", [ins[0], b.i64(node["axes"])]),
        "reduce_sum": _reduce("ReduceSum"),
        "reduce_max": _reduce("ReduceMax"),
        "reduce_min": _reduce("ReduceMin"),
        "argmax": _arg("ArgMax"),
        "argmin": _arg("ArgMin"),
        "linear": lambda b, node, ins: b.matmul(ins[0], node["weight"]),
        "conv": lambda b, node, ins: b.conv(node, ins[0]),
        "dot_general": lambda b, node, ins: b.dot_general(node, ins),
        "reduce_window_max": lambda b, node, ins: b.pool(node, ins[0]),
        "reduce_window_sum": lambda b, node, ins: b.pool(node, ins[0]),
        "select_n": _select_n,
        "clamp": lambda b, node, ins: b.node("Max", [b.node("Min", [ins[1], ins[2]]), ins[0]]),
        "concatenate": lambda b, node, ins: b.node("Concat", ins, axis=node["axis"]),
        "pad": _pad,
        "slice": _slice,
        "rev": _rev,
    }
)


# ---------------------------------------------------------------------------------------------
# full-integer graphs (format version 3): int8 values stay int8 in ONNX. Layers are QLinearConv
# (a linear layer is a 1x1 QLinearConv: int8 x int8 -> int32 with the int32 bias, per-channel
# weight scales, requantized by ONNX Runtime in float); a fused ReLU/ReLU6 clamp, pooling with a
# rescale, means and residual adds are DequantizeLinear -> float op -> QuantizeLinear (exact for
# the clamp: dequantized codes quantize back to themselves). ONNX Runtime's requantization
# rounds a float product, ours a fixed-point one: codes may differ by one step near ties.


def _qrec(b, ref):
    rec = b.art.graph["quant"][ref]
    return float(rec["scale"]), int(rec["zero_point"])


def _qparams(b, ref):
    s, zp = _qrec(b, ref)
    return b.init(np.float32(s), "scale"), b.init(np.int8(zp), "zp")


def _dq(b, x, ref):
    return b.node("DequantizeLinear", [x, *_qparams(b, ref)])


def _q(b, y, ref):
    return b.node("QuantizeLinear", [y, *_qparams(b, ref)])


def _clamp_int8(b, y, node):
    """Applies ``clip(q, qmin, qmax)`` to an int8 value (identity when the clamp is trivial)."""
    if node["qmin"] == -128 and node["qmax"] == 127:
        return y
    s, zp = _qrec(b, node["out"])
    lo = np.float32((node["qmin"] - zp) * s)
    hi = np.float32((node["qmax"] - zp) * s)
    f = b.node("Clip", [_dq(b, y, node["out"]), b.init(lo, "lo"), b.init(hi, "hi")])
    return _q(b, f, node["out"])


def _qconv_core(b, x_nchw, node, w_oihw, group, strides, pads, dilation):
    xs, xz = _qparams(b, node["in"][0])
    ys, yz = _qparams(b, node["out"])
    ws = b.art.tensors[node["weight_scale"]]
    wsc = b.init(np.ascontiguousarray(_artifact.decode_dense(ws), np.float32), "wscale")
    wz = b.init(np.zeros(ws.shape[0], np.int8), "wzp")
    ins = [x_nchw, xs, xz, b.init(w_oihw, node["weight"]), wsc, wz, ys, yz]
    if "bias" in node:
        ins.append(b.init(np.asarray(_artifact.decode_dense(b.art.tensors[node["bias"]])), "bias"))
    return b.node("QLinearConv", ins, group=group, strides=strides, pads=pads, dilations=dilation)


def _qconv2d(b, node, ins):
    w = np.asarray(_artifact.decode_dense(b.art.tensors[node["weight"]]), np.int8)
    w_oihw = np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)))
    pads = [p[0] for p in node["pads"]] + [p[1] for p in node["pads"]]
    xt = b.node("Transpose", [ins[0]], perm=[0, 3, 1, 2])
    y = _qconv_core(
        b, xt, node, w_oihw, node.get("groups", 1), node["strides"], pads, node["dilation"]
    )
    y = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    return _clamp_int8(b, y, node)


def _qlinear(b, node, ins):
    w = np.asarray(_artifact.decode_dense(b.art.tensors[node["weight"]]), np.int8)
    k, n = w.shape
    shape = b.value_shapes[node["in"][0]]
    m = math.prod(shape[:-1])
    x4 = b.node("Reshape", [ins[0], b.i64([m, k, 1, 1])])
    w4 = np.ascontiguousarray(w.T.reshape(n, k, 1, 1))
    y = _qconv_core(b, x4, node, w4, 1, [1, 1], [0, 0, 0, 0], [1, 1])
    y = b.node("Reshape", [y, b.i64([*shape[:-1], n])])
    return _clamp_int8(b, y, node)


def _qmax_pool2d(b, node, ins):
    pads = [p[0] for p in node["pads"]] + [p[1] for p in node["pads"]]
    xt = b.node("Transpose", [ins[0]], perm=[0, 3, 1, 2])
    y = b.node("MaxPool", [xt], kernel_shape=node["window"], strides=node["strides"], pads=pads)
    return b.node("Transpose", [y], perm=[0, 2, 3, 1])


def _qavg_pool2d(b, node, ins):
    pads = [p[0] for p in node["pads"]] + [p[1] for p in node["pads"]]
    xt = b.node("Transpose", [_dq(b, ins[0], node["in"][0])], perm=[0, 3, 1, 2])
    y = b.node(
        "AveragePool",
        [xt],
        kernel_shape=node["window"],
        strides=node["strides"],
        pads=pads,
        count_include_pad=1,
    )
    win = math.prod(node["window"])
    if node["count"] != win:
        y = b.node("Mul", [y, b.init(np.float32(win / node["count"]))])
    y = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    return _clamp_int8(b, _q(b, y, node["out"]), node)


def _qmean(b, node, ins):
    f = _dq(b, ins[0], node["in"][0])
    y = b.node("ReduceMean", [f, b.i64(node["axes"])], keepdims=0)
    return _clamp_int8(b, _q(b, y, node["out"]), node)


def _qadd(b, node, ins):
    y = b.node("Add", [_dq(b, ins[0], node["in"][0]), _dq(b, ins[1], node["in"][1])])
    return _clamp_int8(b, _q(b, y, node["out"]), node)


EMITTERS.update(
    {
        "quantize": lambda b, node, ins: _q(b, ins[0], node["out"]),
        "dequantize": lambda b, node, ins: _dq(b, ins[0], node["in"][0]),
        "qlinear": _qlinear,
        "qconv2d": _qconv2d,
        "qmax_pool2d": _qmax_pool2d,
        "qavg_pool2d": _qavg_pool2d,
        "qmean": _qmean,
        "qadd": _qadd,
    }
)
