"""The per-op cost model: op class x data type, with overheads, ceilings and decode costs.

Every op of an `EdgeGraph` gets an *op class* (`op_class`: ``conv``, ``dwconv``, ``linear``,
``pool``, ``elementwise``, ``move``, ``view``) and a *weight format* (`weight_format`:
``float32``, ``int8``, ``packed`` (sub-byte), ``sparse`` (CSR / N:M), ``codebook``). Its time on a
device with clock ``f``, fp32 peak ``P`` (FLOP/s), the class's int8/fp32 peak ratio ``rho`` and
bandwidth ``BW`` is::

    peak      = P * (rho if the op computes in int8 else 1)
    work      = F + 2 * a * out_elements                 (a: per-output cost in MACs, convs)
    compute   = engine * work / (peak * eff[op class] * (s if sparse else 1))
                + p * out_elements                        (p: host per-output time, convs)
    memory    = B / BW                                    (B: the roofline's bytes moved)
    stream    = weight_bytes * (c_w + k_f * (W + 1) / R) / f
                                  (linear weights, read once per inference, from flash: W the
                                   board's flash wait states at f, R its flash read width in bytes)
    decode    = weight_elements * c_d[format] / f         (unpacking packed / sparse / codebook)
    t         = (o + o_mac * [conv / linear]) * [op runs as its own step]
                + max(compute, memory) + stream + decode

Ops the runtime fuses into a neighbour's step (bias add, ReLU, the average's divide) cost nothing
of their own: their work is in the step's epilogue (``a`` above). With the *neutral* parameters
(``eff = 1``, ``engine = 1``, ``a = o = c_w = k_f = c_d = 0``) every op costs ``max(F / P, B / BW)``,
i.e. the plain roofline, which stays available as the labelled lower bound (`roofline_seconds`).

The parameters (`CostParams`) are per core class: calibrated classes read theirs from
``calibration.json`` (fitted on MLPerf Tiny v1.0 by ``benchmarks/calibrate_devices.py``), the
host measures its own (`calibrate_host`), every other class is the neutral roofline and is
labelled "uncalibrated lower bound".

Example:
  >>> from jaxcompress.edge import CostParams, chain_graph, DeviceProfile, estimate
  >>> dev = DeviceProfile(name="toy", description="", peak_flops=1e9, bandwidth=1e8,
  ...                     ram_bytes=None, flash_bytes=None, active_power_w=None, weights_in="ram")
  >>> g = chain_graph(100, [(1e6, 0, 100)])
  >>> estimate(g, dev, params=CostParams()).total_s      # neutral: the roofline, 1 ms
  0.001
  >>> estimate(g, dev, params=CostParams(op_overhead_s=1e-3)).total_s
  0.002
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json

from jaxcompress._core import JaxCompressValueError
from jaxcompress.edge._graph import EdgeGraph, Op

__all__ = [
    "class_efficiency",
    "OP_CLASSES",
    "WEIGHT_FORMATS",
    "CostParams",
    "OpCost",
    "op_class",
    "weight_format",
    "op_bytes",
    "op_cost",
    "roofline_seconds",
    "core_classes",
    "calibration",
    "HOST_FIXED_FEATURES",
    "HOST_UNIT_FEATURES",
    "kernel_family",
    "step_features",
]

OP_CLASSES = ("conv", "dwconv", "linear", "pool", "elementwise", "move", "view")
WEIGHT_FORMATS = ("float32", "int8", "packed", "sparse", "codebook")
MAC_CLASSES = ("conv", "dwconv", "linear")

# The host's per-step cost features (`step_features`): fixed costs counted once per executed
# step, and per-unit costs (FLOPs or elements) per kernel family of the runtime's plan.
HOST_FIXED_FEATURES = (
    "step",
    "mac",
    "mac:csr",
    "mac:nm",
    "mac:qmatmul",
    "mac:codebook",
    "mac:int8",
    "mac:int8conv",
    "mac:chain",
    "generic",
    "reduce",
    "broadcast",
    "move",
    "dot",
    "qop",
)
HOST_UNIT_FEATURES = (
    "conv_out",
    "flops:conv",
    "flops:dwconv",
    "flops:linear",
    "flops:chain",
    "flops:csr",
    "rows:csr",
    "bytes:weights",
    "flops:nm",
    "flops:qmatmul",
    "flops:codebook",
    "flops:int8",
    "flops:int8conv",
    "flops:pool",
    "flops:dot",
    "elems:ew",
    "elems:reduce",
    "elems:move",
)


@dataclasses.dataclass(frozen=True)
class CostParams:
    """Cost-model parameters of one core class (defaults: neutral, i.e. the plain roofline).

    Attributes:
      efficiency: ``{op class: fraction of the dtype's peak reached}`` (missing: 1.0).
      out_overhead_macs: per-output-element cost of conv / linear ops in MAC equivalents
        (requantization, loop set-up, store).
      op_overhead_s: fixed time per executed step (dispatch, kernel set-up).
      weight_stream_cycles_per_byte: cycles per weight byte streamed from flash, independent of
        the board (0: none).
      flash_stream_factor: multiplies the board's datasheet flash read cost
        (``DeviceProfile.flash_cycles_per_byte``, ``(wait states + 1) / read bytes``) for weight
        bytes streamed from flash; 1.0 is the datasheet's raw cost, 0 none.
      decode_cycles_per_weight: ``{weight format: cycles per decoded weight element}``.
      sparse_efficiency: multiplies the efficiency of ops with sparse weights (index chasing,
        no SIMD).
      engine: the inference engine the compute term is scaled for, and ``engine_factor`` its
        time relative to the class's reference engine.
      dtype: the data type compute runs in when the graph does not say (``"float32"``; the
        calibration projects the MLPerf float graphs with ``"int8"`` costs).
      seconds_per_output: time per output element of a conv / depthwise conv (the host's
        per-pixel loop and im2col cost, measured), independent of the efficiency.
      mac_op_overhead_s: extra fixed time of a step whose op is a conv / linear (kernel set-up:
        im2col, BLAS call), on top of ``op_overhead_s``.
      graph_overhead_s: fixed time per inference (the host runtime's input check, output copy).
      memory_ceiling: False when the measured efficiencies already include the memory system
        (the host), so no separate ``bytes / bandwidth`` ceiling applies.
      step_costs: ``{feature: seconds per unit}`` of the host's measured per-kernel-family costs
        (`step_features`: fixed costs per executed step and per FLOP / element of each kernel
        family the runtime's plan runs); when given, an op costs ``sum_f step_costs[f] *
        features[f]`` and the efficiency terms above are not used.
    """

    efficiency: dict = dataclasses.field(default_factory=dict)
    out_overhead_macs: float = 0.0
    op_overhead_s: float = 0.0
    weight_stream_cycles_per_byte: float = 0.0
    flash_stream_factor: float = 0.0
    decode_cycles_per_weight: dict = dataclasses.field(default_factory=dict)
    sparse_efficiency: float = 1.0
    engine: str = "reference"
    engine_factor: float = 1.0
    dtype: str = "float32"
    graph_overhead_s: float = 0.0
    memory_ceiling: bool = True
    mac_op_overhead_s: float = 0.0
    seconds_per_output: float = 0.0
    step_costs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        known = HOST_FIXED_FEATURES + HOST_UNIT_FEATURES
        for k, v in self.step_costs.items():
            if k not in known:
                raise JaxCompressValueError(f"step_costs: unknown feature {k!r}; {known}")
            _nonneg(f"step_costs[{k!r}]", v)
        for k, v in self.efficiency.items():
            if k not in OP_CLASSES:
                raise JaxCompressValueError(f"efficiency: unknown op class {k!r}; {OP_CLASSES}")
            _positive(f"efficiency[{k!r}]", v)
        for k, v in self.decode_cycles_per_weight.items():
            if k not in WEIGHT_FORMATS:
                raise JaxCompressValueError(
                    f"decode_cycles_per_weight: unknown format {k!r}; {WEIGHT_FORMATS}"
                )
            _nonneg(f"decode_cycles_per_weight[{k!r}]", v)
        for f in (
            "out_overhead_macs",
            "op_overhead_s",
            "weight_stream_cycles_per_byte",
            "flash_stream_factor",
            "graph_overhead_s",
            "mac_op_overhead_s",
            "seconds_per_output",
        ):
            _nonneg(f, getattr(self, f))
        _positive("sparse_efficiency", self.sparse_efficiency)
        _positive("engine_factor", self.engine_factor)
        if self.dtype not in ("float32", "int8"):
            raise JaxCompressValueError(f"dtype={self.dtype!r} must be 'float32' or 'int8'")

    @property
    def neutral(self) -> bool:
        return (
            all(v == 1.0 for v in self.efficiency.values())
            and self.out_overhead_macs == 0
            and self.op_overhead_s == 0
            and self.graph_overhead_s == 0
            and self.mac_op_overhead_s == 0
            and self.seconds_per_output == 0
            and self.memory_ceiling
            and self.weight_stream_cycles_per_byte == 0
            and self.flash_stream_factor == 0
            and all(v == 0 for v in self.decode_cycles_per_weight.values())
            and self.engine_factor == 1.0
            and not any(self.step_costs.values())
        )


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise JaxCompressValueError(f"{name}={v!r} must be a positive number")


def _nonneg(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise JaxCompressValueError(f"{name}={v!r} must be a number >= 0")


@dataclasses.dataclass(frozen=True)
class OpCost:
    """The cost of one op (seconds) and its parts; ``lower_bound_s`` is the plain roofline."""

    name: str
    op: str
    op_class: str
    weight_format: str
    flops: float
    bytes: int
    compute_s: float
    memory_s: float
    overhead_s: float
    stream_s: float
    decode_s: float
    seconds: float
    lower_bound_s: float

    @property
    def bound(self) -> str:
        """What dominates: ``compute``, ``memory``, ``overhead``, ``stream`` or ``decode``."""
        parts = {
            "compute": self.compute_s,
            "memory": self.memory_s,
            "overhead": self.overhead_s,
            "stream": self.stream_s,
            "decode": self.decode_s,
        }
        return max(parts, key=parts.get)


def op_class(o: Op) -> str:
    """The op class of `o` (from the format's op specs; ops not in the format: ``linear``)."""
    if o.alias or o.static:
        return "view"
    if o.op in ("conv", "qconv2d"):  # float and full-integer (int8) forms
        return "dwconv" if o.groups > 1 else "conv"
    if o.op in ("linear", "dot_general", "qlinear"):
        return "linear"
    if o.op.startswith("reduce") or o.op in ("argmax", "argmin"):
        return "pool"
    from jaxcompress_kernels.format import ops as _ops

    spec = _ops.OPS.get(o.op)
    if spec is None:  # synthetic graphs (chain_graph's "layer")
        return "linear"
    return {"elementwise": "elementwise", "move": "move", "alias": "view"}.get(spec.kind, "pool")


def weight_format(o: Op) -> str:
    """The format the weight of `o` is stored in (``float32`` for ops without a weight)."""
    enc = o.encoding
    if not enc or enc == "dense":
        return "float32" if o.weight_bits in (0, 32) else "int8"
    if enc in ("csr", "nm", "csr_codebook"):
        return "sparse"
    if enc == "codebook":
        return "codebook"
    if enc == "packed":
        return "int8" if o.weight_bits >= 8 else "packed"
    return "float32"


def _fused(o: Op) -> bool:
    return o.kernel.startswith("fused into")


def op_bytes(graph: EdgeGraph, i: int) -> int:
    """Bytes op `i` moves: activation inputs + output + parameters (0 for alias ops)."""
    o = graph.ops[i]
    if o.alias:
        return 0
    return int(sum(graph.nbytes(r) for r in o.inputs) + o.out_bytes + o.param_bytes)


def roofline_seconds(
    graph: EdgeGraph, i: int, peak_flops: float, bandwidth: float, int8_ratio: float = 1.0
) -> float:
    """The plain roofline ``max(F / peak, B / bandwidth)`` of op `i` (0 for static / alias);
    ``peak`` is the fp32 peak, times `int8_ratio` for an op whose values are int8 (a
    full-integer graph), so the bound stays a lower bound for integer ops."""
    o = graph.ops[i]
    if o.static:
        return 0.0
    peak = peak_flops * (int8_ratio if o.dtype == "int8" else 1.0)
    return max(float(o.flops) / peak, op_bytes(graph, i) / bandwidth)


def kernel_family(o: Op, head: Op | None = None) -> str:
    """The kernel family that runs a conv / linear op, read from the plan's kernel label:
    ``csr`` (``spmm_csr``), ``nm`` (``spmm_nm``), ``qmatmul`` (packed codes), ``codebook``
    (``codebook_matmul`` / ``lut_matmul``), ``int8`` (the full-integer ``qgemm``: linear and 1x1
    conv), ``int8conv`` (``qconv`` im2col + GEMM, ``qdepthwise``), ``chain`` (float32 layers fused into one ``mlp_chain`` step) or
    ``float`` (BLAS, the register GEMV, the direct conv, or a compressed weight decoded to float32
    at load). An op fused into a step has the family of the step's first op, `head`. Without a
    label (a synthetic graph): from the stored encoding, as the runtime's own kernel for it."""
    k = o.kernel
    if k.startswith("fused into") and head is not None:
        return kernel_family(head)
    if k.startswith("fused into") or not k:
        if o.op == "qlinear":
            return "int8"
        if o.op == "qconv2d":
            return "int8conv"
        if k:
            return "float"
        fmt = weight_format(o)
        return {"sparse": "nm" if o.encoding == "nm" else "csr", "packed": "qmatmul"}.get(
            fmt, "codebook" if fmt == "codebook" else "float"
        )
    if "spmm_csr" in k:
        return "csr"
    if "spmm_nm" in k:
        return "nm"
    if k.startswith("qmatmul"):
        return "qmatmul"
    if "codebook_matmul" in k or "lut_matmul" in k:
        return "codebook"
    if k.startswith(("qgemm", "qmlp_chain")):  # an int8 GEMM, or a chain of them in one step
        return "int8"
    if k.startswith(("qconv", "qdepthwise")):
        return "int8conv"
    if k.startswith("mlp_chain"):
        return "chain"
    return "float"


def _step_head(graph: EdgeGraph, i: int) -> Op | None:
    """The first op of the step op `i` is fused into (the nearest earlier op that runs a step)."""
    for j in range(i - 1, -1, -1):
        o = graph.ops[j]
        if not (o.static or o.alias or _fused(o) or o.kernel in ("view", "folded at load")):
            return o
    return None


def _dense_flops(o: Op) -> float:
    """FLOPs of op `o` with its weight dense (a compressed weight run by a dense kernel)."""
    n = o.shape[-1] if o.shape else 1
    if o.weight_elements and n:
        return 2.0 * (o.out_elements / n) * o.weight_elements
    return float(o.flops)


@functools.cache
def _ufunc_ops() -> frozenset:
    from jaxcompress_kernels import runtime as _rt

    return frozenset(_rt._UFUNCS) - _rt._CMP


def step_features(graph: EdgeGraph, i: int) -> dict:
    """The host cost features of op `i`: what the runtime's plan runs for it, per kernel family.

    Fixed features are 1 for the op that starts an executed step, one per kind of step: ``mac``
    (a conv / linear step with a float32 kernel) or ``mac:<family>`` (a compressed or integer
    kernel's call and set-up: argument checks, im2col, scales), ``qop`` (a full-integer non-MAC
    step: quantize, qadd, pools), ``step`` (a NumPy step: an in-place ufunc or a named
    elementwise / pooling kernel) plus, for the generic NumPy path, ``generic`` (an elementwise op through the generic NumPy
    path rather than an in-place ufunc), ``reduce``, ``broadcast``, ``move``, ``dot``
    (``dot_general``). The run loop's own time per executed step is `CostParams.op_overhead_s`,
    added by the cost model to every op that starts a step. Unit
    features: ``flops:<family>`` of a conv / linear by `kernel_family` (``flops:conv`` /
    ``flops:dwconv`` / ``flops:linear`` for float32 kernels, dense FLOPs when a compressed
    weight was decoded; ``flops:csr`` / ``flops:nm`` the nonzero FLOPs; ``flops:qmatmul`` /
    ``flops:codebook`` the dense FLOPs of the packed kernels; ``flops:int8`` /
    ``flops:int8conv``; ``rows:csr``
    the rows of W the CSR kernel walks, M x K; ``bytes:weights`` the weight bytes the kernel
    reads, float32 when decoded), ``conv_out``
    (output elements of a float32 or CSR conv), ``flops:pool``, ``flops:dot``, ``elems:ew`` / ``elems:reduce`` /
    ``elems:move`` (elements written / read). Views, folded constants and epilogues fused into
    a conv / linear step have none; a linear layer fused into an ``mlp_chain`` step keeps its
    FLOPs and no fixed cost.
    """
    o = graph.ops[i]
    cls = op_class(o)
    out: dict = {}
    if o.static or cls == "view":
        return out
    fused = _fused(o)
    if fused and cls not in MAC_CLASSES:
        return out
    if o.op == "dot_general":  # a generic NumPy matmul (attention), not a weight kernel
        out["step"] = 1.0
        out["dot"] = 1.0
        out["flops:dot"] = float(o.flops)
        return out
    if cls in MAC_CLASSES:
        fam = kernel_family(o, _step_head(graph, i) if fused else None)
        if not fused:
            out["mac" if fam == "float" else f"mac:{fam}"] = 1.0
        if fam == "float":
            out[f"flops:{cls}"] = _dense_flops(o)
        elif fam in ("qmatmul", "codebook", "chain"):
            out[f"flops:{fam}"] = _dense_flops(o)
        else:
            out[f"flops:{fam}"] = float(o.flops)
        # the weight's bytes as the kernel reads them (float32 when decoded at load): a batch-1
        # layer whose weight leaves the caches is bound by them
        dense_kernel = fam in ("float", "chain")
        out["bytes:weights"] = float(4 * o.weight_elements if dense_kernel else o.param_bytes)
        if fam == "csr":  # the CSR kernel walks every row of W (K) per input row (M)
            n = o.shape[-1] if o.shape else 1
            out["rows:csr"] = (o.out_elements / max(n, 1)) * (o.weight_elements / max(n, 1))
        if cls in ("conv", "dwconv") and fam not in ("int8", "int8conv"):
            # float32 convs: the direct kernel's / im2col's per-output cost (the integer conv
            # kernels' is in their own per-FLOP rate)
            out["conv_out"] = float(o.out_elements)
        return out
    from jaxcompress_kernels.format import ops as _ops

    out["step"] = 1.0
    if o.op in _ops.QUANT_OPS:
        del out["step"]
        out["qop"] = 1.0
        if cls == "pool":
            out["flops:pool"] = float(o.flops)
        else:
            out["elems:ew"] = float(o.out_elements)
        return out
    generic = o.kernel in ("", o.op)  # the plan labels a generic NumPy step by its op name
    if cls == "pool":
        if generic and not o.op.startswith("reduce_window"):
            out["reduce"] = 1.0
            out["elems:reduce"] = float(o.flops)
        else:
            out["flops:pool"] = float(o.flops)
    elif cls == "move":
        out["broadcast" if o.op == "broadcast_in_dim" else "move"] = 1.0
        out["elems:move"] = float(o.out_elements)
    else:
        if generic and o.op not in _ufunc_ops():
            out["generic"] = 1.0
        out["elems:ew"] = float(o.out_elements)
    return out


def _host_cost(graph: EdgeGraph, i: int, params: CostParams, lower: float) -> OpCost:
    o = graph.ops[i]
    feats = step_features(graph, i)
    c = params.step_costs
    fixed = sum(c.get(f, 0.0) * v for f, v in feats.items() if f in HOST_FIXED_FEATURES)
    if feats and not _fused(o):  # the run loop's time per executed step
        fixed += params.op_overhead_s
    work = sum(c.get(f, 0.0) * v for f, v in feats.items() if f in HOST_UNIT_FEATURES)
    nbytes = 0 if o.static or o.alias else op_bytes(graph, i)
    return OpCost(
        o.name,
        o.op,
        op_class(o),
        weight_format(o),
        float(o.flops),
        nbytes,
        work,
        0.0,
        fixed,
        0.0,
        0.0,
        fixed + work,
        lower,
    )


def op_cost(
    graph: EdgeGraph,
    i: int,
    *,
    peak_flops: float,
    bandwidth: float,
    clock_hz: float | None,
    int8_ratio: float,
    params: CostParams,
    flash_cycles_per_byte: float | None = None,
) -> OpCost:
    """The cost of op `i` of `graph` (see the module docstring for the formula).

    Args:
      graph: the graph.
      i: op index.
      peak_flops: fp32 peak of the device (FLOP/s).
      bandwidth: memory bandwidth (bytes/s).
      clock_hz: core clock (needed when `params` has per-cycle costs).
      int8_ratio: the class's int8 ops per cycle over fp32 FLOPs per cycle.
      params: the class's `CostParams`.
      flash_cycles_per_byte: the board's datasheet flash read cost (cycles per byte), or None
        (unknown: no flash term).
    """
    o = graph.ops[i]
    cls, fmt = op_class(o), weight_format(o)
    lower = roofline_seconds(graph, i, peak_flops, bandwidth, int8_ratio)
    if params.step_costs:  # the host: its measured per-kernel-family costs
        return _host_cost(graph, i, params, lower)
    if o.static or cls == "view":
        b = 0 if o.static else op_bytes(graph, i)
        return OpCost(
            o.name, o.op, cls, fmt, 0.0, b, 0.0, b / bandwidth, 0, 0, 0, b / bandwidth, lower
        )
    flops, nbytes = float(o.flops), op_bytes(graph, i)
    if _fused(o) and cls not in MAC_CLASSES and not params.neutral:
        # a fused epilogue (bias, ReLU, divide) is in its step's cost (out_overhead_macs); linear
        # layers fused into one chain step still cost their own MACs
        return OpCost(o.name, o.op, cls, fmt, flops, nbytes, 0, 0, 0, 0, 0, 0.0, lower)
    # full-integer graphs (int8 values), and float graphs costed as int8 compute
    dtype = "int8" if params.dtype == "int8" or o.dtype == "int8" else "float32"
    wbytes = o.param_bytes
    if dtype == "int8" and o.dtype == "float32":
        # the float graph priced as its int8 twin: 1-byte activations, 1-byte dense weights
        act = nbytes - o.param_bytes
        if o.weight_elements and fmt == "float32":
            wbytes = o.weight_elements
        nbytes = act // 4 + wbytes
    peak = peak_flops * (int8_ratio if dtype == "int8" else 1.0)
    eff = params.efficiency.get(cls, 1.0) * (params.sparse_efficiency if fmt == "sparse" else 1.0)
    work = flops
    if cls in ("conv", "dwconv"):
        work += 2.0 * params.out_overhead_macs * o.out_elements
    compute = params.engine_factor * work / (peak * eff)
    if cls in ("conv", "dwconv"):
        compute += params.seconds_per_output * o.out_elements
    memory = nbytes / bandwidth if params.memory_ceiling else 0.0
    flash_cpb = params.weight_stream_cycles_per_byte + params.flash_stream_factor * (
        flash_cycles_per_byte or 0.0
    )
    per_cycle = flash_cpb or any(params.decode_cycles_per_weight.values())
    if per_cycle and not clock_hz:
        raise JaxCompressValueError(
            "this cost model has per-cycle costs: the profile needs a clock_hz"
        )
    # weights read once per example (linear layers at batch 1) stream from flash, each byte
    # paying the flash's wait states; conv weights are reused over the output positions and stay
    # in the flash accelerator / cache
    stream = 0.0
    if cls == "linear" and flash_cpb:
        stream = wbytes * flash_cpb / clock_hz
    decode = 0.0
    if o.weight_elements and fmt != "float32" and per_cycle:
        # int8 weights feeding an int8 kernel need no decoding
        if not (fmt == "int8" and dtype == "int8"):
            decode = o.weight_elements * params.decode_cycles_per_weight.get(fmt, 0.0) / clock_hz
    overhead = 0.0  # once per executed step
    if not _fused(o):
        overhead = params.op_overhead_s + (params.mac_op_overhead_s if cls in MAC_CLASSES else 0)
    seconds = overhead + max(compute, memory) + stream + decode
    return OpCost(
        o.name,
        o.op,
        cls,
        fmt,
        flops,
        nbytes,
        compute,
        memory,
        overhead,
        stream,
        decode,
        seconds,
        lower,
    )


@functools.cache
def core_classes() -> dict:
    """``{core class: {fp32_flops_per_cycle, int8_ops_per_cycle, bus_bytes_per_cycle,
    linear_mac_cost_ratio, weights_in, description, sources}}`` from ``core_classes.json``."""
    text = importlib.resources.files("jaxcompress.edge").joinpath("core_classes.json").read_text()
    data = json.loads(text)
    out = {}
    for name, spec in data["classes"].items():
        rec = {"description": spec["description"], "weights_in": spec["weights_in"], "sources": {}}
        for f in ("fp32_flops_per_cycle", "int8_ops_per_cycle", "bus_bytes_per_cycle"):
            rec[f] = float(spec[f]["value"])
            rec["sources"][f] = spec[f]["source"]
        ratio = spec.get("linear_mac_cost_ratio", {"value": 1.0, "source": "default (1)"})
        rec["linear_mac_cost_ratio"] = float(ratio["value"])
        rec["sources"]["linear_mac_cost_ratio"] = ratio["source"]
        out[name] = rec
    return out


def class_efficiency(core_class: str, efficiency: float) -> dict:
    """``{op class: efficiency}`` of a calibrated class from its fitted (conv) int8 efficiency:
    linear layers divide it by the class's ``linear_mac_cost_ratio`` (``core_classes.json``)."""
    ratio = core_classes()[core_class]["linear_mac_cost_ratio"]
    eff = {c: efficiency for c in ("conv", "dwconv", "pool", "elementwise", "move")}
    eff["linear"] = efficiency / ratio
    return eff


@functools.cache
def calibration() -> dict:
    """The fitted per-class parameters (``calibration.json``), or ``{}`` when absent."""
    res = importlib.resources.files("jaxcompress.edge").joinpath("calibration.json")
    if not res.is_file():
        return {}
    return json.loads(res.read_text())
