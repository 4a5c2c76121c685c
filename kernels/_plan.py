"""The runtime's load-time plan: shapes, bounds, constant folding, fusion, kernels, one arena.

`build_plan` runs before any kernel executes. In order:

1. **Shapes and bounds.** Every node's output shape and dtype is inferred from the op specs
   (`jaxcompress_kernels.format.ops`) at the plan's batch size. Each node's output bytes, the
   running FLOPs per example and the decoded weight bytes are checked against `Limits` as they
   are computed, so a crafted graph (a chain of ``concatenate`` or ``pad``, a huge broadcast, a
   hundred large ``reduce_window_sum``) is refused with `ArtifactError` naming the node before
   anything large is allocated.
2. **Constant folding.** Nodes that read only tensors and literals (a reshaped bias) are
   evaluated once, here.
3. **Fusion.** ``linear``/``conv`` + per-channel bias ``add`` + ``max(., 0)`` (ReLU) or
   ``clamp(0, ., 6)`` / ``min(., 6)`` (ReLU6), and a ``reduce_window_max`` pooling that follows a
   conv, become one step. ``reshape``/``squeeze``/``expand_dims`` are views (no step, no copy).
4. **Arena.** Every remaining activation value gets an offset in one byte buffer (greedy by size
   over liveness intervals, 64-byte aligned); steps are closures bound to their views, so a run
   allocates nothing but its outputs.

The per-node records (`NodePlan`: shape, dtype, FLOPs, bytes moved, kernel, step) are what
`jaxcompress.edge` reads: there is no second copy of the op table or of the kernel choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from jaxcompress_kernels.errors import ArtifactError
from jaxcompress_kernels.format import ops as _ops

__all__ = ["Limits", "NodePlan", "Plan", "infer_graph"]

ALIGN = 64


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds an artifact's plan must respect (per example; sized for edge models).

    Attributes:
      max_activation_bytes: the activation arena plus folded constants.
      max_flops: FLOPs per example.
      max_weight_bytes: weights as the kernels hold them (decoded where a kernel needs it).
      max_nodes: graph nodes.
    """

    max_activation_bytes: int = 1 << 30
    max_flops: float = 1e11
    max_weight_bytes: int = 1 << 30
    max_nodes: int = 100_000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                from jaxcompress_kernels.errors import JaxCompressValueError

                raise JaxCompressValueError(f"limits.{f.name}={v!r} must be a positive number")


@dataclasses.dataclass
class NodePlan:
    """What the plan decided for one graph node.

    Attributes:
      index: node index in the graph.
      op: the op name.
      out: its output value's name.
      shape: output shape at the plan's batch size (batch axis included).
      dtype: output dtype.
      flops: FLOPs at the plan's batch size.
      bytes_in: bytes of activations read; bytes_out: bytes written (0 for views).
      weight: the weight tensor (``linear``/``conv``), else None.
      weight_bytes: stored bytes of the parameters it reads.
      kernel: the kernel that runs it (``"view"``, ``"folded at load"``, ``"fused into N"``, ...).
      step: index of the execution step that computes it (None when folded).
      static: depends on parameters/literals only (folded at load).
      alias: a view of its input (no bytes moved, no buffer).
    """

    index: int
    op: str
    out: str
    shape: tuple
    dtype: str
    flops: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    weight: str | None = None
    weight_bytes: int = 0
    kernel: str = ""
    step: int | None = None
    static: bool = False
    alias: bool = False


@dataclasses.dataclass
class Plan(Mapping):
    """The runtime's plan for one batch size.

    As a mapping: ``{weight name: kernel description}`` (what `Runtime.plan` has always been).

    Attributes:
      batch: the batch size the plan is for.
      nodes: one `NodePlan` per graph node.
      steps: ``[(first node index, label)]`` per execution step.
      arena_bytes: the activation arena.
      const_bytes: constants folded at load.
      weight_bytes: weights as the kernels hold them.
      flops: total FLOPs at this batch size.
      float_nodes: nodes of a full-integer graph that run in float32 (only with
        ``allow_float_nodes``; empty otherwise).
      activations: ``"float"`` (exact float activations) or ``"dynamic_int8"`` (the runtime's
        opt-in dynamic-range mode: nodes with integer weights quantize their input per call;
        their kernels are labelled ``dyn_*``).
    """

    batch: int
    nodes: list
    steps: list
    arena_bytes: int
    const_bytes: int
    weight_bytes: int
    flops: float
    kernels: dict
    float_nodes: list = dataclasses.field(default_factory=list)
    activations: str = "float"

    def __getitem__(self, key):
        return self.kernels[key]

    def __iter__(self):
        return iter(self.kernels)

    def __len__(self):
        return len(self.kernels)

    def __repr__(self) -> str:
        return (
            f"Plan(batch={self.batch}, steps={len(self.steps)}, arena_bytes={self.arena_bytes}, "
            f"weight_bytes={self.weight_bytes}, flops={self.flops:.4g}, kernels={self.kernels})"
        )

    def table(self) -> str:
        """A Markdown table of the plan (node, op, shape, kernel, FLOPs)."""
        rows = ["| node | op | shape | dtype | kernel | MFLOPs |", "|---:|---|---|---|---|---:|"]
        for n in self.nodes:
            rows.append(
                f"| {n.index} | {n.op} | {list(n.shape)} | {n.dtype} | {n.kernel} | "
                f"{n.flops / 1e6:.3f} |"
            )
        return "\n".join(rows)


def infer_graph(graph, tensors, batch: int, limits: Limits, *, path="artifact"):
    """Infers every node's output shape/dtype at `batch`, checking `limits` as it goes.

    Returns:
      ``(shapes, dtypes, static, records)``: dicts by value name, the set of values that depend
      only on tensors/literals, and one `NodePlan` per node (kernel not yet chosen).

    Raises:
      ArtifactError: a node whose inputs do not fit its op, or a bound exceeded (names the node).
    """
    nodes = graph["nodes"]
    if len(nodes) > limits.max_nodes:
        raise ArtifactError(f"{path}: {len(nodes)} graph nodes exceed limits.max_nodes")
    shapes: dict = {}
    dtypes: dict = {}
    for name, t in tensors.items():
        shapes[name], dtypes[name] = tuple(t.shape), t.dtype
    inp = graph["inputs"][0]
    shapes[inp] = (batch, *graph["input_shapes"][0])
    dtypes[inp] = "float32"
    static = set(tensors)
    recs = graph.get("quant") or {}
    qgraph = bool(recs) or any(n["op"] in _ops.QUANT_OPS for n in nodes)
    records = []
    flops = 0.0
    live_bytes = 0
    for i, node in enumerate(nodes):
        spec = _ops.OPS[node["op"]]
        ins = node["in"]
        in_shapes, in_dtypes, lits = [], [], []
        for r in ins:
            if isinstance(r, dict):
                in_shapes.append(())
                in_dtypes.append(r["dtype"])
                lits.append(True)
            else:
                in_shapes.append(shapes[r])
                in_dtypes.append(dtypes[r])
                lits.append(False)
        wshape = tensors[node["weight"]].shape if "weight" in node else None
        shape, dtype = _ops.infer(i, node, in_shapes, in_dtypes, lits, batch, wshape)
        if qgraph and (dtype == "int8") != (node["out"] in recs):
            raise ArtifactError(
                f"{path}: graph node {i} ({node['op']}) makes {dtype} value {node['out']!r} "
                + ("without a quantization record" if dtype == "int8" else "with an int8 record")
            )
        out_bytes = math.prod(shape) * _ops.ITEMSIZE[dtype]
        per_ex = out_bytes / max(batch, 1) if shape and shape[:1] == (batch,) else out_bytes
        if per_ex > limits.max_activation_bytes:
            raise ArtifactError(
                f"{path}: graph node {i} ({node['op']}) would produce {out_bytes} bytes "
                f"({shape} {dtype}), over limits.max_activation_bytes="
                f"{limits.max_activation_bytes}"
            )
        is_static = all(isinstance(r, dict) or r in static for r in ins)
        nnz = None
        if "weight" in node:
            e = tensors[node["weight"]]
            nnz = weight_nnz(e)
        f = _ops.node_flops(node, in_shapes, shape, weight_shape=wshape, weight_nnz=nnz)
        if not is_static:
            flops += f
            if flops > limits.max_flops * max(batch, 1):
                raise ArtifactError(
                    f"{path}: graph node {i} ({node['op']}) brings the FLOPs per example to "
                    f"{flops / max(batch, 1):.3g}, over limits.max_flops={limits.max_flops:.3g}"
                )
        else:
            static.add(node["out"])
            live_bytes += out_bytes
            if live_bytes > limits.max_activation_bytes:
                raise ArtifactError(
                    f"{path}: constants folded up to graph node {i} ({node['op']}) take "
                    f"{live_bytes} bytes, over limits.max_activation_bytes"
                )
        shapes[node["out"]] = shape
        dtypes[node["out"]] = dtype
        bytes_in = sum(
            math.prod(shapes[r]) * _ops.ITEMSIZE[dtypes[r]]
            for r in ins
            if isinstance(r, str) and r not in tensors
        )
        wb = sum(tensors[r].stored_bytes for r in ins if isinstance(r, str) and r in tensors)
        if "weight" in node:
            wb += tensors[node["weight"]].stored_bytes
        records.append(
            NodePlan(
                index=i,
                op=node["op"],
                out=node["out"],
                shape=shape,
                dtype=dtype,
                flops=f,
                bytes_in=bytes_in,
                bytes_out=0 if spec.kind == "alias" else out_bytes,
                weight=node.get("weight"),
                weight_bytes=wb,
                static=is_static,
                alias=spec.kind == "alias",
            )
        )
    return shapes, dtypes, static, records


_SPARSE_ENCODINGS = ("csr", "csr_codebook", "nm")


def weight_nnz(entry) -> int | None:
    """Nonzeros of a weight stored sparse (``csr``, ``csr_codebook``, ``nm``), else None."""
    if entry.encoding in ("csr", "csr_codebook"):
        return int(entry.parts["indices"].shape[0])
    if entry.encoding == "nm":
        k, n = entry.kn
        return n * (k // entry.attrs["m"]) * entry.attrs["n"]
    return None


def assign_arena(sizes: dict, live: dict) -> tuple[dict, int]:
    """Offsets for buffers ``{name: bytes}`` alive over ``live[name] = (first, last)`` step
    intervals (inclusive): two buffers whose intervals meet never overlap in memory. Greedy by
    size (largest first, lowest free offset).

    Returns:
      ``({name: offset}, total bytes)``.
    """
    order = sorted(sizes, key=lambda n: (-sizes[n], live[n][0], n))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets = {}
    total = 0
    for name in order:
        size = -(-sizes[name] // ALIGN) * ALIGN
        a, b = live[name]
        busy = sorted((o, e) for o, e, f, la in placed if not (la < a or b < f))
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, e)
        offsets[name] = off
        placed.append((off, off + size, a, b))
        total = max(total, off + size)
    return offsets, total
