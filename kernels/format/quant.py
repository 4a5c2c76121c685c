"""The integer arithmetic of full-integer graphs, in plain NumPy: the reference of INT8_SPEC.md.

Every int8 activation value ``q`` stands for the real number ``s * (q - zp)`` (per-tensor scale
``s`` float32 > 0, zero point ``zp`` in [-128, 127]). Weights are symmetric int8 in [-127, 127]
with one float32 scale per output channel; biases are int32 in units of ``s_x * s_w[c]``.
Between layers an int32 accumulator is rescaled by the fixed-point multiplier of a real ratio:

    quantize_multiplier(real) = (m, r)   with   real ~= m * 2**-r,  m in [2**30, 2**31)
    requantize(acc, m, r)     = (acc * m + 2**(r - 1)) >> r      (int64; round half toward +inf)

The runtime's integer kernels and the JAX integer reference (``jaxcompress.quantization``)
compute exactly these functions: this module is what both are tested against, and
`quantize_multiplier` is shared by both (the JAX side imports it from here).

| function               | computes                                                          |
|------------------------|-------------------------------------------------------------------|
| `quantize`             | ``clip(round_half_even(float32(x) / s) + zp, -128, 127)``          |
| `dequantize`           | ``float32(q - zp) * s``                                           |
| `quantize_multiplier`  | ``(m, r)`` of a float64 ratio                                     |
| `requantize`           | the rounding shift above, element-wise (int64)                    |
| `channel_multipliers`  | ``(m[n], r[n])`` of ``s_x * s_w[n] / s_y``                        |
| `quantize_bias`        | ``clip(round_half_even(b / (s_x * s_w[n])), int32)``               |
| `activation_bounds`    | ``(qmin, qmax)`` of no activation / ReLU / ReLU6                 |
| `qlinear`              | ``clip(y_zp + requantize(sum_k (x - x_zp) w + bias), qmin, qmax)``  |
| `qconv2d`              | the same over NHWC windows (groups; padded positions hold x_zp)  |
| `qmax_pool2d`          | int8 max over windows (padding never wins)                        |
| `qavg_pool2d`          | ``clip(y_zp + requantize(sum (x - x_zp), m, r), qmin, qmax)``,     |
|                        | ``real = s_x / (s_y * count)``                                    |
| `qmean`                | the same over whole axes (global average pooling)                |
| `qadd`                 | two multipliers sharing one shift, ``y = clip(y_zp + acc >> r)``  |
"""

from __future__ import annotations

import math

import numpy as np

from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = [
    "QMIN",
    "QMAX",
    "quantize",
    "dequantize",
    "quantize_multiplier",
    "requantize",
    "channel_multipliers",
    "add_multipliers",
    "quantize_bias",
    "activation_bounds",
    "qlinear",
    "qconv2d",
    "qmax_pool2d",
    "qavg_pool2d",
    "qmean",
    "qadd",
    "pool_multiplier",
    "reference_node",
]

QMIN, QMAX = -128, 127
_I32MIN, _I32MAX = -(1 << 31), (1 << 31) - 1


def _check_scale(name: str, s) -> float:
    s = float(s)
    if not (math.isfinite(s) and s > 0):
        raise JaxCompressValueError(f"{name}={s!r} must be a finite scale > 0")
    return s


def _check_zp(name: str, zp) -> int:
    if isinstance(zp, bool) or int(zp) != zp or not QMIN <= int(zp) <= QMAX:
        raise JaxCompressValueError(f"{name}={zp!r} must be an integer in [-128, 127]")
    return int(zp)


def quantize(x, scale, zero_point) -> np.ndarray:
    """float32 -> int8: ``clip(round_half_even(x / s) + zp, -128, 127)``.

    ``x / s`` is one float32 division (IEEE), rounded half to even (`np.round`).

    Args:
      x: float array (cast to float32), any shape.
      scale: the output's scale (finite, > 0; used as float32).
      zero_point: the output's zero point in [-128, 127].

    Returns:
      int8 array of ``x``'s shape.

    Raises:
      JaxCompressValueError: a bad scale or zero point.
    """
    s = np.float32(_check_scale("scale", scale))
    zp = _check_zp("zero_point", zero_point)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.round(np.asarray(x, np.float32) / s)
    # NaN maps to the zero point (what a float -> int cast of an XLA round gives is unspecified,
    # so the exporters never feed NaN; this only keeps the reference total)
    q = np.where(np.isnan(q), 0.0, q)
    return np.clip(q.astype(np.float64) + zp, QMIN, QMAX).astype(np.int8)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """int8 -> float32: ``float32(q - zp) * s`` (one float32 multiply).

    Args:
      q: int8 array, any shape.
      scale: its scale (finite, > 0); zero_point: its zero point.

    Returns:
      float32 array of ``q``'s shape.
    """
    s = np.float32(_check_scale("scale", scale))
    zp = _check_zp("zero_point", zero_point)
    return (np.asarray(q).astype(np.int32) - zp).astype(np.float32) * s


def quantize_multiplier(real) -> tuple[int, int]:
    """The fixed-point form ``(m, r)`` of a positive real ratio: ``real ~= m / 2**r``.

    ``f, e = frexp(real)`` (``f`` in [0.5, 1)), ``m = round_half_even(f * 2**31)``, ``r = 31 - e``;
    ``m == 2**31`` (``f`` rounded up to 1) becomes ``m = 2**30, r -= 1``. The relative error of
    ``m / 2**r`` is at most ``2**-31``.

    Args:
      real: a finite float > 0 (evaluated in float64).

    Returns:
      ``(m, r)``: Python ints, ``2**30 <= m < 2**31``, ``1 <= r <= 62``.

    Raises:
      JaxCompressValueError: `real` is not finite and positive, or ``r`` falls outside 1..62
        ("scale ratio out of range": the ratio is below ~2**-32 or at least 2**30).
    """
    real = float(real)
    if not (math.isfinite(real) and real > 0):
        raise JaxCompressValueError(f"real={real!r} must be a finite ratio > 0")
    f, e = math.frexp(real)
    m = round(f * (1 << 31))
    if m == 1 << 31:
        m = 1 << 30
        e += 1
    r = 31 - e
    if not 1 <= r <= 62:
        raise JaxCompressValueError(f"scale ratio out of range: real={real!r} gives shift {r}")
    return int(m), int(r)


def requantize(acc, m, r) -> np.ndarray:
    """``(int64(acc) * m + (1 << (r - 1))) >> r`` element-wise (arithmetic shift = floor).

    Args:
      acc: int32 accumulators (any shape).
      m, r: multipliers and shifts broadcasting against `acc` (``m < 2**31``, ``1 <= r <= 62``).

    Returns:
      int64 array.
    """
    a = np.asarray(acc, np.int64)
    m = np.asarray(m, np.int64)
    r = np.asarray(r, np.int64)
    return (a * m + (np.int64(1) << (r - 1))) >> r


def channel_multipliers(x_scale, w_scale, y_scale) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel ``(m[n], r[n]) = quantize_multiplier(s_x * s_w[n] / s_y)`` (float64,
    evaluated in that order).

    Args:
      x_scale, y_scale: input / output scales (float32 values); w_scale: ``(N,)`` weight scales.

    Returns:
      ``(m (N,) int64, r (N,) int64)``.
    """
    sx = np.float64(np.float32(_check_scale("x_scale", x_scale)))
    sy = np.float64(np.float32(_check_scale("y_scale", y_scale)))
    ws = np.asarray(w_scale, np.float32).reshape(-1).astype(np.float64)
    if not (np.isfinite(ws).all() and (ws > 0).all()):
        raise JaxCompressValueError("w_scale must hold finite scales > 0")
    mr = [quantize_multiplier(sx * float(w) / sy) for w in ws]
    return (
        np.array([a for a, _ in mr], np.int64).reshape(-1),
        np.array([b for _, b in mr], np.int64).reshape(-1),
    )


def add_multipliers(a_scale, b_scale, y_scale) -> tuple[int, int, int]:
    """``(m_a, m_b, r)`` of `qadd`: the larger of ``s_a / s_y`` and ``s_b / s_y`` through
    `quantize_multiplier`, the other ``round_half_even(real_other * 2**r)`` at the same shift."""
    sa = np.float64(np.float32(_check_scale("a_scale", a_scale)))
    sb = np.float64(np.float32(_check_scale("b_scale", b_scale)))
    sy = np.float64(np.float32(_check_scale("y_scale", y_scale)))
    ra, rb = float(sa / sy), float(sb / sy)
    m_hi, r = quantize_multiplier(max(ra, rb))
    other = int(round(min(ra, rb) * float(1 << r)))
    return (m_hi, other, r) if ra >= rb else (other, m_hi, r)


def quantize_bias(bias, x_scale, w_scale) -> np.ndarray:
    """int32 ``round_half_even(b / (s_x * s_w[n]))`` (float64), clipped to the int32 range."""
    sx = np.float64(np.float32(_check_scale("x_scale", x_scale)))
    ws = np.asarray(w_scale, np.float32).astype(np.float64)
    q = np.round(np.asarray(bias, np.float64) / (sx * ws))
    return np.clip(q, _I32MIN, _I32MAX).astype(np.int32)


def activation_bounds(y_scale, y_zp, activation=None) -> tuple[int, int]:
    """``(qmin, qmax)`` of a fused activation: None -> (-128, 127); ``"relu"`` ->
    ``(max(-128, zp), 127)``; ``"relu6"`` also ``qmax = min(127, zp + round_half_even(6 / s))``."""
    zp = _check_zp("y_zp", y_zp)
    if activation is None:
        return QMIN, QMAX
    if activation == "relu":
        return max(QMIN, zp), QMAX
    if activation == "relu6":
        s = float(np.float32(_check_scale("y_scale", y_scale)))
        return max(QMIN, zp), min(QMAX, zp + int(round(6.0 / s)))
    raise JaxCompressValueError(f"activation={activation!r} must be None, 'relu' or 'relu6'")


def _out(acc, m, r, y_zp, qmin, qmax) -> np.ndarray:
    return np.clip(y_zp + requantize(acc, m, r), qmin, qmax).astype(np.int8)


def qlinear(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, qmin=QMIN, qmax=QMAX):
    """Full-integer linear layer.

    ``acc[m, n] = sum_k (x[m, k] - x_zp) w[k, n] + bias[n]`` (int32, exact),
    ``y = clip(y_zp + requantize(acc, m[n], r[n]), qmin, qmax)`` with
    ``(m[n], r[n]) = channel_multipliers(s_x, s_w, s_y)``.

    Args:
      x: ``(..., K)`` int8; w: ``(K, N)`` int8 in [-127, 127]; w_scale: ``(N,)``;
      bias: ``(N,)`` int32 or None; x_scale, x_zp, y_scale, y_zp: the per-tensor parameters;
      qmin, qmax: the output clamp (a fused activation).

    Returns:
      ``(..., N)`` int8.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    k, n = w.shape
    acc = (x.reshape(-1, k).astype(np.int64) - int(x_zp)) @ w.astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    m, r = channel_multipliers(x_scale, w_scale, y_scale)
    return _out(acc, m, r, int(y_zp), qmin, qmax).reshape(*x.shape[:-1], n)


def _pad_hw(x, pads, value):
    (pt, pb), (pl, pr) = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def qconv2d(
    x,
    x_scale,
    x_zp,
    w,
    w_scale,
    bias,
    y_scale,
    y_zp,
    *,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    groups=1,
    qmin=QMIN,
    qmax=QMAX,
):
    """Full-integer 2-D convolution, NHWC, weight ``(KH, KW, C_in / groups, C_out)`` (the
    artifact's conv layout); padded input positions hold ``x_zp`` (real zero). Depthwise is
    ``groups == C_in``. Per output channel as `qlinear`.

    Returns:
      ``(B, OH, OW, C_out)`` int8.
    """
    x = np.asarray(x).astype(np.int64) - int(x_zp)
    w = np.asarray(w).astype(np.int64)
    kh, kw, cg, cout = w.shape
    xp = _pad_hw(x, pads, 0)  # x_zp - x_zp
    b, hp, wp, _ = xp.shape
    sh, sw = strides
    dh, dw = dilation
    oh = (hp - (kh - 1) * dh - 1) // sh + 1
    ow = (wp - (kw - 1) * dw - 1) // sw + 1
    og = cout // groups
    acc = np.zeros((b, oh, ow, cout), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :,
                i * dh : i * dh + (oh - 1) * sh + 1 : sh,
                j * dw : j * dw + (ow - 1) * sw + 1 : sw,
            ]
            for g in range(groups):
                acc[..., g * og : (g + 1) * og] += (
                    patch[..., g * cg : (g + 1) * cg] @ w[i, j, :, g * og : (g + 1) * og]
                )
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    m, r = channel_multipliers(x_scale, w_scale, y_scale)
    return _out(acc, m, r, int(y_zp), qmin, qmax)


def _windows(x, window, strides, pads, fill):
    xp = _pad_hw(x, pads, fill)
    v = np.lib.stride_tricks.sliding_window_view(xp, tuple(window), axis=(1, 2))
    return v[:, :: strides[0], :: strides[1]]  # (B, OH, OW, C, KH, KW)


def qmax_pool2d(x, window, strides=None, pads=((0, 0), (0, 0))):
    """int8 max over ``window`` NHWC windows (padded positions never win; the output keeps the
    input's scale and zero point).

    Returns:
      ``(B, OH, OW, C)`` int8.
    """
    strides = tuple(window) if strides is None else tuple(strides)
    v = _windows(np.asarray(x).astype(np.int16), window, strides, pads, -32768)
    return v.max(axis=(-2, -1)).astype(np.int8)


def qavg_pool2d(
    x,
    x_scale,
    x_zp,
    y_scale,
    y_zp,
    window,
    strides=None,
    pads=((0, 0), (0, 0)),
    *,
    count=None,
    qmin=QMIN,
    qmax=QMAX,
):
    """Average pooling: ``acc = sum over the window of (x - x_zp)`` (padding adds 0),
    ``real = s_x / (s_y * count)`` (``count`` = what the float model divides by; default the
    window size), ``y = clip(y_zp + requantize(acc, m, r), qmin, qmax)``.

    Returns:
      ``(B, OH, OW, C)`` int8.
    """
    strides = tuple(window) if strides is None else tuple(strides)
    count = int(window[0] * window[1]) if count is None else int(count)
    v = _windows(np.asarray(x).astype(np.int64) - int(x_zp), window, strides, pads, 0)
    acc = v.sum(axis=(-2, -1))
    m, r = pool_multiplier(x_scale, y_scale, count)
    return _out(acc, m, r, int(y_zp), qmin, qmax)


def pool_multiplier(x_scale, y_scale, count) -> tuple[int, int]:
    """``quantize_multiplier(s_x / (s_y * count))`` (float64)."""
    sx = np.float64(np.float32(_check_scale("x_scale", x_scale)))
    sy = np.float64(np.float32(_check_scale("y_scale", y_scale)))
    if int(count) < 1:
        raise JaxCompressValueError(f"count={count!r} must be >= 1")
    return quantize_multiplier(float(sx / (sy * np.float64(int(count)))))


def qmean(x, x_scale, x_zp, y_scale, y_zp, axes, *, qmin=QMIN, qmax=QMAX):
    """Mean over whole `axes` (global average pooling): `qavg_pool2d`'s arithmetic with
    ``count`` = the number of elements reduced.

    Returns:
      int8 array without `axes`.
    """
    x = np.asarray(x)
    axes = tuple(axes)
    count = math.prod(x.shape[a] for a in axes)
    acc = (x.astype(np.int64) - int(x_zp)).sum(axis=axes)
    m, r = pool_multiplier(x_scale, y_scale, count)
    return _out(acc, m, r, int(y_zp), qmin, qmax)


def qadd(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, qmin=QMIN, qmax=QMAX):
    """Residual add with rescaling: ``(m_a, m_b, r) = add_multipliers(s_a, s_b, s_y)``,
    ``acc = (a - a_zp) m_a + (b - b_zp) m_b + 2**(r - 1)`` (int64),
    ``y = clip(y_zp + (acc >> r), qmin, qmax)``.

    Returns:
      int8 array of the broadcast shape.
    """
    ma, mb, r = add_multipliers(a_scale, b_scale, y_scale)
    acc = (np.asarray(a).astype(np.int64) - int(a_zp)) * ma
    acc = acc + (np.asarray(b).astype(np.int64) - int(b_zp)) * mb + (1 << (r - 1))
    return np.clip(int(y_zp) + (acc >> r), qmin, qmax).astype(np.int8)


def reference_node(node: dict, ins: list, records: dict, tensors: dict) -> np.ndarray:
    """Evaluates one q-op node of a graph with the functions above (the reference interpreter).

    Args:
      node: a validated q-op node (`jaxcompress_kernels.format.ops.QUANT_OPS`).
      ins: its input arrays.
      records: the graph's quantization record ``{value: {"scale", "zero_point", "dtype"}}``.
      tensors: ``{name: array}`` holding at least the node's weight, weight_scale and bias.

    Returns:
      The node's output array.
    """
    op = node["op"]

    def sz(v):
        return records[v]["scale"], records[v]["zero_point"]

    out = node["out"]
    a = ins[0]
    if op == "quantize":
        return quantize(a, *sz(out))
    if op == "dequantize":
        return dequantize(a, *sz(node["in"][0]))
    xin = sz(node["in"][0])
    if op in ("qlinear", "qconv2d"):
        w, ws = tensors[node["weight"]], tensors[node["weight_scale"]]
        b = tensors[node["bias"]] if "bias" in node else None
        if op == "qlinear":
            return qlinear(a, *xin, w, ws, b, *sz(out), node["qmin"], node["qmax"])
        return qconv2d(
            a,
            *xin,
            w,
            ws,
            b,
            *sz(out),
            strides=node["strides"],
            pads=node["pads"],
            dilation=node["dilation"],
            groups=node.get("groups", 1),
            qmin=node["qmin"],
            qmax=node["qmax"],
        )
    if op == "qmax_pool2d":
        return qmax_pool2d(a, node["window"], node["strides"], node["pads"])
    if op == "qavg_pool2d":
        return qavg_pool2d(
            a,
            *xin,
            *sz(out),
            node["window"],
            node["strides"],
            node["pads"],
            count=node["count"],
            qmin=node["qmin"],
            qmax=node["qmax"],
        )
    if op == "qmean":
        return qmean(a, *xin, *sz(out), node["axes"], qmin=node["qmin"], qmax=node["qmax"])
    if op == "qadd":
        return qadd(
            a, *xin, ins[1], *sz(node["in"][1]), *sz(out), qmin=node["qmin"], qmax=node["qmax"]
        )
    raise JaxCompressValueError(f"{op!r} is not a q-op")
