"""The artifact's op set: one `OpSpec` per op (attribute schema, shape/dtype inference, FLOPs).

This table is the only description of the graph ops. The artifact reader validates every node
against it, the runtime's load-time plan infers every value's shape and dtype with it, the
edge cost model (``jaxcompress.edge``) reads FLOPs and bytes from the plan built on it, export
captures JAX primitives into these ops, and the ONNX emitter and the runtime each keep a table of
implementations keyed by the names in `OPS` (tests check that they cover every op).

A node is ``{"op": name, "in": [ref, ...], "out": value name, **attrs}``; a ref is a value or
tensor name or a literal ``{"lit": number | "inf" | "-inf" | "nan", "dtype": str}``. Shape entries
of ``shape``/``limit`` attributes are ints or ``[a, c]`` meaning ``a * batch + c``.

Full-integer graphs (format version 3, INT8_SPEC.md) add the q-ops of `QUANT_OPS` and a
per-value quantization record ``graph["quant"] = {value: {"scale", "zero_point", "dtype":
"int8"}}`` (`validate_quant`); their arithmetic is `jaxcompress_kernels.format.quant`:

| op            | inputs -> output      | attributes                                             |
|---------------|-----------------------|--------------------------------------------------------|
| `quantize`    | float32 -> int8       | (scale and zero point from the output's record)        |
| `dequantize`  | int8 -> float32       | (from the input's record)                              |
| `qlinear`     | ``(..., K)`` -> ``(..., N)`` | ``weight`` int8 ``(K, N)``, ``weight_scale`` f32 ``(N,)``, |
|               |                       | ``bias`` int32 ``(N,)`` (optional), ``qmin``, ``qmax`` |
| `qconv2d`     | NHWC -> NHWC          | as qlinear with weight ``(KH, KW, C_in/groups, C_out)``, |
|               |                       | ``strides``, ``pads``, ``dilation`` (2 each), ``groups`` |
| `qmax_pool2d` | NHWC -> NHWC          | ``window``, ``strides``, ``pads`` (H, W); keeps the record |
| `qavg_pool2d` | NHWC -> NHWC          | as qmax_pool2d + ``count`` (the divisor), ``qmin``, ``qmax`` |
| `qmean`       | mean over ``axes``    | ``axes``, ``qmin``, ``qmax`` (global average pooling)   |
| `qadd`        | two equal shapes      | ``qmin``, ``qmax`` (a fused ReLU is ``qmin = y_zp``)    |

FLOPs (a multiply-add is 2):

| op class                    | FLOPs                                                       |
|-----------------------------|-------------------------------------------------------------|
| ``linear`` / ``conv``,      | ``2 * M * K_eff * N`` for dense weights, ``2 * M * nnz`` for |
| ``qlinear`` / ``qconv2d``   |                                                              |
|                             | weights stored sparse (``M`` = output elements / N)          |
| ``dot_general``             | ``2 * out elements * contracted size``                      |
| ``reduce_window_*``,        | ``out elements * window size``                              |
| ``qmax/qavg_pool2d``        |                                                              |
| ``reduce_*``, ``arg*``,     | input elements                                              |
| ``qmean``                   |                                                              |
| elementwise                 | output elements (a transcendental counts as 1)              |
| data movement / views       | 0                                                           |
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from jaxcompress_kernels.errors import ArtifactError

__all__ = [
    "OpSpec",
    "OPS",
    "UNARY_OPS",
    "BINARY_OPS",
    "VALUE_DTYPES",
    "ITEMSIZE",
    "validate_node",
    "infer",
    "node_flops",
    "resolve_dims",
    "QUANT_OPS",
    "QUANT_VIEW_OPS",
    "validate_quant",
]

VALUE_DTYPES = ("float32", "int32", "bool", "uint8", "int8")
ITEMSIZE = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "int8": 1}
MAX_RANK = 8
# window sizes, strides, padding and dilation: anything larger would only serve to allocate
MAX_WINDOW = 1 << 12

UNARY_OPS = (
    "neg",
    "exp",
    "log",
    "tanh",
    "logistic",
    "sqrt",
    "rsqrt",
    "abs",
    "square",
    "sign",
    "log1p",
    "expm1",
    "erf",
    "sin",
    "cos",
    "floor",
    "ceil",
    "not",
)
BINARY_OPS = (
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "pow",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "and",
    "or",
)
_COMPARE = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})


class _Bad(Exception):
    """Internal: a node failed its spec (turned into ArtifactError naming the node)."""


# ---------------------------------------------------------------------------------------------
# attribute kinds


def _is_int(v, lo=-(1 << 31), hi=1 << 31) -> bool:
    return type(v) is int and lo <= v <= hi


def _ints(v, *, lo=-(1 << 31), hi=1 << 31, max_len=MAX_RANK) -> bool:
    return isinstance(v, list) and len(v) <= max_len and all(_is_int(x, lo, hi) for x in v)


def _dim(d) -> bool:
    if type(d) is int:
        return -1 <= d <= 1 << 31
    return (
        isinstance(d, list)
        and len(d) == 2
        and all(type(v) is int for v in d)
        and 0 <= d[0] <= 1 << 20
        and abs(d[1]) <= 1 << 31
    )


def _pairs(v, lo=-MAX_WINDOW, hi=MAX_WINDOW) -> bool:
    return (
        isinstance(v, list)
        and len(v) <= MAX_RANK
        and all(
            isinstance(p, list) and len(p) == 2 and all(_is_int(x, lo, hi) for x in p) for p in v
        )
    )


def _lit(v) -> bool:
    return (
        isinstance(v, dict)
        and set(v) == {"lit", "dtype"}
        and v["dtype"] in VALUE_DTYPES
        and (type(v["lit"]) in (int, float) or v["lit"] in ("inf", "-inf", "nan"))
    )


ATTR_KINDS: dict[str, Callable[[object], bool]] = {
    "int": _is_int,
    "axes": lambda v: _ints(v, lo=0, hi=MAX_RANK - 1),
    "axis": lambda v: _is_int(v, 0, MAX_RANK - 1),
    "perm": lambda v: _ints(v, lo=0, hi=MAX_RANK - 1),
    "dims": lambda v: isinstance(v, list) and len(v) <= MAX_RANK and all(_dim(d) for d in v),
    "small": lambda v: _ints(v, lo=0, hi=MAX_WINDOW),
    "posint": lambda v: _ints(v, lo=1, hi=MAX_WINDOW),
    "pads": _pairs,
    "dtype": lambda v: v in VALUE_DTYPES,
    "lit": _lit,
    "name": lambda v: isinstance(v, str),
    "contract": lambda v: (
        isinstance(v, list) and len(v) == 2 and all(_ints(x, lo=0, hi=MAX_RANK - 1) for x in v)
    ),
    "kernel": lambda v: _ints(v, lo=0, hi=1 << 24),
    "groups": lambda v: _is_int(v, 1, 1 << 20),
    "qint": lambda v: _is_int(v, -128, 127),
    "count": lambda v: _is_int(v, 1, 1 << 30),
    "pads2": lambda v: _pairs(v, 0, MAX_WINDOW) and len(v) == 2,
    "posint2": lambda v: _ints(v, lo=1, hi=MAX_WINDOW, max_len=2) and len(v) == 2,
}


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One graph op.

    Attributes:
      name: the op name stored in the graph.
      arity: ``(min, max)`` number of inputs.
      attrs: ``{attribute: kind}`` (kinds in `ATTR_KINDS`); every one is required unless listed
        in `optional`.
      optional: attributes that may be absent.
      kind: ``"elementwise"``, ``"compute"`` (linear, conv, dot_general, reductions),
        ``"move"`` (copies data), or ``"alias"`` (a view of its input: no bytes, no buffer).
      infer: ``(in_shapes, in_dtypes, node, batch) -> (shape, dtype)``; raises `_Bad`.
    """

    name: str
    arity: tuple[int, int]
    attrs: dict
    kind: str
    infer: Callable
    optional: frozenset = frozenset()
    transcendental: bool = False


def resolve_dims(dims, batch: int) -> tuple[int, ...]:
    """``[int | [a, c]]`` -> concrete ints at ``batch``."""
    return tuple(d if type(d) is int else d[0] * batch + d[1] for d in dims)


def _need(cond, msg):
    if not cond:
        raise _Bad(msg)


def _axes_ok(axes, rank, what="axes"):
    _need(all(0 <= a < rank for a in axes), f"{what} {axes} out of range for rank {rank}")
    _need(len(set(axes)) == len(axes), f"{what} {axes} repeat an axis")


def _unary(shapes, dtypes, node, b):
    return shapes[0], dtypes[0]


def _bshape(shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise _Bad(f"input shapes {list(shapes)} do not broadcast") from None


def _binary(shapes, dtypes, node, b):
    shape = _bshape(shapes)
    if node["op"] in _COMPARE:
        return shape, "bool"
    vals = [d for d, s in zip(dtypes, node["_lits"], strict=True) if not s] or list(dtypes)
    dt = vals[0]
    _need(all(d == dt for d in vals), f"input dtypes {dtypes} differ")
    return shape, dt


def _integer_pow(shapes, dtypes, node, b):
    _need(abs(node["y"]) <= 64, f"y={node['y']} must be in -64..64")
    return shapes[0], dtypes[0]


def _convert(shapes, dtypes, node, b):
    return shapes[0], node["dtype"]


def _reshape(shapes, dtypes, node, b):
    shape = resolve_dims(node["shape"], b)
    _need(all(d >= 0 for d in shape), f"shape {shape} has a negative dimension")
    _need(
        math.prod(shape) == math.prod(shapes[0]),
        f"cannot reshape {shapes[0]} to {shape} (element counts differ)",
    )
    return shape, dtypes[0]


def _broadcast_in_dim(shapes, dtypes, node, b):
    shape = resolve_dims(node["shape"], b)
    dims = node["dims"]
    _need(all(d >= 0 for d in shape), f"shape {shape} has a negative dimension")
    _need(len(dims) == len(shapes[0]), f"dims {dims} must name every input axis")
    _axes_ok(dims, len(shape), "dims")
    _need(list(dims) == sorted(dims), f"dims {dims} must be increasing")
    for i, d in enumerate(dims):
        _need(shapes[0][i] in (1, shape[d]), f"input axis {i} cannot broadcast to {shape}")
    return shape, dtypes[0]


def _transpose(shapes, dtypes, node, b):
    perm = node["perm"]
    _need(sorted(perm) == list(range(len(shapes[0]))), f"perm {perm} is not a permutation")
    return tuple(shapes[0][p] for p in perm), dtypes[0]


def _squeeze(shapes, dtypes, node, b):
    axes = node["axes"]
    _axes_ok(axes, len(shapes[0]))
    _need(all(shapes[0][a] == 1 for a in axes), f"squeezed axes {axes} must have size 1")
    return tuple(s for i, s in enumerate(shapes[0]) if i not in axes), dtypes[0]


def _expand_dims(shapes, dtypes, node, b):
    axes = node["axes"]
    rank = len(shapes[0]) + len(axes)
    _need(rank <= MAX_RANK, f"rank {rank} exceeds {MAX_RANK}")
    _axes_ok(axes, rank)
    it = iter(shapes[0])
    return tuple(1 if i in axes else next(it) for i in range(rank)), dtypes[0]


def _reduce(shapes, dtypes, node, b):
    axes = node["axes"]
    _axes_ok(axes, len(shapes[0]))
    return tuple(s for i, s in enumerate(shapes[0]) if i not in axes), dtypes[0]


def _argreduce(shapes, dtypes, node, b):
    a = node["axis"]
    _axes_ok([a], len(shapes[0]), "axis")
    _need(shapes[0][a] > 0, "arg-reduction over an empty axis")
    _need(node["dtype"] in ("int32", "uint8", "int8"), f"index dtype {node['dtype']} is not an int")
    return tuple(s for i, s in enumerate(shapes[0]) if i != a), node["dtype"]


def _dot_general(shapes, dtypes, node, b):
    (lc, rc), (lb, rb) = node["contract"], node["batch"]
    a, w = shapes
    _axes_ok(lc + lb, len(a), "lhs axes")
    _axes_ok(rc + rb, len(w), "rhs axes")
    _need(len(lc) == len(rc) and len(lb) == len(rb), "contract/batch axis counts differ")
    _need(all(a[i] == w[j] for i, j in zip(lc, rc, strict=True)), "contracted sizes differ")
    _need(all(a[i] == w[j] for i, j in zip(lb, rb, strict=True)), "batch sizes differ")
    _need(dtypes[0] == dtypes[1], f"input dtypes {dtypes} differ")
    lf = [a[i] for i in range(len(a)) if i not in lc and i not in lb]
    rf = [w[i] for i in range(len(w)) if i not in rc and i not in rb]
    out = tuple([a[i] for i in lb] + lf + rf)
    _need(len(out) <= MAX_RANK, "result rank too large")
    return out, dtypes[0]


def _linear(shapes, dtypes, node, b):
    x, (k, n) = shapes[0], node["_wkn"]
    _need(len(x) >= 1 and x[-1] == k, f"input {x} does not end in the weight's K={k}")
    _need(dtypes[0] == "float32", "linear needs a float32 input")
    return (*x[:-1], n), "float32"


def _window_out(size, win, stride, lo, hi):
    span = size + lo + hi
    _need(span >= win, f"window {win} is larger than the padded size {span}")
    return (span - win) // stride + 1


def _conv(shapes, dtypes, node, b):
    x = shapes[0]
    kshape = node["kernel"]
    nd = len(kshape) - 2
    groups = node.get("groups", 1)
    _need(nd >= 1 and len(x) == nd + 2, f"conv input {x} does not match kernel rank {kshape}")
    _need(tuple(kshape) == node["_wshape"], f"kernel {kshape} != weight shape {node['_wshape']}")
    cin, cout = kshape[-2], kshape[-1]
    _need(x[-1] == cin * groups, f"input channels {x[-1]} != {cin} x groups={groups}")
    _need(cout % groups == 0, f"output channels {cout} not divisible by groups={groups}")
    for key in ("strides", "dilation", "pads"):
        _need(len(node[key]) == nd, f"{key} must have {nd} entries")
    _need(dtypes[0] == "float32", "conv needs a float32 input")
    out = [x[0]]
    for i in range(nd):
        span = (kshape[i] - 1) * node["dilation"][i] + 1
        lo, hi = node["pads"][i]
        out.append(_window_out(x[i + 1], span, node["strides"][i], lo, hi))
    return (*out, cout), "float32"


def _reduce_window(shapes, dtypes, node, b):
    x = shapes[0]
    for key in ("window", "strides", "pads"):
        _need(len(node[key]) == len(x), f"{key} must have {len(x)} entries")
    _need(all(lo >= 0 and hi >= 0 for lo, hi in node["pads"]), "negative window padding")
    out = tuple(
        _window_out(x[i], node["window"][i], node["strides"][i], *node["pads"][i])
        for i in range(len(x))
    )
    return out, dtypes[0]


def _select_n(shapes, dtypes, node, b):
    _need(len(shapes) >= 2, "select_n needs a predicate and a case")
    shape = _bshape(shapes)
    _need(dtypes[0] in ("bool", "int32"), "select_n predicate must be bool or int32")
    _need(dtypes[0] != "bool" or len(shapes) <= 3, "a bool predicate selects among 2 cases")
    cases = dtypes[1:]
    _need(all(d == cases[0] for d in cases), f"case dtypes {cases} differ")
    return shape, cases[0]


def _clamp(shapes, dtypes, node, b):
    return _bshape(shapes), dtypes[1]


def _concatenate(shapes, dtypes, node, b):
    a = node["axis"]
    r = len(shapes[0])
    _axes_ok([a], r, "axis")
    for s in shapes[1:]:
        _need(
            len(s) == r and all(s[i] == shapes[0][i] for i in range(r) if i != a), "shapes differ"
        )
    _need(all(d == dtypes[0] for d in dtypes), f"input dtypes {dtypes} differ")
    out = list(shapes[0])
    out[a] = sum(s[a] for s in shapes)
    return tuple(out), dtypes[0]


def _pad(shapes, dtypes, node, b):
    pads = node["pads"]
    _need(len(pads) == len(shapes[0]), f"pads must have {len(shapes[0])} entries")
    _need(all(lo >= 0 and hi >= 0 for lo, hi in pads), "negative padding")
    return tuple(s + lo + hi for s, (lo, hi) in zip(shapes[0], pads, strict=True)), dtypes[0]


def _rev(shapes, dtypes, node, b):
    _axes_ok(node["axes"], len(shapes[0]))
    return shapes[0], dtypes[0]


def _slice(shapes, dtypes, node, b):
    x = shapes[0]
    start, limit, strides = node["start"], resolve_dims(node["limit"], b), node["strides"]
    _need(len(start) == len(limit) == len(strides) == len(x), "slice ranks differ")
    _need(all(s >= 1 for s in strides), "slice strides must be >= 1")
    _need(
        all(0 <= s <= e <= d for s, e, d in zip(start, limit, x, strict=True)),
        f"slice [{start}, {limit}) out of bounds for {x}",
    )
    return tuple(-(-(e - s) // st) for s, e, st in zip(start, limit, strides, strict=True)), dtypes[
        0
    ]


def _spec(name, arity, kind, infer, attrs=None, optional=(), transcendental=False):
    return OpSpec(
        name=name,
        arity=arity,
        attrs=dict(attrs or {}),
        kind=kind,
        infer=infer,
        optional=frozenset(optional),
        transcendental=transcendental,
    )


_TRANSCENDENTAL = {"exp", "log", "tanh", "logistic", "sqrt", "rsqrt", "log1p", "expm1", "erf"}
_TRANSCENDENTAL |= {"sin", "cos", "pow"}

OPS: dict[str, OpSpec] = {}
for _n in UNARY_OPS:
    OPS[_n] = _spec(_n, (1, 1), "elementwise", _unary, transcendental=_n in _TRANSCENDENTAL)
for _n in BINARY_OPS:
    OPS[_n] = _spec(_n, (2, 2), "elementwise", _binary, transcendental=_n in _TRANSCENDENTAL)
OPS.update(
    {
        "integer_pow": _spec("integer_pow", (1, 1), "elementwise", _integer_pow, {"y": "int"}),
        "convert": _spec("convert", (1, 1), "elementwise", _convert, {"dtype": "dtype"}),
        "reshape": _spec("reshape", (1, 1), "alias", _reshape, {"shape": "dims"}),
        "squeeze": _spec("squeeze", (1, 1), "alias", _squeeze, {"axes": "axes"}),
        "expand_dims": _spec("expand_dims", (1, 1), "alias", _expand_dims, {"axes": "axes"}),
        "broadcast_in_dim": _spec(
            "broadcast_in_dim", (1, 1), "move", _broadcast_in_dim, {"shape": "dims", "dims": "axes"}
        ),
        "transpose": _spec("transpose", (1, 1), "move", _transpose, {"perm": "perm"}),
        "reduce_sum": _spec("reduce_sum", (1, 1), "compute", _reduce, {"axes": "axes"}),
        "reduce_max": _spec("reduce_max", (1, 1), "compute", _reduce, {"axes": "axes"}),
        "reduce_min": _spec("reduce_min", (1, 1), "compute", _reduce, {"axes": "axes"}),
        "argmax": _spec(
            "argmax", (1, 1), "compute", _argreduce, {"axis": "axis", "dtype": "dtype"}
        ),
        "argmin": _spec(
            "argmin", (1, 1), "compute", _argreduce, {"axis": "axis", "dtype": "dtype"}
        ),
        "dot_general": _spec(
            "dot_general",
            (2, 2),
            "compute",
            _dot_general,
            {"contract": "contract", "batch": "contract"},
        ),
        "linear": _spec("linear", (1, 1), "compute", _linear, {"weight": "name"}),
        "conv": _spec(
            "conv",
            (1, 1),
            "compute",
            _conv,
            {
                "weight": "name",
                "strides": "posint",
                "pads": "pads",
                "dilation": "posint",
                "kernel": "kernel",
                "groups": "groups",
            },
            optional=("groups",),
        ),
        "reduce_window_max": _spec(
            "reduce_window_max",
            (1, 1),
            "compute",
            _reduce_window,
            {"window": "posint", "strides": "posint", "pads": "pads"},
        ),
        "reduce_window_sum": _spec(
            "reduce_window_sum",
            (1, 1),
            "compute",
            _reduce_window,
            {"window": "posint", "strides": "posint", "pads": "pads"},
        ),
        "select_n": _spec("select_n", (2, 16), "elementwise", _select_n),
        "clamp": _spec("clamp", (3, 3), "elementwise", _clamp),
        "concatenate": _spec("concatenate", (1, 16), "move", _concatenate, {"axis": "axis"}),
        "pad": _spec("pad", (1, 1), "move", _pad, {"value": "lit", "pads": "pads"}),
        "rev": _spec("rev", (1, 1), "move", _rev, {"axes": "axes"}),
        "slice": _spec(
            "slice",
            (1, 1),
            "move",
            _slice,
            {"start": "kernel", "limit": "dims", "strides": "posint"},
        ),
    }
)


# ---------------------------------------------------------------------------------------------
# full-integer ops (INT8_SPEC.md; reference arithmetic in `jaxcompress_kernels.format.quant`).
# Every int8 value's (scale, zero_point) lives in the graph's quantization record
# (``graph["quant"]``, checked by `validate_quant`), never in the nodes; weight scales and
# biases are tensors the node names.

QUANT_OPS = (
    "quantize",
    "dequantize",
    "qlinear",
    "qconv2d",
    "qmax_pool2d",
    "qavg_pool2d",
    "qmean",
    "qadd",
)
# ops whose output is the input's data rearranged: on int8 they keep scale and zero point
QUANT_VIEW_OPS = (
    "reshape",
    "squeeze",
    "expand_dims",
    "transpose",
    "broadcast_in_dim",
    "pad",
    "slice",
    "rev",
    "concatenate",
)


def _need_int8(dtypes, what="input"):
    _need(all(d == "int8" for d in dtypes), f"{what} dtypes {list(dtypes)} must be int8")


def _q_bounds(node):
    _need(node["qmin"] <= node["qmax"], f"qmin={node['qmin']} > qmax={node['qmax']}")


def _quantize(shapes, dtypes, node, b):
    _need(dtypes[0] == "float32", f"quantize needs a float32 input, got {dtypes[0]}")
    return shapes[0], "int8"


def _dequantize(shapes, dtypes, node, b):
    _need_int8(dtypes)
    return shapes[0], "float32"


def _qlinear(shapes, dtypes, node, b):
    _need_int8(dtypes)
    _q_bounds(node)
    ws = node["_wshape"]
    _need(len(ws) == 2, f"qlinear weight must be (K, N), got {ws}")
    x = shapes[0]
    _need(len(x) >= 1 and x[-1] == ws[0], f"input {x} does not end in the weight's K={ws[0]}")
    return (*x[:-1], ws[1]), "int8"


def _qconv2d(shapes, dtypes, node, b):
    _need_int8(dtypes)
    _q_bounds(node)
    x, ws = shapes[0], node["_wshape"]
    groups = node.get("groups", 1)
    _need(len(ws) == 4, f"qconv2d weight must be (KH, KW, C_in/groups, C_out), got {ws}")
    _need(len(x) == 4, f"qconv2d input must be NHWC, got {x}")
    _need(x[3] == ws[2] * groups, f"input channels {x[3]} != {ws[2]} x groups={groups}")
    _need(ws[3] % groups == 0, f"output channels {ws[3]} not divisible by groups={groups}")
    out = [x[0]]
    for i in range(2):
        span = (ws[i] - 1) * node["dilation"][i] + 1
        out.append(_window_out(x[i + 1], span, node["strides"][i], *node["pads"][i]))
    return (*out, ws[3]), "int8"


def _qpool(shapes, dtypes, node, b):
    _need_int8(dtypes)
    if "qmin" in node:
        _q_bounds(node)
    x = shapes[0]
    _need(len(x) == 4, f"pooling input must be NHWC, got {x}")
    out = [x[0]]
    for i in range(2):
        out.append(_window_out(x[i + 1], node["window"][i], node["strides"][i], *node["pads"][i]))
    return (*out, x[3]), "int8"


def _qmean(shapes, dtypes, node, b):
    _need_int8(dtypes)
    _q_bounds(node)
    _need(len(node["axes"]) >= 1, "qmean needs at least one axis")
    _need(all(shapes[0][a] > 0 for a in node["axes"] if a < len(shapes[0])), "empty mean")
    return _reduce(shapes, dtypes, node, b)


def _qadd(shapes, dtypes, node, b):
    _need_int8(dtypes)
    _q_bounds(node)
    _need(shapes[0] == shapes[1], f"qadd input shapes {list(shapes)} differ")
    return shapes[0], "int8"


_QBOUNDS = {"qmin": "qint", "qmax": "qint"}
_WEIGHTS = {"weight": "name", "weight_scale": "name", "bias": "name"}
_WINDOW = {"window": "posint2", "strides": "posint2", "pads": "pads2"}
OPS.update(
    {
        "quantize": _spec("quantize", (1, 1), "elementwise", _quantize),
        "dequantize": _spec("dequantize", (1, 1), "elementwise", _dequantize),
        "qlinear": _spec(
            "qlinear", (1, 1), "compute", _qlinear, {**_WEIGHTS, **_QBOUNDS}, optional=("bias",)
        ),
        "qconv2d": _spec(
            "qconv2d",
            (1, 1),
            "compute",
            _qconv2d,
            {
                **_WEIGHTS,
                **_QBOUNDS,
                "strides": "posint2",
                "pads": "pads2",
                "dilation": "posint2",
                "groups": "groups",
            },
            optional=("bias", "groups"),
        ),
        "qmax_pool2d": _spec("qmax_pool2d", (1, 1), "compute", _qpool, dict(_WINDOW)),
        "qavg_pool2d": _spec(
            "qavg_pool2d", (1, 1), "compute", _qpool, {**_WINDOW, **_QBOUNDS, "count": "count"}
        ),
        "qmean": _spec("qmean", (1, 1), "compute", _qmean, {"axes": "axes", **_QBOUNDS}),
        "qadd": _spec("qadd", (2, 2), "elementwise", _qadd, dict(_QBOUNDS)),
    }
)


def _bad_scale(s) -> bool:
    if type(s) not in (int, float) or not math.isfinite(s) or not s > 0:
        return True
    f = np.float32(s)  # used as float32: must neither overflow nor flush to 0
    return not (np.isfinite(f) and f > 0)


def _record(rec) -> bool:
    return (
        isinstance(rec, dict)
        and set(rec) == {"scale", "zero_point", "dtype"}
        and rec["dtype"] == "int8"
        and _is_int(rec["zero_point"], -128, 127)
        and not _bad_scale(rec["scale"])
    )


def _same(a, b) -> bool:
    return np.float32(a["scale"]) == np.float32(b["scale"]) and a["zero_point"] == b["zero_point"]


def validate_quant(graph, tensors) -> dict:
    """Checks the graph's per-value quantization record against its nodes.

    ``graph["quant"]`` (absent in float graphs) maps each int8 activation value to
    ``{"scale": float > 0 (finite as float32), "zero_point": int in [-128, 127], "dtype":
    "int8"}``. Rules: the graph input and outputs are float (no record); ``quantize`` makes a
    recorded value from an unrecorded one and ``dequantize`` the reverse; every input and the
    output of the other q-ops are recorded, ``qmax_pool2d`` keeps its input's record; a view or
    data-movement op (`QUANT_VIEW_OPS`) on recorded values keeps their (identical) record, and
    ``pad`` pads with the zero point; any other op reads and makes unrecorded values only.
    ``qlinear``/``qconv2d`` name an int8 dense weight with values in [-127, 127] (N = its last
    axis), float32 ``(N,)`` weight scales (finite, > 0) and optionally an int32 ``(N,)`` bias;
    every fixed-point multiplier the node needs must exist (`quant.quantize_multiplier`).

    Args:
      graph: the manifest's graph (structure already checked by `validate_node`).
      tensors: ``{name: TensorEntry}`` of the artifact.

    Returns:
      The record map (``{}`` for a float graph).

    Raises:
      ArtifactError: the first violation, naming the value or the node.
    """
    from jaxcompress_kernels.errors import JaxCompressValueError
    from jaxcompress_kernels.format import quant as _q

    recs = graph.get("quant", {})
    if not isinstance(recs, dict):
        raise ArtifactError("graph quant record is not a map")
    for v, rec in recs.items():
        if not _record(rec):
            raise ArtifactError(
                f"quantization record of value {v!r} is malformed ({_short(rec)}): needs a finite "
                "scale > 0, an integer zero_point in [-128, 127] and dtype 'int8'"
            )
    nodes = graph["nodes"]
    made = {n["out"] for n in nodes}
    for v in recs:
        if v not in made:
            raise ArtifactError(f"quantization record names {v!r}, which no graph node makes")
    for o in graph["outputs"]:
        if o in recs:
            raise ArtifactError(f"graph output {o!r} is int8: end the graph with dequantize")
    if not recs and not any(n["op"] in QUANT_OPS for n in nodes):
        return {}

    def rec_of(r):
        return recs.get(r) if isinstance(r, str) else None

    for i, n in enumerate(nodes):
        op, out = n["op"], n["out"]
        where = f"graph node {i} ({op})"
        refs = [r for r in n["in"] if isinstance(r, str)]
        ins = [rec_of(r) for r in refs]
        if op == "quantize":
            if ins[0] is not None or out not in recs:
                raise ArtifactError(
                    f"{where}: quantize reads a float value and makes a recorded "
                    f"int8 value ({out!r} needs a quantization record)"
                )
            continue
        if op == "dequantize":
            if not refs or ins[0] is None or out in recs:
                raise ArtifactError(
                    f"{where}: dequantize reads a recorded int8 value "
                    "(missing quantization record) and makes a float one"
                )
            continue
        if op in QUANT_OPS:
            missing = [r for r, q in zip(refs, ins, strict=True) if q is None]
            if len(refs) != len(n["in"]) or missing or out not in recs:
                what = missing or ([out] if out not in recs else ["a literal input"])
                raise ArtifactError(f"{where}: missing quantization record for {what}")
            y = recs[out]
            try:
                if op == "qmax_pool2d":
                    if not _same(ins[0], y):
                        raise ArtifactError(
                            f"{where}: output record of {out!r} differs from its input's"
                        )
                elif op in ("qlinear", "qconv2d"):
                    _check_qweights(where, n, tensors, ins[0], y, _q)
                elif op == "qavg_pool2d":
                    _q.pool_multiplier(ins[0]["scale"], y["scale"], n["count"])
                elif op == "qadd":
                    _q.add_multipliers(ins[0]["scale"], ins[1]["scale"], y["scale"])
            except JaxCompressValueError as e:
                raise ArtifactError(f"{where}: {e}") from None
            continue
        if op in QUANT_VIEW_OPS and any(q is not None for q in ins):
            if any(q is None for q in ins) or not all(_same(q, ins[0]) for q in ins):
                raise ArtifactError(f"{where}: inputs mix int8 values of different records")
            if out not in recs or not _same(recs[out], ins[0]):
                raise ArtifactError(
                    f"{where}: a view of an int8 value keeps its record; {out!r} has "
                    f"{_short(recs.get(out))}"
                )
            if op == "pad":
                lit = n["value"]
                if lit["dtype"] != "int8" or lit["lit"] != ins[0]["zero_point"]:
                    raise ArtifactError(f"{where}: int8 padding must be the zero point")
            continue
        if any(q is not None for q in ins):
            raise ArtifactError(f"{where}: a float op reads int8 value(s) {refs}; dequantize first")
        if out in recs:
            raise ArtifactError(f"{where}: only q-ops make recorded int8 values, not {op}")
    return recs


def _check_qweights(where, n, tensors, x, y, _q):
    w = tensors.get(n["weight"])
    if w is None or w.encoding != "dense" or w.dtype != "int8" or len(w.shape) < 2:
        raise ArtifactError(f"{where}: weight {n['weight']!r} must be an int8 dense tensor")
    vals = w.parts["value"]
    if vals.size and int(vals.min()) < -127:
        raise ArtifactError(f"{where}: weight {n['weight']!r} holds -128 (symmetric int8 only)")
    nout = w.shape[-1]
    s = tensors.get(n["weight_scale"])
    if s is None or s.encoding != "dense" or s.dtype != "float32" or s.shape != (nout,):
        raise ArtifactError(f"{where}: weight_scale must be a float32 ({nout},) tensor")
    sv = s.parts["value"]
    if not (np.isfinite(sv).all() and (sv > 0).all()):
        raise ArtifactError(f"{where}: weight_scale {n['weight_scale']!r} must be finite and > 0")
    if "bias" in n:
        bt = tensors.get(n["bias"])
        if bt is None or bt.encoding != "dense" or bt.dtype != "int32" or bt.shape != (nout,):
            raise ArtifactError(f"{where}: bias must be an int32 ({nout},) tensor")
    _q.channel_multipliers(x["scale"], sv, y["scale"])


def validate_node(i: int, node) -> OpSpec:
    """Checks node ``i``'s op, input count and attributes against its spec.

    Raises:
      ArtifactError: naming the node, the op and the attribute.
    """
    if not isinstance(node, dict):
        raise ArtifactError(f"graph node {i} is not a map")
    spec = OPS.get(node.get("op")) if isinstance(node.get("op"), str) else None
    if spec is None:
        raise ArtifactError(f"graph node {i} has unknown op {node.get('op')!r}")
    ins = node.get("in")
    lo, hi = spec.arity
    if not isinstance(ins, list) or not lo <= len(ins) <= hi:
        raise ArtifactError(f"graph node {i} ({spec.name}) must have {lo}..{hi} inputs")
    for r in ins:
        if not (isinstance(r, str) or _lit(r)):
            raise ArtifactError(f"graph node {i} ({spec.name}) has a malformed input {r!r}")
    if not isinstance(node.get("out"), str):
        raise ArtifactError(f"graph node {i} ({spec.name}) has no output name")
    for key, val in node.items():
        if key in ("op", "in", "out"):
            continue
        kind = spec.attrs.get(key)
        if kind is None:
            raise ArtifactError(f"graph node {i} ({spec.name}) has unknown attribute {key!r}")
        if not ATTR_KINDS[kind](val):
            raise ArtifactError(
                f"graph node {i} ({spec.name}) attribute {key!r}={_short(val)} is malformed "
                f"or out of range ({kind})"
            )
    missing = set(spec.attrs) - set(node) - spec.optional
    if missing:
        raise ArtifactError(f"graph node {i} ({spec.name}) lacks attributes {sorted(missing)}")
    return spec


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def infer(i: int, node, in_shapes, in_dtypes, lits, batch: int, weight_shape=None):
    """``(shape, dtype)`` of node ``i``'s output from its inputs' shapes and dtypes.

    Args:
      i: node index (for messages).
      node: the (validated) node.
      in_shapes, in_dtypes: per input.
      lits: per input, True for a literal.
      batch: the batch size symbolic dims resolve to.
      weight_shape: the weight tensor's shape for ``linear``/``conv``.

    Raises:
      ArtifactError: the inputs do not fit the op (names the node).
    """
    spec = OPS[node["op"]]
    n = dict(node)
    n["_lits"] = lits
    if weight_shape is not None:
        ws = tuple(weight_shape)
        nn = ws[-1] if ws else 1
        n["_wkn"] = (math.prod(ws) // nn if nn else 0, nn)
        n["_wshape"] = ws
    try:
        shape, dtype = spec.infer(list(in_shapes), list(in_dtypes), n, batch)
    except _Bad as e:
        raise ArtifactError(f"graph node {i} ({spec.name}): {e}") from None
    except (IndexError, KeyError, TypeError) as e:
        raise ArtifactError(
            f"graph node {i} ({spec.name}): malformed ({type(e).__name__})"
        ) from None
    if len(shape) > MAX_RANK:
        raise ArtifactError(f"graph node {i} ({spec.name}): rank {len(shape)} > {MAX_RANK}")
    return tuple(int(s) for s in shape), dtype


def node_flops(node, in_shapes, out_shape, *, weight_shape=None, weight_nnz=None) -> float:
    """FLOPs of one node (see the module table); ``weight_nnz`` set when run sparse."""
    op = node["op"]
    spec = OPS[op]
    out_el = math.prod(out_shape)
    if op in ("linear", "conv", "qlinear", "qconv2d"):
        n = out_shape[-1] if out_shape else 1
        m = out_el // max(n, 1)
        if weight_nnz is not None:
            return 2.0 * m * weight_nnz
        k = math.prod(weight_shape) // max(weight_shape[-1], 1)
        return 2.0 * m * k * n
    if op in ("qmax_pool2d", "qavg_pool2d"):
        return float(out_el * math.prod(node["window"]))
    if op == "qmean":
        return float(math.prod(in_shapes[0]))
    if op == "dot_general":
        a = in_shapes[0]
        csize = math.prod(a[d] for d in node["contract"][0])
        return 2.0 * out_el * csize
    if op.startswith("reduce_window"):
        return float(out_el * math.prod(node["window"]))
    if op.startswith("reduce_") or op in ("argmax", "argmin"):
        return float(math.prod(in_shapes[0]))
    if spec.kind in ("alias", "move"):
        return 0.0
    return float(out_el)
