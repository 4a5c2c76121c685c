"""A small op-graph abstraction the edge analyses run on (cost model, liveness, split points).

An `EdgeGraph` is a topologically ordered list of `Op`s over named values. Each op records what a
cost model needs: its output's shape/dtype (so its bytes), its FLOPs, the bytes of parameters it
reads (weights in their *stored* encoding) and whether it only aliases its input (``reshape``-like
ops are views: no bytes moved, no new buffer). Values computed only from parameters and literals
(e.g. a reshaped bias) are *static*: a cloud holding the same weights can recompute them, so they
are never sent over a link.

Build one from a verified artifact (`graph_from_artifact`, shapes by running the edge runtime once
at batch 1) or by hand (`chain_graph`, or `EdgeGraph(...)` directly) for synthetic studies.

FLOPs, shapes and kernels come from the runtime's plan, which reads the artifact format's op specs
(`jaxcompress_kernels.format.ops`): this module keeps no op table of its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = ["Op", "EdgeGraph", "chain_graph", "graph_from_artifact", "GraphExecutor"]

_ITEMSIZE = {
    "float32": 4,
    "int32": 4,
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int64": 8,
}


def _itemsize(dtype: str) -> int:
    if dtype not in _ITEMSIZE:
        raise JaxCompressValueError(f"{dtype=} is not a supported value dtype")
    return _ITEMSIZE[dtype]


@dataclasses.dataclass(frozen=True)
class Op:
    """One node.

    Attributes:
      name: unique op name (also its output value's name).
      op: op type (``linear``, ``conv``, ``add``...).
      inputs: names of the activation values it reads (graph input or earlier ops' outputs;
        parameters and literals are not listed here, their bytes are in ``param_bytes``).
      shape: output shape for one example (batch 1), batch axis included.
      dtype: output dtype name.
      flops: FLOPs for one example.
      param_bytes: bytes of parameters read (a weight in its stored encoding, biases...).
      alias: True when the output is a view of ``inputs[0]`` (no bytes moved, no new buffer).
      static: True when the output depends on parameters/literals only (never sent).
      weight: the weight tensor name for ``linear``/``conv``, else None.
      kernel: what the edge runtime's plan runs for it (from an artifact), else ``""``.
      groups: feature groups of a ``conv`` (``groups == in channels`` is a depthwise conv).
      encoding: the stored encoding of ``weight`` (``dense``, ``packed``, ``csr``, ``nm``,
        ``codebook``, ...), else ``""``.
      weight_elements: elements of ``weight`` (decoded), else 0.
      weight_bits: bits per stored weight code (32 for dense float32), else 0.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str = "float32"
    flops: float = 0.0
    param_bytes: int = 0
    alias: bool = False
    static: bool = False
    weight: str | None = None
    kernel: str = ""
    groups: int = 1
    encoding: str = ""
    weight_elements: int = 0
    weight_bits: int = 0

    @property
    def out_bytes(self) -> int:
        return math.prod(self.shape) * _itemsize(self.dtype)

    @property
    def out_elements(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class EdgeGraph:
    """A topologically ordered op graph with one input.

    Attributes:
      input: the input value's name.
      input_shape: its shape for one example (batch 1, batch axis included).
      input_dtype: its dtype name.
      ops: the ops in execution order.
      outputs: names of the graph outputs.
      weight_bytes: bytes of all parameters in their stored encoding.
    """

    input: str
    input_shape: tuple[int, ...]
    input_dtype: str
    ops: tuple[Op, ...]
    outputs: tuple[str, ...]
    weight_bytes: int = 0

    def __post_init__(self):
        seen = {self.input}
        for i, o in enumerate(self.ops):
            if o.name in seen:
                raise JaxCompressValueError(f"op {i} redefines value {o.name!r}")
            for r in o.inputs:
                if r not in seen:
                    raise JaxCompressValueError(f"op {i} ({o.op}) reads {r!r} before it is defined")
            if o.alias and len(o.inputs) != 1:
                raise JaxCompressValueError(f"alias op {o.name!r} must read exactly one value")
            seen.add(o.name)
        for r in self.outputs:
            if r not in seen:
                raise JaxCompressValueError(f"graph output {r!r} is undefined")

    @property
    def input_bytes(self) -> int:
        return math.prod(self.input_shape) * _itemsize(self.input_dtype)

    def nbytes(self, name: str) -> int:
        if name == self.input:
            return self.input_bytes
        return self.op(name).out_bytes

    def op(self, name: str) -> Op:
        for o in self.ops:
            if o.name == name:
                return o
        raise JaxCompressValueError(f"no op named {name!r}")

    def dtype(self, name: str) -> str:
        return self.input_dtype if name == self.input else self.op(name).dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == self.input else self.op(name).shape

    @property
    def flops(self) -> float:
        return float(sum(o.flops for o in self.ops))

    def last_use(self) -> dict[str, int]:
        """``{value: index of the last op reading it}``; outputs are live to ``len(ops)``."""
        last = {self.input: -1}
        for i, o in enumerate(self.ops):
            last.setdefault(o.name, i)
            for r in o.inputs:
                last[r] = i
        for r in self.outputs:
            last[r] = len(self.ops)
        return last

    def crossing(self, cut: int) -> list[str]:
        """Values produced before op `cut` (or the input) and read by op `cut` or later, or
        graph outputs; static values excluded. ``cut = 0``: the input; ``cut = len(ops)``: the
        outputs."""
        if not 0 <= cut <= len(self.ops):
            raise JaxCompressValueError(f"{cut=} must be in 0..{len(self.ops)}")
        produced = [self.input] + [o.name for o in self.ops[:cut] if not o.static]
        last = self.last_use()
        return [v for v in produced if last[v] >= cut]


def chain_graph(
    input_bytes: int,
    layers: Sequence[tuple[float, int, int]],
    *,
    names: Sequence[str] | None = None,
) -> EdgeGraph:
    """A synthetic chain: each layer is ``(flops, param_bytes, out_bytes)``, values uint8 (so a
    value's bytes are its element count).

    Example:
      >>> g = chain_graph(1000, [(1e6, 0, 500), (2e6, 100, 10)])
      >>> [o.out_bytes for o in g.ops]
      [500, 10]
    """
    ops = []
    prev = "input"
    for i, layer in enumerate(layers):
        if len(layer) != 3:
            raise JaxCompressValueError(f"layers[{i}] must be (flops, param_bytes, out_bytes)")
        flops, pbytes, obytes = layer
        if flops < 0 or pbytes < 0 or obytes < 0:
            raise JaxCompressValueError(f"layers[{i}]={layer} must be non-negative")
        name = names[i] if names is not None else f"layer{i}"
        ops.append(
            Op(
                name=name,
                op="layer",
                inputs=(prev,),
                shape=(int(obytes),),
                dtype="uint8",
                flops=float(flops),
                param_bytes=int(pbytes),
            )
        )
        prev = name
    return EdgeGraph(
        input="input",
        input_shape=(int(input_bytes),),
        input_dtype="uint8",
        ops=tuple(ops),
        outputs=(prev,),
        weight_bytes=int(sum(layer[1] for layer in layers)),
    )


# ----------------------------------------------------------------------------------------------
# from an artifact


def _runtime(artifact_or_runtime, num_threads=None):
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime_mod

    if isinstance(artifact_or_runtime, _runtime_mod.Runtime):
        return artifact_or_runtime
    if isinstance(artifact_or_runtime, _artifact.Artifact):
        return _runtime_mod.Runtime(artifact_or_runtime, num_threads=num_threads)
    try:
        return _runtime_mod.load(artifact_or_runtime, num_threads=num_threads)
    except TypeError:
        raise JaxCompressTypeError(
            "artifact must be a path, a jaxcompress_kernels Artifact or Runtime, got "
            f"{type(artifact_or_runtime).__name__}"
        ) from None


class GraphExecutor:
    """Runs an artifact's graph op by op with the edge runtime, so it can stop and resume at a cut.

    ``run_prefix(x, cut)`` returns the environment after ops ``[0, cut)``; ``run_suffix(env, cut)``
    finishes it. Both use the runtime's own op implementations and weight kernels.
    """

    def __init__(self, artifact_or_runtime, *, num_threads=None):
        self.runtime = _runtime(artifact_or_runtime, num_threads)
        self.nodes = self.runtime.nodes
        self.input = self.runtime.graph["inputs"][0]
        self.outputs = tuple(self.runtime.graph["outputs"])

    def _step(self, env, i, b):
        self.runtime.run_nodes(env, i, i + 1, b)

    def run_prefix(self, x, cut: int) -> dict:
        x = np.ascontiguousarray(np.asarray(x, np.float32))
        return self.runtime.run_nodes(self.runtime.initial_env(x), 0, cut, x.shape[0])

    def run_suffix(self, env: dict, cut: int):
        b = env[self.input].shape[0] if self.input in env else None
        self.runtime.run_nodes(env, cut, len(self.nodes), b)
        outs = tuple(np.asarray(env[o]) for o in self.outputs)
        return outs[0] if len(outs) == 1 else outs


def graph_from_artifact(artifact, *, num_threads=None) -> EdgeGraph:
    """Builds the `EdgeGraph` of an artifact (a path, `Artifact` or `Runtime`) from the edge
    runtime's load-time plan.

    Shapes, dtypes, FLOPs and the kernel of every node are the plan's (the format's op specs and
    the kernel the runtime really chose), at batch 1 for symbolic-batch graphs (at the exported
    batch for a ``"static"``-batch artifact, whose costs are then per batch); parameter bytes are
    the stored bytes of each tensor (so a 4-bit weight reads 1/8 of its float32 bytes). Nothing
    is executed.
    """
    rt = _runtime(artifact, num_threads)
    art = rt.artifact
    tensors = art.tensors
    plan = rt.plan
    ops = []
    for node, rec in zip(rt.nodes, plan.nodes, strict=True):
        acts = tuple(r for r in node["in"] if isinstance(r, str) and r not in tensors)
        w = tensors.get(node.get("weight")) if node.get("weight") else None
        ops.append(
            Op(
                name=node["out"],
                op=node["op"],
                inputs=acts,
                shape=tuple(rec.shape),
                dtype=rec.dtype,
                flops=float(rec.flops),
                param_bytes=int(rec.weight_bytes),
                alias=rec.alias and len(acts) == 1,
                static=rec.static,
                weight=node.get("weight"),
                kernel=rec.kernel,
                groups=int(node.get("groups", 1)),
                encoding=w.encoding if w is not None else "",
                weight_elements=int(w.size) if w is not None else 0,
                weight_bits=_weight_bits(w),
            )
        )
    wbytes = sum(t.stored_bytes for t in tensors.values())
    return EdgeGraph(
        input=rt.graph["inputs"][0],
        input_shape=(plan.batch, *rt.input_shape),
        input_dtype="float32",
        ops=tuple(ops),
        outputs=tuple(rt.graph["outputs"]),
        weight_bytes=int(wbytes),
    )


def _weight_bits(w) -> int:
    """Bits per stored weight code: the encoding's ``bits`` attribute, else the dtype's width."""
    if w is None:
        return 0
    bits = w.attrs.get("bits") if isinstance(w.attrs, dict) else None
    if bits:
        return int(bits)
    return 8 * _ITEMSIZE.get(str(w.dtype), 4)
