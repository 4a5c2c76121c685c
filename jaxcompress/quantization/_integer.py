"""The JAX integer reference of full-integer graphs: INT8_SPEC's arithmetic in ``jnp`` integer ops.

A full-integer graph (written by ``jaxcompress.export.save(..., integer=True)``; op set and
per-value quantization record in ``jaxcompress_kernels.format.ops``) computes in int8/int32 from
its ``quantize`` node to its ``dequantize`` node. This module runs such a graph with JAX integer
ops only, so the edge runtime (and the NumPy reference ``jaxcompress_kernels.format.quant``) can be
checked against it element for element:

==================  ===============================================================================
``quantize``        ``q = clip(round_half_even(float32(x) / s) + zp, -128, 127)``
``dequantize``      ``y = float32(q - zp) * s``
``qlinear``         ``acc = sum_k (x - x_zp) w[k, n] + bias[n]`` (int32), then
``qconv2d``         ``y = clip(y_zp + requantize(acc, m[n], r[n]), qmin, qmax)``,
                    ``(m[n], r[n]) = quantize_multiplier(s_x s_w[n] / s_y)``
``qmax_pool2d``     int8 max over the window (the record is the input's)
``qavg_pool2d``     ``acc = sum (x - x_zp)`` over the window, ``real = s_x / (s_y count)``
``qmean``           the same over whole axes (global average pooling)
``qadd``            ``acc = (a - a_zp) m_a + (b - b_zp) m_b + 2^(r-1)``, ``y = clip(y_zp + acc >> r)``
views               reshape / squeeze / expand_dims / transpose / pad (with the zero point) / ...
==================  ===============================================================================

with ``requantize(acc, m, r) = (int64(acc) * m + 2^(r-1)) >> r`` (arithmetic shift: floor, so the
rounding is half toward +inf). JAX runs without 64-bit integers by default, so the 64-bit product
and shift are emulated exactly with pairs of 32-bit words (``(hi: int32, lo: uint32)``, two's
complement): the 32 x 32 -> 64-bit product is assembled from four 16 x 16 -> 32-bit partial
products, the shift splits at 32. Everything jit-compiles; the multipliers are computed once, at
construction, by the shared ``quantize_multiplier`` of ``jaxcompress_kernels.format.quant``.

How far the integer model is from the fake-quant float model (``ptq(..., activation_bits=8)``)
is derived in ``docs/integer.md`` and computed per graph by :func:`fake_quant_gap_bound`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "IntegerReference",
    "integer_reference",
    "requantize",
    "requantize_output",
    "fake_quant_gap_bound",
]

_I32MIN, _I32MAX = -(1 << 31), (1 << 31) - 1
_SAT = 1 << 16  # |requantized| beyond this clips to qmin/qmax anyway; keeps y_zp + v in int32
_VIEWS = ("reshape", "squeeze", "expand_dims", "transpose", "broadcast_in_dim", "pad", "slice")
_VIEWS += ("rev", "concatenate")


def _quant():
    from jaxcompress_kernels.format import quant

    return quant


# ---------------------------------------------------------------------------------------------
# exact 64-bit arithmetic from 32-bit words (JAX without x64)


def _u32(x):
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _i32(x):
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _mul64(a: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``int64(a) * m`` as ``(hi int32, lo uint32)``; ``a`` int32, ``0 <= m < 2^32`` uint32."""
    neg = a < 0
    ua = _u32(jnp.where(neg, -a, a))  # -(-2^31) wraps to -2^31, whose bits are 2^31: exact
    m = m.astype(jnp.uint32)
    mask = jnp.uint32(0xFFFF)
    sixteen = jnp.uint32(16)
    al, ah = ua & mask, ua >> sixteen
    ml, mh = m & mask, m >> sixteen
    ll, lh, hl, hh = al * ml, al * mh, ah * ml, ah * mh  # each < 2^32: exact in uint32
    lo1 = ll + (lh << sixteen)
    c1 = (lo1 < ll).astype(jnp.uint32)
    lo = lo1 + (hl << sixteen)
    c2 = (lo < lo1).astype(jnp.uint32)
    hi = hh + (lh >> sixteen) + (hl >> sixteen) + c1 + c2
    # two's complement negation of the 64-bit magnitude
    nlo = ~lo + jnp.uint32(1)
    nhi = ~hi + (lo == 0).astype(jnp.uint32)
    return _i32(jnp.where(neg, nhi, hi)), jnp.where(neg, nlo, lo)


def _add64(a, b):
    (ha, la), (hb, lb) = a, b
    lo = la + lb
    carry = (lo < la).astype(jnp.int32)
    return ha + hb + carry, lo  # int32 wrap-around = the 64-bit high word


def _round_const(r: jax.Array):
    """``2^(r - 1)`` as ``(hi, lo)`` for ``1 <= r <= 62``."""
    e = r.astype(jnp.int32) - 1
    small = e < 32
    lo = jnp.where(small, jnp.uint32(1) << jnp.clip(e, 0, 31).astype(jnp.uint32), jnp.uint32(0))
    hi = jnp.where(small, jnp.int32(0), jnp.int32(1) << jnp.clip(e - 32, 0, 31))
    return hi, lo


def _shift_saturate(h: jax.Array, lo: jax.Array, r: jax.Array) -> jax.Array:
    """``(hi, lo) >> r`` (arithmetic, ``1 <= r <= 62``), saturated to int32."""
    r = r.astype(jnp.int32)
    rs = jnp.clip(r, 1, 31)
    lo_a = (lo >> rs.astype(jnp.uint32)) | (_u32(h) << (32 - rs).astype(jnp.uint32))
    hi_a = h >> rs
    rb = jnp.clip(r - 32, 0, 31)
    lo_b = _u32(h >> rb)
    hi_b = h >> 31
    small = r < 32
    rlo = _i32(jnp.where(small, lo_a, lo_b))
    rhi = jnp.where(small, hi_a, hi_b)
    fits = rhi == (rlo >> 31)
    return jnp.where(fits, rlo, jnp.where(rhi < 0, jnp.int32(_I32MIN), jnp.int32(_I32MAX)))


def requantize(acc: jax.Array, m: Any, r: Any) -> jax.Array:
    """``(int64(acc) * m + 2^(r-1)) >> r`` exactly, saturated to the int32 range.

    Args:
      acc: int32 accumulators, any shape.
      m: multipliers broadcasting against `acc` (``2^30 <= m < 2^31``; any ``0 <= m < 2^32``
        works), int32/uint32/int64 values.
      r: shifts broadcasting against `acc`, ``1 <= r <= 62``.

    Returns:
      int32 array of the broadcast shape: the exact value where it fits in int32, else
      ``-2^31`` / ``2^31 - 1``.
    """
    acc = jnp.asarray(acc, jnp.int32)
    m = jnp.asarray(np.asarray(m, np.uint32) if not isinstance(m, jax.Array) else m, jnp.uint32)
    r = jnp.asarray(r, jnp.int32)
    h, lo = _add64(_mul64(acc, m), _round_const(r))
    return _shift_saturate(h, lo, r)


def requantize_output(acc, m, r, y_zp, qmin, qmax) -> jax.Array:
    """``clip(y_zp + requantize(acc, m, r), qmin, qmax)`` as int8 (exact, no int32 overflow)."""
    v = jnp.clip(requantize(acc, m, r), -_SAT, _SAT)
    return jnp.clip(v + jnp.int32(y_zp), qmin, qmax).astype(jnp.int8)


# ---------------------------------------------------------------------------------------------
# graph execution


def _dims(dims, b: int) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else d[0] * b + d[1] for d in dims)


def _lit_value(ref):
    v = ref["lit"]
    return float(v) if isinstance(v, str) else v


@dataclasses.dataclass(frozen=True)
class _Prep:
    """Per-node constants computed once (multipliers, bounds), keyed by node index."""

    consts: dict


class IntegerReference:
    """Runs a full-integer graph with JAX integer ops (jit-compiled, exact).

    Build it with :func:`integer_reference`. Calling it with a float32 ``(batch, ...)`` input
    returns the graph's float32 output(s) as NumPy arrays; :meth:`run_int8` returns the int8
    values before the final ``dequantize`` (what the runtime must equal element for element).

    Attributes:
      graph: the graph (JSON form, with ``graph["quant"]``).
      tensors: ``{name: np.ndarray}`` every tensor the graph reads (int8 weights, float32
        weight scales, int32 biases, constants).
    """

    def __init__(self, graph: dict, tensors: dict[str, np.ndarray]):
        self.graph = graph
        self.tensors = {k: np.asarray(v) for k, v in tensors.items()}
        self.records = {
            k: (float(np.float32(v["scale"])), int(v["zero_point"]))
            for k, v in (graph.get("quant") or {}).items()
        }
        self._prep = self._prepare()
        self._jit = jax.jit(self._forward, static_argnames=("want_int",))

    # -- constants -------------------------------------------------------------------------
    def _rec(self, ref, i, node):
        if not isinstance(ref, str) or ref not in self.records:
            raise JaxCompressValueError(
                f"graph node {i} ({node['op']}) reads {ref!r}, which has no quantization record"
            )
        return self.records[ref]

    def _prepare(self) -> dict:
        q = _quant()
        prep: dict[int, dict] = {}
        for i, node in enumerate(self.graph["nodes"]):
            op = node["op"]
            c: dict[str, Any] = {}
            if op in ("qlinear", "qconv2d"):
                sx, _ = self._rec(node["in"][0], i, node)
                sy, _ = self._rec(node["out"], i, node)
                ws = self.tensors[node["weight_scale"]]
                m, r = q.channel_multipliers(sx, ws, sy)
                c["m"], c["r"] = m.astype(np.uint32), r.astype(np.int32)
            elif op in ("qavg_pool2d", "qmean"):
                sx, _ = self._rec(node["in"][0], i, node)
                sy, _ = self._rec(node["out"], i, node)
                if op == "qavg_pool2d":
                    count = int(node["count"])
                else:
                    count = None  # known at trace time (depends on the shape)
                c["sx"], c["sy"], c["count"] = sx, sy, count
            elif op == "qadd":
                sa, _ = self._rec(node["in"][0], i, node)
                sb, _ = self._rec(node["in"][1], i, node)
                sy, _ = self._rec(node["out"], i, node)
                c["ma"], c["mb"], c["r"] = q.add_multipliers(sa, sb, sy)
            prep[i] = c
        return prep

    # -- execution -------------------------------------------------------------------------
    def _forward(self, tensors, x, want_int=False):
        g = self.graph
        b = x.shape[0]
        env: dict[str, Any] = {g["inputs"][0]: x}

        def read(r):
            if isinstance(r, dict):
                return jnp.asarray(_lit_value(r), r["dtype"])
            if r in env:
                return env[r]
            return jnp.asarray(tensors[r])

        for i, node in enumerate(g["nodes"]):
            ins = [read(r) for r in node["in"]]
            env[node["out"]] = self._op(i, node, ins, tensors, b)
        outs = []
        for o in g["outputs"]:
            if want_int:
                # the int8 value the final dequantize reads (runtime comparisons)
                src = self._producer_input(o)
                outs.append(env[src] if src is not None else env[o])
            else:
                outs.append(env[o])
        return outs

    def _producer_input(self, out):
        for node in self.graph["nodes"]:
            if node["out"] == out and node["op"] == "dequantize":
                return node["in"][0]
        return None

    def _op(self, i, node, ins, tensors, b):
        op = node["op"]
        c = self._prep[i]
        if op == "quantize":
            s, zp = self.records[node["out"]]
            xq = jnp.round(ins[0].astype(jnp.float32) / jnp.float32(s))
            xq = jnp.where(jnp.isnan(xq), 0.0, xq)
            return jnp.clip(xq + jnp.float32(zp), -128, 127).astype(jnp.int8)
        if op == "dequantize":
            s, zp = self.records[node["in"][0]]
            return (ins[0].astype(jnp.int32) - zp).astype(jnp.float32) * jnp.float32(s)
        if op in ("qlinear", "qconv2d"):
            _, xzp = self.records[node["in"][0]]
            _, yzp = self.records[node["out"]]
            x = ins[0].astype(jnp.int32) - jnp.int32(xzp)
            w = jnp.asarray(tensors[node["weight"]]).astype(jnp.int32)
            if op == "qlinear":
                acc = jax.lax.dot_general(
                    x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
                )
            else:
                acc = jax.lax.conv_general_dilated(
                    x,
                    w,
                    window_strides=tuple(node["strides"]),
                    padding=[tuple(p) for p in node["pads"]],  # zeros = x_zp (real zero)
                    rhs_dilation=tuple(node["dilation"]),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    feature_group_count=int(node.get("groups", 1)),
                    preferred_element_type=jnp.int32,
                )
            if "bias" in node:
                acc = acc + jnp.asarray(tensors[node["bias"]]).astype(jnp.int32)
            return requantize_output(acc, c["m"], c["r"], yzp, node["qmin"], node["qmax"])
        if op == "qmax_pool2d":
            (kh, kw), (sh, sw), (ph, pw) = node["window"], node["strides"], node["pads"]
            return jax.lax.reduce_window(
                ins[0],
                jnp.int8(-128),
                jax.lax.max,
                (1, kh, kw, 1),
                (1, sh, sw, 1),
                ((0, 0), tuple(ph), tuple(pw), (0, 0)),
            )
        if op in ("qavg_pool2d", "qmean"):
            q = _quant()
            _, xzp = self.records[node["in"][0]]
            _, yzp = self.records[node["out"]]
            x = ins[0].astype(jnp.int32) - jnp.int32(xzp)
            if op == "qavg_pool2d":
                (kh, kw), (sh, sw), (ph, pw) = node["window"], node["strides"], node["pads"]
                acc = jax.lax.reduce_window(
                    x,
                    jnp.int32(0),
                    jax.lax.add,
                    (1, kh, kw, 1),
                    (1, sh, sw, 1),
                    ((0, 0), tuple(ph), tuple(pw), (0, 0)),
                )
                count = c["count"]
            else:
                axes = tuple(node["axes"])
                acc = jnp.sum(x, axis=axes, dtype=jnp.int32)
                count = math.prod(x.shape[a] for a in axes)
            m, r = q.pool_multiplier(c["sx"], c["sy"], count)
            return requantize_output(acc, m, r, yzp, node["qmin"], node["qmax"])
        if op == "qadd":
            _, azp = self.records[node["in"][0]]
            _, bzp = self.records[node["in"][1]]
            _, yzp = self.records[node["out"]]
            a = ins[0].astype(jnp.int32) - jnp.int32(azp)
            bb = ins[1].astype(jnp.int32) - jnp.int32(bzp)
            a, bb = jnp.broadcast_arrays(a, bb)
            r = jnp.int32(c["r"])
            acc = _add64(_mul64(a, jnp.uint32(c["ma"])), _mul64(bb, jnp.uint32(c["mb"])))
            h, lo = _add64(acc, _round_const(r))
            v = jnp.clip(_shift_saturate(h, lo, r), -_SAT, _SAT)
            return jnp.clip(v + jnp.int32(yzp), node["qmin"], node["qmax"]).astype(jnp.int8)
        if op in _VIEWS:
            return self._view(node, ins, b)
        raise JaxCompressValueError(
            f"graph node {i} ({op}): the integer reference runs full-integer graphs only "
            "(q-ops and views)"
        )

    def _view(self, node, ins, b):
        op, x = node["op"], ins[0]
        if op == "reshape":
            return jnp.reshape(x, _dims(node["shape"], b))
        if op == "squeeze":
            return jnp.squeeze(x, axis=tuple(node["axes"]))
        if op == "expand_dims":
            return jnp.expand_dims(x, tuple(node["axes"]))
        if op == "transpose":
            return jnp.transpose(x, node["perm"])
        if op == "broadcast_in_dim":
            return jax.lax.broadcast_in_dim(x, _dims(node["shape"], b), tuple(node["dims"]))
        if op == "pad":
            v = jnp.asarray(_lit_value(node["value"]), x.dtype)
            return jnp.pad(x, [tuple(p) for p in node["pads"]], constant_values=v)
        if op == "slice":
            return jax.lax.slice(
                x, tuple(node["start"]), _dims(node["limit"], b), tuple(node["strides"])
            )
        if op == "rev":
            return jnp.flip(x, axis=tuple(node["axes"]))
        return jnp.concatenate(ins, axis=node["axis"])  # concatenate

    def __call__(self, x) -> np.ndarray | tuple[np.ndarray, ...]:
        """The graph's float32 output(s) on ``x`` (``(batch, *input_shape)`` float32)."""
        outs = self._jit(self.tensors, self._check(x))
        outs = [np.asarray(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_int8(self, x) -> np.ndarray | tuple[np.ndarray, ...]:
        """The int8 output codes (the values the final ``dequantize`` nodes read)."""
        outs = self._jit(self.tensors, self._check(x), want_int=True)
        outs = [np.asarray(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _check(self, x) -> jax.Array:
        arr = np.asarray(x)
        want = tuple(self.graph["input_shapes"][0])
        if arr.dtype.kind != "f" or arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want:
            raise JaxCompressValueError(
                f"x must be a float (batch, {', '.join(map(str, want))}) array, got "
                f"{arr.dtype} {arr.shape}"
            )
        return jnp.asarray(arr, jnp.float32)


def integer_reference(source: Any, tensors: dict | None = None) -> IntegerReference:
    """The JAX integer reference of a full-integer graph.

    Args:
      source: an artifact path written by ``jaxcompress.export.save(..., integer=True)``, a
        loaded ``jaxcompress_kernels.artifact.Artifact``, or a graph dict (then `tensors`).
      tensors: with a graph dict, ``{name: np.ndarray}`` of every tensor it reads.

    Returns:
      An :class:`IntegerReference`; ``ref(x)`` gives the float output, ``ref.run_int8(x)`` the
      int8 output codes.

    Raises:
      JaxCompressTypeError: `source` is none of these.
      JaxCompressValueError: the graph is not full-integer (an op outside the q-ops and views,
        or a value without a quantization record).
      ArtifactError: the artifact fails verification.
    """
    if isinstance(source, dict):
        if tensors is None:
            raise JaxCompressTypeError("a graph dict needs tensors={name: array}")
        return IntegerReference(source, tensors)
    from jaxcompress_kernels import artifact as _artifact

    if not isinstance(source, _artifact.Artifact):
        if not isinstance(source, (str, bytes)) and not hasattr(source, "__fspath__"):
            raise JaxCompressTypeError(
                f"source must be an artifact path, an Artifact or a graph dict, got "
                f"{type(source).__name__}"
            )
        source = _artifact.load(source)
    arrays = {name: np.asarray(_artifact.decode_dense(e)) for name, e in source.tensors.items()}
    return IntegerReference(source.graph, arrays)


# ---------------------------------------------------------------------------------------------
# the bound against the fake-quant float model


def fake_quant_gap_bound(reference: IntegerReference) -> float:
    """A worst-case bound, in output quantization steps, on ``|integer - fake-quant output|``.

    Derivation (``docs/integer.md``). Before each requantization both models hold the same real
    number ``s_x s_w[n] (acc[n] + bias[n])`` up to ``delta`` output steps: the bias rounding
    (``<= s_x s_w[n] / (2 s_y)``), the multiplier's relative error (``<= 2^-31``) and the
    fake-quant model's float32 accumulation (``<= K 2^-23`` of ``sum_k |x_k w_kn|``). Rounding
    two reals that differ by ``d`` steps gives codes that differ by at most ``d + 1`` (both
    models round there: a site of the fake-quant model) or ``d + 1/2`` (only the integer model
    rounds: the logits and values without an observer site); each requantization therefore adds
    at most ``1 + delta`` steps of its own value. A difference of ``e`` steps in a layer's input
    moves its output by at most ``e * g`` output steps, with the step gain
    ``g = s_x max_n sum_k |w[k, n]| s_w[n] / s_y`` (linear/conv), ``s_x / s_y`` (pooling,
    mean, each ``qadd`` operand) and 1 (max pooling, views). Summing over every requantizing
    node ``v`` with ``G(v)`` = the sum over paths to the output of the product of the gains:

        ``bound = sum_v (1 + delta_v) G(v) - 1/2``

    (the output node itself contributes ``1/2 + delta``: the fake-quant logits are not
    rounded). Valid while no value leaves its calibrated range (clipping is not modelled: a
    value the observers did not see, e.g. a logit above the calibration maximum, clips in the
    integer model only). It is a worst case (every rounding error aligned with the largest
    weight column); measured gaps are around one step (``docs/integer.md``).

    Args:
      reference: an :class:`IntegerReference` (its graph and tensors).

    Returns:
      The bound in steps of the output's scale (times that scale: logits units).
    """
    g = reference.graph
    rec = reference.records
    nodes = g["nodes"]
    gains: dict[str, float] = {}
    for node in nodes:
        if node["op"] == "dequantize":
            gains[node["in"][0]] = gains.get(node["in"][0], 0.0) + 1.0
    bound = -0.5 * len(gains)
    for node in reversed(nodes):
        op, y = node["op"], node["out"]
        if y not in gains or op in ("quantize", "dequantize"):
            continue
        gy = gains[y]
        delta = 0.0
        if op in ("qlinear", "qconv2d"):
            sx, _ = rec[node["in"][0]]
            sy, _ = rec[y]
            w = np.abs(reference.tensors[node["weight"]].astype(np.float64))
            ws = reference.tensors[node["weight_scale"]].astype(np.float64)
            w2 = w.reshape(-1, w.shape[-1])
            col = w2.sum(0) * ws * sx / sy  # steps of y per step of every input element
            k = w2.shape[0]
            x_abs = 255.0  # |x - x_zp| <= 255 steps
            delta = 0.5 * float(np.max(ws)) * sx / sy + 2.0**-31 * (
                x_abs * float(np.max(col)) + 128.0
            )
            delta += k * 2.0**-23 * x_abs * float(np.max(col))
            ins = [(node["in"][0], float(np.max(col)))]
        elif op in ("qavg_pool2d", "qmean"):
            sx, _ = rec[node["in"][0]]
            sy, _ = rec[y]
            ins = [(node["in"][0], sx / sy)]
            delta = 2.0**-31 * 256.0
        elif op == "qadd":
            sy, _ = rec[y]
            ins = [(node["in"][k], rec[node["in"][k]][0] / sy) for k in (0, 1)]
            delta = 2.0**-30 * 256.0
        else:  # qmax_pool2d and views: a difference of e steps stays e steps
            ins = [(r, 1.0) for r in node["in"] if isinstance(r, str) and r in rec]
        if op in ("qlinear", "qconv2d", "qavg_pool2d", "qmean", "qadd"):
            bound += (1.0 + delta) * gy
        for r, k in ins:
            gains[r] = gains.get(r, 0.0) + gy * k
    return float(bound)
