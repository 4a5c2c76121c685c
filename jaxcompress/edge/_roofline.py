"""Projected latency of a graph on a device profile: the calibrated cost model and its lower bound.

`project` prices every op with the cost model of `jaxcompress.edge._costmodel` (op class x data
type, per-op overhead, compute and bandwidth ceilings, flash streaming and decode costs) using the
parameters of the profile's core class, and keeps, beside it, the plain roofline::

    lower_bound = sum_i max(F_i / peak_flops, B_i / bandwidth)

(``B_i``: activation bytes read + output bytes written + parameter bytes in their stored encoding;
alias ops move nothing). Every `Projection` carries its calibration ``status``: how far to trust
it ("calibrated: median |error| X% ..." or "uncalibrated lower bound"), and ``notes`` saying what
dominates where a compressed weight makes an op slower than its dense twin (decode, sparse index
chasing). The energy estimate is ``total_s * active_power_w``.

Example:
  >>> from jaxcompress.edge import DeviceProfile, chain_graph, project
  >>> dev = DeviceProfile(name="toy", description="", peak_flops=1e9, bandwidth=1e8,
  ...                     ram_bytes=None, flash_bytes=None, active_power_w=1.0, weights_in="ram")
  >>> project(chain_graph(100, [(1e6, 0, 100)]), dev).total_s   # max(1e6/1e9, 200/1e8) = 1 ms
  0.001
"""

from __future__ import annotations

import dataclasses

from jaxcompress._core import JaxCompressValueError
from jaxcompress.edge._costmodel import (
    CostParams,
    calibration,
    class_efficiency,
    core_classes,
    op_bytes,
    op_cost,
)
from jaxcompress.edge._graph import EdgeGraph
from jaxcompress.edge._profiles import DeviceProfile, get_profile

__all__ = [
    "OpProjection",
    "Projection",
    "project",
    "op_bytes",  # defined in _costmodel (which needs it; it never imports this module)
    "cost_params",
    "calibration_status",
    "UNCALIBRATED",
]

LABEL = "projected"
UNCALIBRATED = "uncalibrated lower bound (plain roofline: every op at peak FLOP/s or bandwidth)"


@dataclasses.dataclass(frozen=True)
class OpProjection:
    """One op's projected time and its parts (seconds); ``lower_bound_s`` is its roofline."""

    name: str
    op: str
    flops: float
    bytes: int
    compute_s: float
    memory_s: float
    seconds: float
    bound: str  # "compute" | "memory" | "overhead" | "stream" | "decode"
    op_class: str = ""
    weight_format: str = ""
    overhead_s: float = 0.0
    stream_s: float = 0.0
    decode_s: float = 0.0
    lower_bound_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Projection:
    """A projection (``label`` is always ``"projected"``).

    Attributes:
      device: profile name.
      ops: one `OpProjection` per op.
      total_s: projected latency for one example (the cost model).
      energy_j: ``total_s * active_power_w`` (an estimate), or None without a power figure.
      lower_bound_s: the plain roofline (a lower bound of real latency).
      status: how far to trust `total_s` (the profile's calibration status).
      calibrated: True when `total_s` comes from parameters fitted on measurements.
      engine: the inference engine the projection is for (calibrated MCU classes).
      notes: why some ops are projected slower than their dense form (decode / sparse costs).
      label: ``"projected"``.
    """

    device: str
    ops: tuple[OpProjection, ...]
    total_s: float
    energy_j: float | None
    lower_bound_s: float = 0.0
    status: str = UNCALIBRATED
    calibrated: bool = False
    engine: str = ""
    notes: tuple[str, ...] = ()
    graph_overhead_s: float = 0.0
    label: str = LABEL

    @property
    def per_op_seconds(self) -> list[float]:
        return [o.seconds for o in self.ops]

    def by_op_type(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.ops:
            out[o.op] = out.get(o.op, 0.0) + o.seconds
        return out

    def by_part(self) -> dict[str, float]:
        """Seconds by part: compute/memory (the max of the two), overhead, stream, decode."""
        out = {
            "compute_or_memory": 0.0,
            "overhead": self.graph_overhead_s,
            "stream": 0.0,
            "decode": 0.0,
        }
        for o in self.ops:
            out["overhead"] += o.overhead_s
            out["stream"] += o.stream_s
            out["decode"] += o.decode_s
            out["compute_or_memory"] += o.seconds - o.overhead_s - o.stream_s - o.decode_s
        return out

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "total_s": self.total_s,
            "lower_bound_s": self.lower_bound_s,
            "status": self.status,
            "calibrated": self.calibrated,
            "engine": self.engine,
            "notes": list(self.notes),
            "energy_j": self.energy_j,
            "energy_label": "estimate",
            "by_op_type": self.by_op_type(),
            "by_part": self.by_part(),
        }


def _class_record(core_class: str | None) -> dict | None:
    cal = calibration()
    if core_class is None or not cal:
        return None
    return cal.get("classes", {}).get(core_class)


def calibration_status(profile, *, dtype: str = "float32") -> tuple[bool, str]:
    """``(calibrated, status text)`` of a profile: how far to trust its projections.

    Args:
      profile: a name or `DeviceProfile`.
      dtype: the compute type of the graph being projected (``float32`` or ``int8``).
    """
    p = get_profile(profile)
    if p.cost is not None:
        note = p.sources.get("cost", "measured on this machine")
        return True, f"calibrated by measurement on this host: {note}"
    rec = _class_record(p.core_class)
    if rec is None:
        return False, UNCALIBRATED
    cal = calibration()
    text = (
        f"calibrated: median |error| {100 * rec['lomo_median_abs_error']:.0f}% "
        f"(max {100 * rec['lomo_max_abs_error']:.0f}%) leave-one-model-out on "
        f"{rec['n_measurements']} published measurements of this core class ({p.core_class}; "
        f"MLPerf Tiny v1.0 closed, int8, {cal.get('reference_engine', 'reference engine')})"
    )
    if dtype != "int8":
        text += "; float32 cost scaled by the class's int8/fp32 peak ratio (not validated)"
    return True, text


def cost_params(profile, *, engine: str | None = None, dtype: str | None = None) -> CostParams:
    """The `CostParams` that apply to `profile` (neutral for an uncalibrated class).

    Args:
      profile: a name or `DeviceProfile`.
      engine: for calibrated MCU classes, an engine of ``calibration.json``'s ``engines``
        (default: the reference engine).
      dtype: ``"int8"`` to cost compute in int8 (the MLPerf Tiny calibration projects the float
        graphs so), default float32 (int8 where the graph's values are int8).

    Raises:
      JaxCompressValueError: unknown engine.
    """
    p = get_profile(profile)
    if p.cost is not None:
        base = p.cost
        return dataclasses.replace(base, dtype=dtype) if dtype else base
    rec = _class_record(p.core_class)
    if rec is None:
        return CostParams(dtype=dtype or "float32")
    cal = calibration()
    engines = cal.get("engines", {})
    name = engine or cal.get("reference_engine", "reference")
    if engine is not None and engine not in engines:
        raise JaxCompressValueError(f"unknown engine {engine!r}; known: {', '.join(engines)}")
    shared = cal.get("shared", {})
    return CostParams(
        efficiency=class_efficiency(p.core_class, float(rec["int8_efficiency"])),
        out_overhead_macs=float(shared.get("out_overhead_macs", 0.0)),
        op_overhead_s=0.0,
        weight_stream_cycles_per_byte=float(shared.get("weight_stream_cycles_per_byte", 0.0)),
        flash_stream_factor=float(shared.get("flash_stream_factor", 0.0)),
        decode_cycles_per_weight=dict(cal.get("decode_cycles_per_weight", {})),
        sparse_efficiency=float(cal.get("sparse_efficiency", 1.0)),
        engine=name,
        engine_factor=float(engines.get(name, 1.0)),
        dtype=dtype or "float32",
    )


def _int8_ratio(p: DeviceProfile) -> float:
    if p.core_class is None:
        return 1.0
    c = core_classes()[p.core_class]
    return c["int8_ops_per_cycle"] / c["fp32_flops_per_cycle"]


def _notes(rows: list[OpProjection]) -> tuple[str, ...]:
    out = []
    for r in rows:
        extra = r.decode_s + (r.compute_s - r.lower_bound_s if r.weight_format == "sparse" else 0)
        if r.weight_format in ("packed", "codebook", "int8") and r.decode_s > 0:
            out.append(
                f"{r.name} ({r.op}, {r.weight_format} weights): decoding the weights costs "
                f"{1e3 * r.decode_s:.4g} ms of its {1e3 * r.seconds:.4g} ms"
            )
        elif r.weight_format == "sparse" and extra > 0 and r.seconds > 0:
            out.append(
                f"{r.name} ({r.op}, sparse weights): index decoding and the loss of SIMD "
                f"(sparse efficiency) cost {1e3 * extra:.4g} ms of its {1e3 * r.seconds:.4g} ms; "
                "a sparse op is slower than its dense form unless enough weights are zero"
            )
    return tuple(out)


def project(
    graph: EdgeGraph,
    profile,
    *,
    params: CostParams | None = None,
    engine: str | None = None,
    dtype: str | None = None,
) -> Projection:
    """Projects `graph`'s latency and energy on `profile` (a name or `DeviceProfile`).

    Args:
      graph: the `EdgeGraph`.
      profile: a profile name or `DeviceProfile`.
      params: explicit `CostParams` (default: `cost_params(profile, engine=..., dtype=...)`).
      engine, dtype: see `cost_params`.

    Returns:
      A `Projection` (``label == "projected"``) with the cost-model total, the roofline
      ``lower_bound_s``, the calibration ``status`` and ``notes`` on decode-dominated ops.
    """
    p = get_profile(profile)
    cp = params if params is not None else cost_params(p, engine=engine, dtype=dtype)
    rows = []
    for i in range(len(graph.ops)):
        c = op_cost(
            graph,
            i,
            peak_flops=p.peak_flops,
            bandwidth=p.bandwidth,
            clock_hz=p.clock_hz,
            int8_ratio=_int8_ratio(p),
            params=cp,
            flash_cycles_per_byte=p.flash_cycles_per_byte if p.weights_in == "flash" else None,
        )
        rows.append(
            OpProjection(
                name=c.name,
                op=c.op,
                flops=c.flops,
                bytes=c.bytes,
                compute_s=c.compute_s,
                memory_s=c.memory_s,
                seconds=c.seconds,
                bound=c.bound
                if not cp.neutral
                else ("compute" if c.compute_s >= c.memory_s else "memory"),
                op_class=c.op_class,
                weight_format=c.weight_format,
                overhead_s=c.overhead_s,
                stream_s=c.stream_s,
                decode_s=c.decode_s,
                lower_bound_s=c.lower_bound_s,
            )
        )
    total = float(sum(r.seconds for r in rows)) + cp.graph_overhead_s
    lower = float(sum(r.lower_bound_s for r in rows))
    energy = None if p.active_power_w is None else total * p.active_power_w
    if params is not None:
        calibrated, status = (False, UNCALIBRATED) if cp.neutral else (False, "explicit parameters")
    else:
        calibrated, status = calibration_status(p, dtype=cp.dtype)
    return Projection(
        device=p.name,
        ops=tuple(rows),
        total_s=total,
        energy_j=energy,
        lower_bound_s=lower,
        status=status,
        calibrated=calibrated,
        engine=cp.engine if calibrated and p.cost is None else "",
        notes=_notes(rows),
        graph_overhead_s=cp.graph_overhead_s,
    )
