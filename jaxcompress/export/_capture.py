"""Graph capture: turn a model's own forward function into the artifact's op graph.

The forward function is traced with ``jax.make_jaxpr(apply_fn)(params, x)`` and its equations are
walked in order. Calls (``pjit``/``jit``, ``custom_jvp_call``, ``custom_vjp_call``) are inlined,
sub-graphs that only touch constants are folded at export time, and every parameter leaf becomes a
named tensor (its ``/``-joined key path, as in ``jaxcompress._core.named_leaves``).

Two primitives get a weight-aware form so the edge runtime can run them with the packed kernels:

- ``linear``: ``dot_general(x, W)`` with ``W`` a 2-D parameter, contracting the last axis of ``x``
  with axis 0 of ``W`` (a Flax ``Dense``/``nnx.Linear`` kernel ``(in, out)``).
- ``conv``: ``conv_general_dilated(x, W)`` with channel-last input (``N...C``) and a ``(...spatial,
  in, out)`` kernel (Flax's layout); the runtime runs it as im2col + the weight's matmul, with
  ``K = prod(spatial) * in`` in C order, which is exactly the reduction extent the quantizer groups
  along.

Batch size is symbolic: the function is traced at two batch sizes and every shape entry that
changes is stored as ``[a, c]`` meaning ``a * batch + c`` (plain ints otherwise). If the two traces
differ in structure the graph is exported for the example's batch size only (``"batch": "static"``).

Graph format (JSON, stored in the artifact):
``{"inputs": [name], "outputs": [ref], "nodes": [{"op", "in": [ref...], "out": name, ...attrs}],
"batch": "symbolic" | "static", "input_shapes": [...], "input_dtypes": [...]}``, where a ref is a
value/tensor name (``str``) or a literal ``{"lit": float | "inf" | "-inf" | "nan", "dtype": str}``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.extend.core as jcore
import numpy as np

from jaxcompress._core import JaxCompressError, JaxCompressValueError, key_path_str
from jaxcompress_kernels import artifact as _artifact

__all__ = ["CapturedGraph", "capture", "SUPPORTED_PRIMITIVES"]

# Elementwise ops are exactly those the edge runtime executes (one list, kept in the artifact module).
UNARY = frozenset(_artifact.UNARY_OPS)
BINARY = frozenset(_artifact.BINARY_OPS)
ALIASES = {"stop_gradient", "copy", "copy_p", "optimization_barrier"}
CALLS = {
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "checkpoint",
}
OTHER = {
    "integer_pow",
    "convert_element_type",
    "reshape",
    "broadcast_in_dim",
    "transpose",
    "squeeze",
    "expand_dims",
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "argmax",
    "argmin",
    "dot_general",
    "conv_general_dilated",
    "reduce_window_max",
    "reduce_window_sum",
    "select_n",
    "concatenate",
    "clamp",
    "pad",
    "rev",
    "slice",
}
SUPPORTED_PRIMITIVES = frozenset(UNARY | BINARY | ALIASES | CALLS | OTHER)
DTYPES = ("float32", "int32", "bool", "uint8", "int8")


@dataclasses.dataclass
class CapturedGraph:
    """The traced graph plus the tensors it reads.

    Attributes:
      graph: the JSON-able graph (see the module docstring).
      params: ``{name: np.ndarray}`` every parameter leaf the graph reads (dense float, i.e. the
        dequantized values for compressed leaves), by key path.
      consts: ``{name: np.ndarray}`` folded constants.
      weight_uses: names of parameters used as the weight of a ``linear``/``conv`` node.
      other_uses: names of parameters read by any other node (need a dense copy at run time).
      folded: ``{weight name: number of affine nodes folded into it}`` (batch norm folding).
      sites: ``[(site, activation ref, kernel ref)]`` for every ``dot_general`` /
        ``conv_general_dilated`` outside custom-derivative functions, in evaluation order, named
        as the activation observers name them (``"dot_general_2"``; see
        ``jaxcompress.quantization.observe_activations``): how observed ranges map onto values.
    """

    graph: dict
    params: dict[str, np.ndarray]
    consts: dict[str, np.ndarray]
    weight_uses: set[str]
    other_uses: set[str]
    folded: dict = dataclasses.field(default_factory=dict)
    sites: list = dataclasses.field(default_factory=list)


class _Tracer:
    """Walks one jaxpr into graph nodes."""

    def __init__(self, param_names: list[str]):
        self.param_names = param_names
        self.nodes: list[dict] = []
        self.consts: dict[str, np.ndarray] = {}
        self.kind: dict[str, str] = {}  # name -> "param" | "const" | "value"
        self.shape: dict[str, tuple] = {}
        self.dtype: dict[str, str] = {}
        self.counter = 0
        self.weight_uses: set[str] = set()
        self.other_uses: set[str] = set()
        self.sites: list[tuple[str, Any, Any]] = []
        self.custom_depth = 0  # inside custom_jvp/vjp functions, which the observers do not see

    # refs ------------------------------------------------------------------------------
    def new_value(self, aval) -> str:
        name = f"%{self.counter}"
        self.counter += 1
        self.kind[name] = "value"
        self.shape[name] = tuple(aval.shape)
        self.dtype[name] = _dtype_name(aval.dtype, "output")
        return name

    def new_const(self, val) -> Any:
        arr = np.asarray(val)
        if arr.ndim == 0 and arr.dtype.kind in "fiub":
            return _lit(arr)
        name = f"const/{len(self.consts)}"
        self.consts[name] = np.ascontiguousarray(arr.astype(_dtype_name(arr.dtype, "constant")))
        self.kind[name] = "const"
        self.shape[name] = arr.shape
        self.dtype[name] = str(self.consts[name].dtype)
        return name

    def is_static(self, ref) -> bool:
        return isinstance(ref, dict) or self.kind.get(ref) == "const"

    def static_value(self, ref):
        if isinstance(ref, dict):
            return np.asarray(_lit_value(ref), ref["dtype"])
        return self.consts[ref]

    def read(self, env, v):
        if isinstance(v, jcore.Literal):
            return _lit(np.asarray(v.val, dtype=v.aval.dtype))
        return env[v]

    # walking ---------------------------------------------------------------------------
    def walk(self, jaxpr, consts, in_refs) -> list:
        env: dict = {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = self.new_const(c)
        for v, r in zip(jaxpr.invars, in_refs, strict=True):
            env[v] = r
        for eqn in jaxpr.eqns:
            ins = [self.read(env, v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, r in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, jcore.DropVar):
                    env[v] = r
        return [self.read(env, v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins) -> list:
        name = eqn.primitive.name
        p = eqn.params
        if name in CALLS:
            sub = p.get("jaxpr", p.get("call_jaxpr", p.get("fun_jaxpr")))
            if sub is None:
                raise JaxCompressValueError(f"export cannot inline the call primitive {name!r}")
            custom = int(name.startswith("custom_"))
            self.custom_depth += custom
            try:
                if isinstance(sub, jcore.ClosedJaxpr):
                    return self.walk(sub.jaxpr, sub.consts, ins)
                return self.walk(sub, [], ins)
            finally:
                self.custom_depth -= custom
        if name in ("dot_general", "conv_general_dilated") and not self.custom_depth:
            # numbered exactly as the activation observers number their sites
            self.sites.append((f"{name}_{len(self.sites)}", ins[0], ins[1]))
        if name not in SUPPORTED_PRIMITIVES:
            raise JaxCompressValueError(
                f"export does not support the JAX primitive {name!r} (used as "
                f"{name}[{', '.join(sorted(p))}]); supported: {sorted(SUPPORTED_PRIMITIVES)}"
            )
        if name in ALIASES:
            return list(ins)
        if all(self.is_static(r) for r in ins):  # constant folding (no parameter involved)
            vals = [self.static_value(r) for r in ins]
            out = eqn.primitive.bind(*vals, **p)
            outs = out if eqn.primitive.multiple_results else [out]
            return [self.new_const(np.asarray(o)) for o in outs]
        if name == "convert_element_type":
            src = ins[0]
            new = _dtype_name(p["new_dtype"], "convert_element_type")
            if not isinstance(src, dict) and self.dtype.get(src) == new:
                return [src]
        node = self.node(name, p, ins, eqn)
        if len(eqn.outvars) != 1:
            raise JaxCompressValueError(f"export: primitive {name!r} with several outputs")
        out = self.new_value(eqn.outvars[0].aval)
        node["out"] = out
        for r in node["in"]:
            if isinstance(r, str) and self.kind.get(r) == "param":
                self.other_uses.add(r)
        self.nodes.append(node)
        return [out]

    def node(self, name, p, ins, eqn) -> dict:
        avals = [v.aval for v in eqn.invars]
        if name in UNARY or name in BINARY:
            return {"op": name, "in": ins}
        if name == "integer_pow":
            return {"op": name, "in": ins, "y": int(p["y"])}
        if name == "convert_element_type":
            return {"op": "convert", "in": ins, "dtype": _dtype_name(p["new_dtype"], name)}
        if name == "reshape":
            if p.get("dimensions") is not None:
                raise JaxCompressValueError("export: reshape with dimensions= is not supported")
            return {"op": name, "in": ins, "shape": _ints(p["new_sizes"])}
        if name == "broadcast_in_dim":
            if len(ins) != 1:
                raise JaxCompressValueError(
                    "export: dynamic-shape broadcast_in_dim is not supported"
                )
            return {
                "op": name,
                "in": ins,
                "shape": _ints(p["shape"]),
                "dims": _ints(p["broadcast_dimensions"]),
            }
        if name == "transpose":
            return {"op": name, "in": ins, "perm": _ints(p["permutation"])}
        if name == "squeeze":
            return {"op": name, "in": ins, "axes": _ints(p["dimensions"])}
        if name == "expand_dims":
            return {"op": name, "in": ins, "axes": _ints(p["dimensions"])}
        if name in ("reduce_sum", "reduce_max", "reduce_min"):
            return {"op": name, "in": ins, "axes": _ints(p["axes"])}
        if name in ("argmax", "argmin"):
            if len(p["axes"]) != 1:
                raise JaxCompressValueError(f"export: {name} over several axes")
            return {
                "op": name,
                "in": ins,
                "axis": int(p["axes"][0]),
                "dtype": _dtype_name(p["index_dtype"], name),
            }
        if name == "select_n":
            return {"op": name, "in": ins}
        if name == "clamp":
            return {"op": name, "in": ins}
        if name == "concatenate":
            return {"op": name, "in": ins, "axis": int(p["dimension"])}
        if name == "pad":
            if not isinstance(ins[1], dict):
                raise JaxCompressValueError("export: pad with a non-constant padding value")
            cfg = [tuple(int(a) for a in c) for c in p["padding_config"]]
            if any(c[2] != 0 or c[0] < 0 or c[1] < 0 for c in cfg):
                raise JaxCompressValueError("export: pad supports only non-negative edge padding")
            return {"op": name, "in": ins[:1], "value": ins[1], "pads": [list(c[:2]) for c in cfg]}
        if name == "rev":
            return {"op": name, "in": ins, "axes": _ints(p["dimensions"])}
        if name == "slice":
            strides = p.get("strides") or (1,) * len(p["start_indices"])
            return {
                "op": name,
                "in": ins,
                "start": _ints(p["start_indices"]),
                "limit": _ints(p["limit_indices"]),
                "strides": _ints(strides),
            }
        if name == "dot_general":
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            x, w = ins
            if (
                isinstance(w, str)
                and self.kind.get(w) == "param"
                and len(avals[1].shape) == 2
                and not lb
                and not rb
                and tuple(lc) == (len(avals[0].shape) - 1,)
                and tuple(rc) == (0,)
                and isinstance(x, str)
                and self.kind.get(x) == "value"
            ):
                self.weight_uses.add(w)
                return {"op": "linear", "in": [x], "weight": w}
            return {
                "op": name,
                "in": ins,
                "contract": [_ints(lc), _ints(rc)],
                "batch": [_ints(lb), _ints(rb)],
            }
        if name == "conv_general_dilated":
            return self.conv(p, ins, avals)
        if name in ("reduce_window_max", "reduce_window_sum"):
            if any(d != 1 for d in p["base_dilation"]) or any(d != 1 for d in p["window_dilation"]):
                raise JaxCompressValueError(f"export: {name} with dilation is not supported")
            return {
                "op": name,
                "in": ins,
                "window": _ints(p["window_dimensions"]),
                "strides": _ints(p["window_strides"]),
                "pads": [[int(a), int(b)] for a, b in p["padding"]],
            }
        raise JaxCompressValueError(f"export does not support the JAX primitive {name!r}")

    def conv(self, p, ins, avals) -> dict:
        x, w = ins
        nd = len(avals[0].shape) - 2
        dn = p["dimension_numbers"]
        lhs, rhs, out = tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)
        want_lhs = (0, nd + 1, *range(1, nd + 1))
        want_rhs = (nd + 1, nd, *range(nd))
        if lhs != want_lhs or out != want_lhs or rhs != want_rhs:
            raise JaxCompressValueError(
                f"export: conv_general_dilated with dimension_numbers={dn} is not supported "
                "(only channel-last inputs N...C with (...spatial, in, out) kernels, Flax's layout)"
            )
        if p["batch_group_count"] != 1:
            raise JaxCompressValueError(
                "export: conv_general_dilated with batch_group_count > 1 is not supported"
            )
        if any(d != 1 for d in p["lhs_dilation"]):
            raise JaxCompressValueError("export: transposed conv (lhs_dilation) is not supported")
        if not (
            isinstance(w, str)
            and isinstance(x, str)
            and self.kind.get(w) == "param"
            and self.kind.get(x) == "value"
        ):
            raise JaxCompressValueError(
                "export: conv_general_dilated needs a parameter kernel and an activation input"
            )
        self.weight_uses.add(w)
        node = {
            "op": "conv",
            "in": [x],
            "weight": w,
            "strides": _ints(p["window_strides"]),
            "pads": [[int(a), int(b)] for a, b in p["padding"]],
            "dilation": _ints(p["rhs_dilation"]),
            "kernel": list(avals[1].shape),
        }
        if p["feature_group_count"] != 1:  # grouped / depthwise (groups == in channels)
            node["groups"] = int(p["feature_group_count"])
        return node


def _ints(seq) -> list[int]:
    return [int(s) for s in seq]


def _dtype_name(dtype, where: str) -> str:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise JaxCompressValueError(
            f"export: dtype {name} (in {where}) is not supported; supported: {DTYPES}"
        )
    return name


def _lit(arr: np.ndarray) -> dict:
    dtype = _dtype_name(arr.dtype, "literal")
    v = arr.item()
    if isinstance(v, float) and not math.isfinite(v):
        v = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    elif isinstance(v, bool):
        v = int(v)
    return {"lit": v, "dtype": dtype}


def _lit_value(ref: dict):
    v = ref["lit"]
    return float(v) if isinstance(v, str) else v


def _trace(apply_fn, leaves, treedef, names, x) -> _Tracer:
    def fn(flat, xx):
        return apply_fn(jax.tree_util.tree_unflatten(treedef, flat), xx)

    closed = jax.make_jaxpr(fn)(leaves, x)
    t = _Tracer(names)
    in_refs = []
    for name, leaf in zip(names, leaves, strict=True):
        t.kind[name] = "param"
        t.shape[name] = tuple(np.shape(leaf))
        t.dtype[name] = _dtype_name(np.asarray(leaf).dtype, f"parameter {name}")
        in_refs.append(name)
    t.kind["input"] = "value"
    t.shape["input"] = tuple(x.shape)
    t.dtype["input"] = _dtype_name(x.dtype, "input")
    out = t.walk(closed.jaxpr, closed.consts, in_refs + ["input"])
    t.outputs = out
    return t


_SHAPE_ATTRS = ("shape", "limit")


def _merge_symbolic(a: _Tracer, b: _Tracer, ba: int, bb: int) -> list[dict] | None:
    """Nodes of `a` with batch-dependent shape entries as ``[coef, const]``; None on mismatch."""
    if len(a.nodes) != len(b.nodes) or a.outputs != b.outputs:
        return None
    if a.consts.keys() != b.consts.keys() or any(
        a.consts[k].shape != b.consts[k].shape or not np.array_equal(a.consts[k], b.consts[k])
        for k in a.consts
    ):
        return None
    merged = []
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        if na.keys() != nb.keys() or na["op"] != nb["op"] or na["in"] != nb["in"]:
            return None
        node = dict(na)
        for key in na:
            if na[key] == nb[key]:
                continue
            if key not in _SHAPE_ATTRS or len(na[key]) != len(nb[key]):
                return None
            dims = []
            for da, db in zip(na[key], nb[key], strict=True):
                if da == db:
                    dims.append(da)
                else:
                    coef, rem = divmod(db - da, bb - ba)
                    if rem:
                        return None
                    dims.append([coef, da - coef * ba])
            node[key] = dims
        merged.append(node)
    return merged


def capture(
    apply_fn, params: Any, example_input: Any, *, is_leaf=None, foldable: set[str] | None = None
) -> CapturedGraph:
    """Trace ``apply_fn(params, x)`` into a graph over named parameter tensors.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``, pure (e.g. from ``jaxcompress.models.functional``).
      params: pytree of float arrays (dense; compressed leaves must be dequantized first).
      example_input: ``(batch, ...)`` float32 array.
      is_leaf: optional ``is_leaf`` for flattening `params` (names follow the same paths).
      foldable: names of float kernels that may absorb a following per-channel affine chain
        (batch norm in inference mode: ``(h + b - mean) * scale / sqrt(var + eps) + beta``);
        None folds into every float kernel, ``set()`` disables folding.

    Returns:
      A :class:`CapturedGraph`.

    Raises:
      JaxCompressValueError: an unsupported primitive (the message names it) or layout.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_leaf)
    names = [key_path_str(p) for p, _ in flat]
    if len(set(names)) != len(names):
        raise JaxCompressValueError("export: two parameter leaves share a key path")
    leaves = [np.asarray(leaf) for _, leaf in flat]
    x = np.asarray(example_input)
    if x.ndim < 1 or x.shape[0] < 1:
        raise JaxCompressValueError(f"example_input.shape={x.shape} must be (batch >= 1, ...)")
    x = x.astype(np.float32) if x.dtype.kind == "f" else x
    main = None
    try:
        b1, b2 = 2, 3
        t1 = _trace(apply_fn, leaves, treedef, names, np.zeros((b1, *x.shape[1:]), x.dtype))
        t2 = _trace(apply_fn, leaves, treedef, names, np.zeros((b2, *x.shape[1:]), x.dtype))
        merged = _merge_symbolic(t1, t2, b1, b2)
        if merged is not None:
            main, nodes, batch_mode = t1, merged, "symbolic"
    except JaxCompressError:
        raise
    except Exception:  # a model that cannot be traced at other batch sizes stays static
        pass
    if main is None:
        main = _trace(apply_fn, leaves, treedef, names, x)
        nodes, batch_mode = main.nodes, "static"
    outputs = main.outputs
    for o in outputs:
        if isinstance(o, dict) or main.kind.get(o) != "value":
            raise JaxCompressValueError("export: a model output does not depend on the input")
    param_arrays = dict(zip(names, leaves, strict=True))
    consts = dict(main.consts)
    folded: dict[str, int] = {}
    if foldable is None:
        foldable = set(names)
    nodes = _fold_affine(nodes, param_arrays, consts, main.shape, outputs, foldable, folded)
    nodes = _dead_code(nodes, outputs)
    used = {r for n in nodes for r in n["in"] if isinstance(r, str)}
    weights = {n["weight"] for n in nodes if "weight" in n}
    others = {r for n in nodes for r in n["in"] if isinstance(r, str) and r in param_arrays}
    used |= weights | set(outputs)
    graph = {
        "inputs": ["input"],
        "outputs": outputs,
        "nodes": nodes,
        "batch": batch_mode,
        "input_shapes": [list(x.shape[1:])],
        "input_dtypes": [str(x.dtype)],
    }
    param_arrays = {n: a for n, a in param_arrays.items() if n in used}
    consts = {k: v for k, v in consts.items() if k in used}
    return CapturedGraph(
        graph,
        param_arrays,
        consts,
        weights & set(param_arrays),
        others & set(param_arrays),
        folded,
        list(main.sites),
    )


def _dead_code(nodes: list[dict], outputs: list) -> list[dict]:
    live = set(o for o in outputs if isinstance(o, str))
    keep = []
    for node in reversed(nodes):
        if node["out"] in live:
            keep.append(node)
            live |= {r for r in node["in"] if isinstance(r, str)}
    return keep[::-1]


def _has_symbolic(node) -> bool:
    return any(isinstance(d, list) for key in _SHAPE_ATTRS for d in node.get(key, ()))


def _fold_affine(nodes, params, consts, shapes, outputs, foldable, folded) -> list[dict]:
    """Folds per-output-channel affine chains after float ``linear``/``conv`` nodes into the kernel:
    ``((x @ W) op1 s1) op2 s2 ...`` with ``op`` in add/sub/mul/div and every ``s`` a static
    (export-time) array that varies only along the last axis becomes ``x @ (W * a) + c``.
    This is how inference-mode batch norm is folded into the preceding conv or dense layer."""
    from jaxcompress_kernels.runtime import exec_op

    static: dict[str, np.ndarray] = {**params, **consts}
    for node in nodes:
        if node["op"] in ("linear", "conv") or _has_symbolic(node):
            continue
        if all(isinstance(r, dict) or r in static for r in node["in"]):
            vals = [
                np.asarray(_lit_value(r), r["dtype"]) if isinstance(r, dict) else static[r]
                for r in node["in"]
            ]
            static[node["out"]] = np.asarray(exec_op(node, vals, 1))
    uses: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for r in node["in"]:
            if isinstance(r, str):
                uses.setdefault(r, []).append(i)
        if "weight" in node:
            uses.setdefault(node["weight"], []).append(i)
    for o in outputs:
        uses.setdefault(o, []).append(-1)
    drop: set[int] = set()
    for node in nodes:
        w = node.get("weight")
        if w is None or w not in foldable or len(uses.get(w, [])) != 1:
            continue
        wv = params[w]
        if wv.dtype != np.float32:
            continue
        n = wv.shape[-1]
        rank = len(shapes.get(node["out"], ()))
        a = np.ones(n, np.float32)
        c = np.zeros(n, np.float32)
        cur, chain = node["out"], []
        while len(uses.get(cur, [])) == 1 and uses[cur][0] >= 0:
            j = uses[cur][0]
            nxt = nodes[j]
            if nxt["op"] not in ("add", "sub", "mul", "div") or len(nxt["in"]) != 2:
                break
            first = nxt["in"][0] == cur
            other = nxt["in"][1] if first else nxt["in"][0]
            if other == cur:
                break
            sv = (
                np.asarray(_lit_value(other), other["dtype"])
                if isinstance(other, dict)
                else (static.get(other))
            )
            if (
                sv is None
                or sv.dtype != np.float32
                or sv.ndim > rank
                or any(d != 1 for d in sv.shape[:-1])
                or (sv.ndim and sv.shape[-1] not in (1, n))
            ):
                break
            s = np.broadcast_to(sv.reshape(-1) if sv.ndim else sv, (n,)).astype(np.float32)
            op = nxt["op"]
            if op == "add":
                c = c + s
            elif op == "sub":
                if first:
                    c = c - s
                else:
                    a, c = -a, s - c
            elif op == "mul":
                a, c = a * s, c * s
            elif op == "div" and first:
                a, c = a / s, c / s
            else:
                break
            chain.append(j)
            cur = nxt["out"]
        if not chain or np.all(a == 1):
            continue  # nothing to fold beyond a bias add
        params[w] = (wv * a).astype(np.float32)
        cname = f"const/fold{len(folded)}"
        consts[cname] = c.astype(np.float32)
        last = nodes[chain[-1]]
        nodes[chain[-1]] = {"op": "add", "in": [node["out"], cname], "out": last["out"]}
        drop.update(chain[:-1])
        folded[w] = len(chain)
    return [nd for k, nd in enumerate(nodes) if k not in drop]
