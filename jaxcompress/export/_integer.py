"""Full-integer export: the captured float graph plus the quantized-model description -> q-ops.

Inputs are the model's *float* forward function (captured as usual), its weights as
``QuantizedArray`` leaves (int8-range symmetric, per output channel) and the activation
quantization the project recorded (``ActivationQuantization``: the observers' static ranges per
matmul/conv input site, ``"dot_general_3"``, ...). Nothing is inferred from ``round``/``clip``
primitives: the fake-quant function is never traced.

Every int8 value of the integer graph gets its (scale, zero point) from, in this order:

1. the observed range of the site it *is* (the input of a matmul/conv): exactly the grid of the
   fake-quant model (same ``qparams_from_range``, 8-bit affine);
2. the range of the value it feeds through max pooling and views (they commute with quantization,
   so the grid is the one the fake-quant model applies after them);
3. otherwise (the logits, the operands of a residual add, an average pool's output) the min/max
   of that value over ``calibration_batches`` run through the captured float graph.

Layer patterns read from the *float* graph (the model's own ops, not fake quantization):
``linear``/``conv`` [+ per-channel bias add] [+ ReLU ``max(., 0)`` [+ ``min(., 6)``: ReLU6]] ->
``qlinear``/``qconv2d`` with an int32 bias and ``qmin``/``qmax``; ``reduce_window_max`` ->
``qmax_pool2d``; ``reduce_window_sum`` [/ count] -> ``qavg_pool2d``; ``reduce_sum`` / count ->
``qmean``; ``add`` of two activations [+ ReLU] -> ``qadd``; views keep the record. The float ops
before the first quantization (e.g. a flatten of the input) stay float; any other op that would
read an int8 value has no integer form and is an error naming the layer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.export._capture import CapturedGraph, _lit_value

__all__ = ["IntegerGraph", "integer_graph", "activation_description"]

_VIEWS = ("reshape", "squeeze", "expand_dims", "transpose", "slice", "rev")
_SITE_OPS = ("linear", "conv", "dot_general")


@dataclasses.dataclass
class IntegerGraph:
    """A full-integer graph ready to write.

    Attributes:
      graph: the JSON graph with ``graph["quant"]`` (see ``jaxcompress_kernels.format.ops``).
      tensors: ``{name: np.ndarray}``: int8 weights, float32 weight scales, int32 biases,
        constants.
      plan: one line per node: how each q-op was formed and where its ranges came from.
    """

    graph: dict
    tensors: dict[str, np.ndarray]
    plan: list[str]


def activation_description(model_or_apply: Any, ranges: Any = None):
    """``(float apply_fn or None, ActivationQuantization)`` for integer export, or an error.

    Raises:
      JaxCompressValueError: no static activation ranges (a model without activation
        quantization, or dynamic ranges), or a grid other than 8-bit affine.
      JaxCompressTypeError: `ranges` is not an ``ActivationRanges``.
    """
    from jaxcompress.quantization import ActivationQuantization, ActivationRanges

    desc = getattr(model_or_apply, "activation_quantization", None)
    if ranges is not None:
        if not isinstance(ranges, ActivationRanges):
            raise JaxCompressTypeError(
                f"activation_ranges must be an ActivationRanges (from observe_activations or "
                f"ptq(...).ranges), got {type(ranges).__name__}"
            )
        float_apply = desc.float_apply if desc is not None else None
        bits = desc.bits if desc is not None else 8
        scheme = desc.scheme if desc is not None else "affine"
        desc = ActivationQuantization(float_apply, ranges, bits, scheme)
    if desc is None:
        raise JaxCompressValueError(
            "integer=True needs static activation ranges: export the apply_fn returned by "
            "ptq(..., activation_bits=8) / quantize_activations(apply_fn, ranges), or pass "
            "activation_ranges=observe_activations(...)"
        )
    if desc.ranges is None:
        raise JaxCompressValueError(
            "integer=True: this model quantizes activations with dynamic (per-call) ranges; a "
            "full-integer graph needs static ranges (observe_activations)"
        )
    if (desc.bits, desc.scheme) != (8, "affine"):
        raise JaxCompressValueError(
            f"integer=True supports 8-bit affine activations, got bits={desc.bits}, "
            f"scheme={desc.scheme!r}"
        )
    return desc.float_apply, desc


@functools.cache
def _grid_fn():
    from jaxcompress.quantization import QuantSpec, qparams_from_range

    spec = QuantSpec(bits=8, scheme="affine")
    return jax.jit(lambda lo, hi: qparams_from_range(lo, hi, spec))


def _grid(lo: float, hi: float) -> tuple[float, int]:
    """(float32 scale, int8 zero point) of the 8-bit affine grid of ``[lo, hi]``, computed by the
    very function the fake-quant model uses (so both agree bit for bit)."""
    s, z = _grid_fn()(jnp.asarray([lo], jnp.float32), jnp.asarray([hi], jnp.float32))
    return float(np.asarray(s)[0]), int(np.asarray(z)[0]) - 128


def _check_range(lo, hi, what: str) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise JaxCompressValueError(f"integer export: {what} has the range ({lo}, {hi}): NaN/Inf")
    if not hi > lo or max(hi, 0.0) - min(lo, 0.0) <= 0.0:
        raise JaxCompressValueError(
            f"integer export: {what} has the zero-width range ({lo}, {hi}); its scale would be "
            "meaningless (a dead activation: check the calibration data)"
        )


# ---------------------------------------------------------------------------------------------
# calibration of the values the observers do not cover


def _float_eval(cap: CapturedGraph, x: np.ndarray, on_value) -> None:
    """Runs the captured float graph on `x` (NumPy ops, JAX for conv), calling
    ``on_value(name, array)`` for every value."""
    from jaxcompress_kernels.runtime import exec_op

    g = cap.graph
    b = x.shape[0]
    env: dict[str, np.ndarray] = {g["inputs"][0]: x}

    def read(r):
        if isinstance(r, dict):
            return np.asarray(_lit_value(r), r["dtype"])
        if r in env:
            return env[r]
        return cap.params[r] if r in cap.params else cap.consts[r]

    for node in g["nodes"]:
        ins = [read(r) for r in node["in"]]
        op = node["op"]
        if op == "linear":
            w = cap.params[node["weight"]].astype(np.float32)
            y = np.matmul(ins[0], w.reshape(-1, w.shape[-1]))
        elif op == "conv":
            w = cap.params[node["weight"]].astype(np.float32)
            nd = w.ndim - 2
            sp = "".join("HWD"[:nd])
            y = np.asarray(
                jax.lax.conv_general_dilated(
                    ins[0],
                    w,
                    window_strides=tuple(node["strides"]),
                    padding=[tuple(p) for p in node["pads"]],
                    rhs_dilation=tuple(node["dilation"]),
                    dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
                    feature_group_count=int(node.get("groups", 1)),
                    precision=jax.lax.Precision.HIGHEST,
                )
            )
        else:
            y = np.asarray(exec_op(node, ins, b))
        env[node["out"]] = y
        on_value(node["out"], y)


def _calibrate(cap: CapturedGraph, batches) -> dict[str, tuple[float, float]]:
    acc: dict[str, list[float]] = {}

    def on_value(name, y):
        if y.dtype.kind != "f" or y.size == 0:
            return
        lo, hi = float(np.min(y)), float(np.max(y))
        if name in acc:
            acc[name] = [min(acc[name][0], lo), max(acc[name][1], hi)]
        else:
            acc[name] = [lo, hi]

    n = 0
    for k, xb in enumerate(batches):
        xb = np.asarray(xb)
        if xb.dtype.kind != "f":
            raise JaxCompressValueError(f"calibration_batches[{k}] must be a float array")
        if not np.isfinite(xb).all():
            raise JaxCompressValueError(f"calibration_batches[{k}] contains NaN or Inf")
        x = np.ascontiguousarray(xb, np.float32)
        acc.setdefault(cap.graph["inputs"][0], [float(x.min()), float(x.max())])
        acc[cap.graph["inputs"][0]] = [
            min(acc[cap.graph["inputs"][0]][0], float(x.min())),
            max(acc[cap.graph["inputs"][0]][1], float(x.max())),
        ]
        _float_eval(cap, x, on_value)
        n += 1
    if n == 0:
        raise JaxCompressValueError("calibration_batches is empty")
    return {k: (v[0], v[1]) for k, v in acc.items()}


# ---------------------------------------------------------------------------------------------
# the builder


class _Builder:
    def __init__(self, cap, qweights, desc, calib, q):
        self.cap = cap
        self.qweights = qweights  # {weight name: QuantizedArray}
        self.desc = desc
        self.calib = calib  # {value: (lo, hi)} or None
        self.q = q  # jaxcompress_kernels.format.quant
        self.nodes: list[dict] = []
        self.records: dict[str, dict] = {}
        self.tensors: dict[str, np.ndarray] = {}
        self.plan: list[str] = []
        self.qv: dict[str, str] = {}  # float-graph value -> int8 value in the new graph
        self.fv: dict[str, str] = {}  # float-graph value -> float value in the new graph (prefix)
        self.count = 0
        g = cap.graph
        self.gnodes = g["nodes"]
        self.producer = {n["out"]: i for i, n in enumerate(self.gnodes)}
        self.uses: dict[str, list[int]] = {}
        for i, n in enumerate(self.gnodes):
            for r in n["in"]:
                if isinstance(r, str):
                    self.uses.setdefault(r, []).append(i)
        for o in g["outputs"]:
            self.uses.setdefault(o, []).append(-1)
        self.layer: dict[str, str] = {}  # value -> the last layer (weight) upstream, for messages
        self.static = self._statics()
        self.want = self._site_grids()

    # -- helpers ---------------------------------------------------------------------------
    def _statics(self) -> dict[str, np.ndarray]:
        """Values computable at export time (params, consts, and ops over them)."""
        from jaxcompress_kernels.runtime import exec_op

        st: dict[str, np.ndarray] = {**self.cap.params, **self.cap.consts}
        for n in self.gnodes:
            if "weight" in n:
                continue
            if all(isinstance(r, dict) or r in st for r in n["in"]):
                vals = [
                    np.asarray(_lit_value(r), r["dtype"]) if isinstance(r, dict) else st[r]
                    for r in n["in"]
                ]
                try:
                    st[n["out"]] = np.asarray(exec_op(n, vals, 1))
                except Exception:  # a batch-dependent shape: not static
                    pass
        return st

    def _site_grids(self) -> dict[str, tuple[float, int, str]]:
        """value -> (scale, zp, origin) from the observed site ranges, propagated backwards
        through max pooling and views."""
        ranges = self.desc.ranges.ranges
        want: dict[str, tuple[float, int, str]] = {}
        for site, xref, wref in self.cap.sites:
            if not isinstance(xref, str) or xref in self.static:
                continue
            if self.desc.sites is not None and site not in self.desc.sites:
                continue
            layer = wref if isinstance(wref, str) else site
            if site not in ranges:
                raise JaxCompressValueError(
                    f"integer export: activation site {site!r} (input of layer {layer!r}) has no "
                    f"observed range; observed sites: {sorted(ranges)}"
                )
            lo, hi = ranges[site]
            _check_range(lo, hi, f"activation site {site!r} (input of layer {layer!r})")
            s, z = _grid(lo, hi)
            if xref in want and (want[xref][0], want[xref][1]) != (s, z):
                continue  # one value, two sites with different ranges: keep the first
            want[xref] = (s, z, f"site {site}")
        for n in reversed(self.gnodes):
            if n["op"] in _VIEWS + ("reduce_window_max",) and n["out"] in want:
                src = n["in"][0]
                if isinstance(src, str) and src not in want and src not in self.static:
                    want[src] = want[n["out"]]
        return want

    def fresh(self) -> str:
        self.count += 1
        return f"%q{self.count}"

    def where(self, i: int) -> str:
        n = self.gnodes[i]
        layer = n.get("weight") or self.layer.get(n["in"][0] if n["in"] else "", None)
        return f"node {i} ({n['op']})" + (f" after layer {layer!r}" if layer else "")

    def grid_of(self, v: str, i: int) -> tuple[float, int, str]:
        if v in self.want:
            return self.want[v]
        if self.calib is None:
            raise JaxCompressValueError(
                f"integer export: the value {v!r} made by {self.where(i)} is no matmul/conv input, "
                "so the observers did not record its range; pass calibration_batches= to measure "
                "it"
            )
        if v not in self.calib:
            raise JaxCompressValueError(f"integer export: no calibration range for {v!r}")
        lo, hi = self.calib[v]
        _check_range(lo, hi, f"the output of {self.where(i)} (value {v!r})")
        s, z = _grid(lo, hi)
        self.want[v] = (s, z, "calibration")
        return self.want[v]

    def record(self, name: str, grid) -> None:
        self.records[name] = {"scale": float(grid[0]), "zero_point": int(grid[1]), "dtype": "int8"}

    def emit(self, node: dict) -> str:
        node["out"] = node.get("out") or self.fresh()
        self.nodes.append(node)
        return node["out"]

    def as_int8(self, v, i: int) -> str:
        if not isinstance(v, str) or v in self.static:
            raise JaxCompressValueError(
                f"integer export: {self.where(i)} reads a constant where the integer op needs "
                "an activation"
            )
        if v in self.qv:
            return self.qv[v]
        if v not in self.fv:
            raise JaxCompressValueError(f"integer export: {self.where(i)} reads unknown {v!r}")
        grid = self.grid_of(v, i)
        out = self.emit({"op": "quantize", "in": [self.fv[v]]})
        self.record(out, grid)
        self.qv[v] = out
        self.plan.append(f"quantize {v} ({grid[2]}: scale {grid[0]:.6g}, zp {grid[1]})")
        return out

    def sole_use(self, v: str):
        u = self.uses.get(v, [])
        return u[0] if len(u) == 1 and u[0] >= 0 else None

    def static_vec(self, r, n: int):
        """A static per-channel vector (N,) from ref `r` broadcasting along the last axis."""
        if isinstance(r, dict):
            a = np.asarray(_lit_value(r), np.float64)
        elif isinstance(r, str) and r in self.static:
            a = np.asarray(self.static[r], np.float64)
        else:
            return None
        if a.ndim and (any(d != 1 for d in a.shape[:-1]) or a.shape[-1] not in (1, n)):
            return None
        return np.broadcast_to(a.reshape(-1) if a.ndim else a, (n,)).copy()

    def is_lit(self, r, value: float) -> bool:
        if isinstance(r, dict):
            return float(_lit_value(r)) == value
        if isinstance(r, str) and r in self.static:
            a = self.static[r]
            return a.size > 0 and bool(np.all(a == value))
        return False

    def activation_chain(self, v: str, consumed: set[int]):
        """Follows ``max(., 0)`` [``min(., 6)``] after `v`: ``(end value, "relu"|"relu6"|None)``."""
        j = self.sole_use(v)
        if j is None:
            return v, None
        n = self.gnodes[j]
        if n["op"] == "max" and len(n["in"]) == 2:
            other = n["in"][1] if n["in"][0] == v else n["in"][0]
            if self.is_lit(other, 0.0):
                consumed.add(j)
                end, act = n["out"], "relu"
                k = self.sole_use(end)
                if k is not None:
                    m = self.gnodes[k]
                    if m["op"] == "min" and len(m["in"]) == 2:
                        o2 = m["in"][1] if m["in"][0] == end else m["in"][0]
                        if self.is_lit(o2, 6.0):
                            consumed.add(k)
                            end, act = m["out"], "relu6"
                return end, act
        if n["op"] == "clamp" and n["in"][1] == v:
            if self.is_lit(n["in"][0], 0.0) and self.is_lit(n["in"][2], 6.0):
                consumed.add(j)
                return n["out"], "relu6"
        return v, None

    # -- node translation ------------------------------------------------------------------
    def run(self) -> IntegerGraph:
        g = self.cap.graph
        self.fv[g["inputs"][0]] = g["inputs"][0]
        consumed: set[int] = set()
        for i, n in enumerate(self.gnodes):
            if i in consumed or n["out"] in self.static:
                continue
            op = n["op"]
            acts = [r for r in n["in"] if isinstance(r, str) and r not in self.static]
            if op in ("linear", "conv"):
                self.layer_op(i, n, consumed)
            elif op in ("reduce_window_max", "reduce_window_sum") and acts:
                self.pool(i, n, consumed)
            elif op == "reduce_sum" and acts and any(a in self.qv for a in acts):
                self.mean(i, n, consumed)
            elif op == "add" and len(acts) == 2:
                self.residual(i, n, consumed)
            elif any(a in self.qv for a in acts):
                if op in _VIEWS:
                    out = self.emit({**n, "in": [self.qv[n["in"][0]]], "out": None})
                    self.records[out] = dict(self.records[self.qv[n["in"][0]]])
                    self.qv[n["out"]] = out
                    self.layer[n["out"]] = self.layer.get(n["in"][0], "")
                else:
                    raise JaxCompressValueError(
                        f"integer export: {self.where(i)} has no integer form (full-integer "
                        "graphs run linear/conv [+bias, ReLU, ReLU6], max/avg pooling, mean, "
                        "residual add and views)"
                    )
            elif all(a in self.fv for a in acts):
                # float prefix (before the first quantization), e.g. flattening the input
                ins = [self.fv[r] if isinstance(r, str) and r in self.fv else r for r in n["in"]]
                for r in ins:
                    if isinstance(r, str) and r in self.static and r not in self.tensors:
                        self.tensors[r] = np.asarray(self.static[r])
                out = self.emit({**n, "in": ins, "out": None})
                self.fv[n["out"]] = out
            else:
                raise JaxCompressValueError(f"integer export: {self.where(i)} has no integer form")
        outputs = []
        for o in g["outputs"]:
            if o not in self.qv:
                raise JaxCompressValueError(
                    f"integer export: the output {o!r} is not computed by integer layers"
                )
            out = self.emit({"op": "dequantize", "in": [self.qv[o]]})
            outputs.append(out)
        graph = {k: v for k, v in g.items() if k not in ("nodes", "outputs")}
        graph.update({"nodes": self.nodes, "outputs": outputs, "quant": self.records})
        return IntegerGraph(graph=graph, tensors=self.tensors, plan=self.plan)

    def out_grid(self, end: str, i: int, act):
        grid = self.grid_of(end, i)
        qmin, qmax = self.q.activation_bounds(grid[0], grid[1], act)
        return grid, qmin, qmax

    def layer_op(self, i, n, consumed):
        wname = n["weight"]
        qa = self.qweights.get(wname)
        shape = tuple(self.cap.params[wname].shape)
        if qa is None:
            raise JaxCompressValueError(
                f"integer export: layer {wname!r} has float weights; quantize them first "
                "(ptq / quantize_params / FakeQuantize.quantize: int8 symmetric per output channel)"
            )
        if (
            qa.scheme != "symmetric"
            or qa.bits > 8
            or qa.group_size is not None
            or qa.axis != len(shape) - 1
        ):
            raise JaxCompressValueError(
                f"integer export: layer {wname!r} is quantized with scheme={qa.scheme!r}, "
                f"bits={qa.bits}, axis={qa.axis}, group_size={qa.group_size}; full-integer layers "
                "need symmetric per-output-channel weights (axis=-1, no groups, bits <= 8)"
            )
        if n["op"] == "conv" and len(shape) != 4:
            raise JaxCompressValueError(
                f"integer export: layer {wname!r} is a {len(shape) - 2}-D convolution; the "
                "integer form is 2-D (qconv2d)"
            )
        if n["op"] == "linear" and len(shape) != 2:
            raise JaxCompressValueError(f"integer export: layer {wname!r} must be (K, N)")
        x = self.as_int8(n["in"][0], i)
        sx = self.records[x]["scale"]
        codes = np.asarray(qa.qvalue, np.int8).reshape(shape)
        ws = np.asarray(qa.scale, np.float32).reshape(-1)
        nout = shape[-1]
        end, bias = n["out"], None
        j = self.sole_use(end)
        if j is not None and self.gnodes[j]["op"] == "add":
            other = [r for r in self.gnodes[j]["in"] if r != end]
            vec = self.static_vec(other[0], nout) if len(other) == 1 else None
            if vec is not None:
                bias, end = vec, self.gnodes[j]["out"]
                consumed.add(j)
        end, act = self.activation_chain(end, consumed)
        grid, qmin, qmax = self.out_grid(end, i, act)
        node = {
            "op": "qlinear" if n["op"] == "linear" else "qconv2d",
            "in": [x],
            "weight": wname,
            "weight_scale": f"{wname}/scale",
        }
        self.tensors[wname] = codes
        self.tensors[f"{wname}/scale"] = ws
        if bias is not None:
            bname = f"{wname}/bias_int32"
            self.tensors[bname] = self.q.quantize_bias(bias, sx, ws)
            node["bias"] = bname
        if n["op"] == "conv":
            node.update(strides=n["strides"], pads=n["pads"], dilation=n["dilation"])
            if n.get("groups", 1) != 1:
                node["groups"] = n["groups"]
        node.update(qmin=int(qmin), qmax=int(qmax))
        try:
            self.q.channel_multipliers(sx, ws, grid[0])
        except JaxCompressValueError as e:
            raise JaxCompressValueError(f"integer export: layer {wname!r}: {e}") from None
        out = self.emit(node)
        self.record(out, grid)
        self.qv[end] = out
        self.layer[end] = wname
        self.plan.append(
            f"{node['op']} {wname}{' +bias' if bias is not None else ''}"
            f"{' +' + act if act else ''} -> scale {grid[0]:.6g}, zp {grid[1]} ({grid[2]})"
        )

    def _window(self, n, i):
        win, st, pads = n["window"], n["strides"], n["pads"]
        if len(win) != 4 or win[0] != 1 or win[3] != 1 or st[0] != 1 or st[3] != 1:
            raise JaxCompressValueError(
                f"integer export: {self.where(i)}: integer pooling is 2-D over NHWC (H, W)"
            )
        if pads[0] != [0, 0] or pads[3] != [0, 0]:
            raise JaxCompressValueError(f"integer export: {self.where(i)} pads batch/channels")
        return {"window": win[1:3], "strides": st[1:3], "pads": pads[1:3]}

    def pool(self, i, n, consumed):
        x = self.as_int8(n["in"][0], i)
        attrs = self._window(n, i)
        if n["op"] == "reduce_window_max":
            out = self.emit({"op": "qmax_pool2d", "in": [x], **attrs})
            self.records[out] = dict(self.records[x])
            self.qv[n["out"]] = out
            self.layer[n["out"]] = self.layer.get(n["in"][0], "")
            self.plan.append("qmax_pool2d (keeps the input's scale and zero point)")
            return
        end, count = n["out"], 1
        j = self.sole_use(end)
        if j is not None and self.gnodes[j]["op"] in ("div", "mul"):
            m = self.gnodes[j]
            if m["in"][0] == end and isinstance(m["in"][1], dict):
                c = float(_lit_value(m["in"][1]))
                c = c if m["op"] == "div" else (1.0 / c if c else 0.0)
                if c >= 1 and float(round(c)) == c:
                    count, end = int(c), m["out"]
                    consumed.add(j)
        end, act = self.activation_chain(end, consumed)
        grid, qmin, qmax = self.out_grid(end, i, act)
        node = {"op": "qavg_pool2d", "in": [x], **attrs, "count": count}
        node.update(qmin=int(qmin), qmax=int(qmax))
        out = self.emit(node)
        self.record(out, grid)
        self.qv[end] = out
        self.layer[end] = self.layer.get(n["in"][0], "")
        self.plan.append(f"qavg_pool2d count {count} -> scale {grid[0]:.6g} ({grid[2]})")

    def mean(self, i, n, consumed):
        x = self.as_int8(n["in"][0], i)
        shape = None
        j = self.sole_use(n["out"])
        m = self.gnodes[j] if j is not None else None
        if not (
            m is not None
            and m["op"] == "div"
            and m["in"][0] == n["out"]
            and isinstance(m["in"][1], dict)
        ):
            raise JaxCompressValueError(
                f"integer export: {self.where(i)}: a sum over axes has no integer form (a mean, "
                "sum / count, does)"
            )
        shape = self._shape_of(n["in"][0])
        count = math.prod(shape[a] for a in n["axes"]) if shape is not None else None
        if count is None or float(_lit_value(m["in"][1])) != float(count):
            raise JaxCompressValueError(
                f"integer export: {self.where(i)}: divides a sum by {m['in'][1]['lit']}, not by "
                f"the number of elements reduced ({count})"
            )
        consumed.add(j)
        end, act = self.activation_chain(m["out"], consumed)
        grid, qmin, qmax = self.out_grid(end, i, act)
        out = self.emit(
            {"op": "qmean", "in": [x], "axes": n["axes"], "qmin": int(qmin), "qmax": int(qmax)}
        )
        self.record(out, grid)
        self.qv[end] = out
        self.layer[end] = self.layer.get(n["in"][0], "")
        self.plan.append(f"qmean axes {n['axes']} -> scale {grid[0]:.6g} ({grid[2]})")

    def _shape_of(self, v):
        return self._shapes.get(v) if hasattr(self, "_shapes") else None

    def residual(self, i, n, consumed):
        a = self.as_int8(n["in"][0], i)
        b = self.as_int8(n["in"][1], i)
        end, act = self.activation_chain(n["out"], consumed)
        grid, qmin, qmax = self.out_grid(end, i, act)
        out = self.emit({"op": "qadd", "in": [a, b], "qmin": int(qmin), "qmax": int(qmax)})
        self.record(out, grid)
        self.qv[end] = out
        self.layer[end] = self.layer.get(n["in"][0], "") or self.layer.get(n["in"][1], "")
        self.plan.append(f"qadd{' +' + act if act else ''} -> scale {grid[0]:.6g} ({grid[2]})")


def integer_graph(
    cap: CapturedGraph, qweights: dict, desc, calibration_batches=None, example_input=None
) -> IntegerGraph:
    """Builds the full-integer graph (see the module docstring).

    Args:
      cap: the captured float graph (``capture(float_apply, dequantized params, x,
        foldable=set())``).
      qweights: ``{kernel name: QuantizedArray}``.
      desc: the ``ActivationQuantization`` (static ranges).
      calibration_batches: iterable of float input batches for the values the observers do not
        cover (see the module docstring); ``None``: every such value is an error.
      example_input: used for shapes (mean counts).

    Returns:
      An :class:`IntegerGraph`.

    Raises:
      JaxCompressValueError: a missing/NaN/Inf/zero-width range, float or non-per-channel
        weights, or an op without an integer form; each names the layer.
    """
    from jaxcompress_kernels.format import quant

    calib = None if calibration_batches is None else _calibrate(cap, calibration_batches)
    bld = _Builder(cap, qweights, desc, calib, quant)
    if example_input is not None:
        shapes: dict[str, tuple] = {}
        x1 = np.asarray(example_input, np.float32)[:1]
        shapes[cap.graph["inputs"][0]] = x1.shape
        _float_eval(cap, x1, lambda k, y: shapes.__setitem__(k, y.shape))
        bld._shapes = shapes
    return bld.run()
