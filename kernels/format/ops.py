"""The artifact's op set: one `OpSpec` per op (attribute schema, shape/dtype inference, FLOPs).

This table is the only description of the graph ops. The artifact reader validates every node
against it, the runtime's load-time plan infers every value's shape and dtype with it, the
edge cost model (``jaxcompress.edge``) reads FLOPs and bytes from the plan built on it, export
captures JAX primitives into these ops, and the ONNX emitter and the runtime each keep a table of
implementations keyed by the names in `OPS` (tests check that they cover every op).

A node is ``{"op": name, "in": [ref, ...], "out": value name, **attrs}``; a ref is a value or
tensor name or a literal ``{"lit": number | "inf" | "-inf" | "nan", "dtype": str}``. Shape entries
of ``shape``/``limit`` attributes are ints or ``[a, c]`` meaning ``a * batch + c``.

FLOPs (a multiply-add is 2):

| op class                    | FLOPs                                                       |
|-----------------------------|-------------------------------------------------------------|
| ``linear`` / ``conv``       | ``2 * M * K_eff * N`` for dense weights, ``2 * M * nnz`` for |
|                             | weights stored sparse (``M`` = output elements / N)          |
| ``dot_general``             | ``2 * out elements * contracted size``                      |
| ``reduce_window_*``         | ``out elements * window size``                              |
| ``reduce_*``, ``arg*``      | input elements                                              |
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
    if op in ("linear", "conv"):
        n = out_shape[-1] if out_shape else 1
        m = out_el // max(n, 1)
        if weight_nnz is not None:
            return 2.0 * m * weight_nnz
        k = math.prod(weight_shape) // max(weight_shape[-1], 1)
        return 2.0 * m * k * n
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
