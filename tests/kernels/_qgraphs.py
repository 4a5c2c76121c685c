"""Hand-built full-integer artifacts (format version 3) and their NumPy reference run
(`jaxcompress_kernels.format.quant`), shared by the format and runtime tests. JAX-free."""

from __future__ import annotations

import numpy as np

from jaxcompress_kernels.format import quant as q
from jaxcompress_kernels.format.container import write_artifact


class QGraph:
    """A small builder: every method appends one node and returns the output value's name."""

    def __init__(self, input_shape, seed=0):
        self.rng = np.random.default_rng(seed)
        self.input_shape = tuple(input_shape)
        self.nodes = []
        self.quant = {}
        self.tensors = {}
        self.parts = {}
        self._n = 0

    def _name(self, p):
        self._n += 1
        return f"{p}{self._n}"

    def _record(self, v, scale, zp):
        self.quant[v] = {"scale": float(np.float32(scale)), "zero_point": int(zp), "dtype": "int8"}
        return v

    def _tensor(self, name, arr):
        arr = np.ascontiguousarray(arr)
        self.tensors[name] = {
            "encoding": "dense",
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "parts": {"value": f"{name}:value"},
        }
        self.parts[f"{name}:value"] = arr

    def add(self, op, ins, out_rec=None, **attrs):
        out = self._name("v")
        self.nodes.append({"op": op, "in": list(ins), "out": out, **attrs})
        if out_rec is not None:
            self._record(out, *out_rec)
        return out

    def rand_rec(self):
        return (float(self.rng.uniform(0.01, 0.08)), int(self.rng.integers(-20, 21)))

    def weights(self, shape, bias=True):
        w = self.rng.integers(-127, 128, size=shape).astype(np.int8)
        n = shape[-1]
        s = self.rng.uniform(0.002, 0.02, size=n).astype(np.float32)
        name = self._name("w")
        self._tensor(name, w)
        self._tensor(name + "_s", s)
        attrs = {"weight": name, "weight_scale": name + "_s"}
        if bias:
            self._tensor(name + "_b", self.rng.integers(-3000, 3000, size=n).astype(np.int32))
            attrs["bias"] = name + "_b"
        return attrs

    def manifest(self, outputs):
        graph = {
            "inputs": ["input"],
            "outputs": list(outputs),
            "nodes": self.nodes,
            "batch": "symbolic",
            "input_shapes": [list(self.input_shape)],
            "input_dtypes": ["float32"],
            "quant": self.quant,
        }
        parts = dict(self.parts)
        parts["__sample__:input"] = np.zeros((1, *self.input_shape), np.float32)
        parts["__sample__:output"] = np.zeros((1,), np.float32)
        return {
            "graph": graph,
            "tensors": self.tensors,
            "sample": {"input": "__sample__:input", "output": "__sample__:output"},
        }, parts

    def write(self, path, outputs):
        manifest, parts = self.manifest(outputs)
        write_artifact(path, manifest, parts)
        return path


def reference_run(manifest, parts, x):
    """Runs a full-integer graph with the NumPy reference ops (`format.quant.reference_node`)."""
    g = manifest["graph"]
    tens = {k: parts[t["parts"]["value"]] for k, t in manifest["tensors"].items()}
    env = {"input": np.asarray(x, np.float32)}
    for n in g["nodes"]:
        ins = [env[r] for r in n["in"]]
        if n["op"] == "reshape":
            a = ins[0]
            shape = [d if isinstance(d, int) else d[0] * a.shape[0] + d[1] for d in n["shape"]]
            env[n["out"]] = a.reshape(shape)
        else:
            env[n["out"]] = q.reference_node(n, ins, g["quant"], tens)
    return [env[o] for o in g["outputs"]]


def cnn_graph(seed=0) -> QGraph:
    """quantize -> conv3x3+relu -> maxpool -> depthwise s2 -> 1x1 conv + qadd(relu) with a
    1x1 branch -> avgpool (padded) -> mean -> flatten -> linear -> dequantize."""
    g = QGraph((12, 12, 3), seed)
    r = g.rand_rec
    x = g.add("quantize", ["input"], (0.03, -5))
    rec1 = r()
    lo1, hi1 = q.activation_bounds(rec1[0], rec1[1], "relu")
    c1 = g.add(
        "qconv2d",
        [x],
        rec1,
        **g.weights((3, 3, 3, 8)),
        strides=[1, 1],
        pads=[[1, 1], [1, 1]],
        dilation=[1, 1],
        qmin=lo1,
        qmax=hi1,
    )
    p1 = g.add("qmax_pool2d", [c1], rec1, window=[2, 2], strides=[2, 2], pads=[[0, 0], [0, 0]])
    rec2 = r()
    lo2, hi2 = q.activation_bounds(rec2[0], rec2[1], "relu6")
    d1 = g.add(
        "qconv2d",
        [p1],
        rec2,
        **g.weights((3, 3, 1, 8)),
        strides=[2, 2],
        pads=[[1, 1], [1, 1]],
        dilation=[1, 1],
        groups=8,
        qmin=lo2,
        qmax=hi2,
    )
    rec3 = r()
    e1 = g.add(
        "qconv2d",
        [d1],
        rec3,
        **g.weights((1, 1, 8, 16), bias=False),
        strides=[1, 1],
        pads=[[0, 0], [0, 0]],
        dilation=[1, 1],
        qmin=-128,
        qmax=127,
    )
    rec4 = r()
    e2 = g.add(
        "qconv2d",
        [d1],
        rec4,
        **g.weights((1, 1, 8, 16)),
        strides=[1, 1],
        pads=[[0, 0], [0, 0]],
        dilation=[1, 1],
        qmin=-128,
        qmax=127,
    )
    rec5 = r()
    s1 = g.add("qadd", [e1, e2], rec5, qmin=max(-128, rec5[1]), qmax=127)
    rec6 = r()
    a1 = g.add(
        "qavg_pool2d",
        [s1],
        rec6,
        window=[2, 2],
        strides=[1, 1],
        pads=[[0, 1], [0, 1]],
        count=4,
        qmin=-128,
        qmax=127,
    )
    rec7 = r()
    m1 = g.add("qmean", [a1], rec7, axes=[1, 2], qmin=-128, qmax=127)
    f1 = g.add("reshape", [m1], rec7, shape=[[1, 0], 16])
    rec8 = r()
    l1 = g.add("qlinear", [f1], rec8, **g.weights((16, 10)), qmin=-128, qmax=127)
    # grouped (2 groups, 3 channels each: K = 27 is not a multiple of 4) and a depthwise conv
    # with channel multiplier 2, on the quantized input
    rec9 = r()
    h1 = g.add(
        "qconv2d",
        [x],
        rec9,
        **g.weights((3, 3, 1, 6)),
        strides=[2, 2],
        pads=[[0, 1], [0, 1]],
        dilation=[1, 1],
        groups=3,
        qmin=-128,
        qmax=127,
    )
    h2 = g.add(
        "qconv2d",
        [h1],
        rec9,
        **g.weights((3, 3, 3, 4)),
        strides=[1, 1],
        pads=[[1, 1], [1, 1]],
        dilation=[2, 2],
        groups=2,
        qmin=-128,
        qmax=127,
    )
    rec10 = r()
    h3 = g.add("qmean", [h2], rec10, axes=[1, 2], qmin=-128, qmax=127)
    g.extra = g.add("dequantize", [h3])
    y = g.add("dequantize", [l1])
    g.outputs = [y, g.extra]
    return g


def mlp_graph(seed=0, dims=(20, 32, 10)) -> QGraph:
    """quantize -> (qlinear + relu) x n -> qlinear -> dequantize."""
    g = QGraph((dims[0],), seed)
    v = g.add("quantize", ["input"], (0.05, 3))
    for i in range(len(dims) - 1):
        rec = g.rand_rec()
        last = i == len(dims) - 2
        lo, hi = q.activation_bounds(rec[0], rec[1], None if last else "relu")
        v = g.add("qlinear", [v], rec, **g.weights((dims[i], dims[i + 1])), qmin=lo, qmax=hi)
    g.outputs = [g.add("dequantize", [v])]
    return g
