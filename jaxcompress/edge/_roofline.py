"""Per-op roofline projection of latency on a device profile. Always *projected*, never measured.

For op ``i`` with ``F_i`` FLOPs and ``B_i`` bytes moved (activation bytes read + output bytes
written + parameter bytes read in their stored encoding; alias ops move nothing)::

    t_i = max(F_i / peak_flops, B_i / bandwidth)          total = sum_i t_i

and the energy estimate is ``total * active_power_w``. The projection assumes every op reaches the
device's peak (compute-bound) or its bandwidth (memory-bound), so it is a lower bound of real
latency, good for comparing models and devices, not a promise. It does not model the extra work of
decoding packed weights on the device.

Example:
  >>> from jaxcompress.edge import DeviceProfile, chain_graph, project
  >>> dev = DeviceProfile(name="toy", description="", peak_flops=1e9, bandwidth=1e8,
  ...                     ram_bytes=None, flash_bytes=None, active_power_w=1.0, weights_in="ram")
  >>> project(chain_graph(100, [(1e6, 0, 100)]), dev).total_s   # max(1e6/1e9, 200/1e8) = 1 ms
  0.001
"""

from __future__ import annotations

import dataclasses

from jaxcompress.edge._graph import EdgeGraph
from jaxcompress.edge._profiles import get_profile

__all__ = ["OpProjection", "Projection", "project", "op_bytes"]

LABEL = "projected"


def op_bytes(graph: EdgeGraph, i: int) -> int:
    """Bytes op `i` moves: activation inputs + output + parameters (0 for alias ops)."""
    o = graph.ops[i]
    if o.alias:
        return 0
    return int(sum(graph.nbytes(r) for r in o.inputs) + o.out_bytes + o.param_bytes)


@dataclasses.dataclass(frozen=True)
class OpProjection:
    name: str
    op: str
    flops: float
    bytes: int
    compute_s: float
    memory_s: float
    seconds: float
    bound: str  # "compute" | "memory"


@dataclasses.dataclass(frozen=True)
class Projection:
    """A roofline projection (``label`` is always ``"projected"``).

    Attributes:
      device: profile name.
      ops: one `OpProjection` per op.
      total_s: projected latency for one example.
      energy_j: ``total_s * active_power_w`` (an estimate), or None without a power figure.
      label: ``"projected"``.
    """

    device: str
    ops: tuple[OpProjection, ...]
    total_s: float
    energy_j: float | None
    label: str = LABEL

    @property
    def per_op_seconds(self) -> list[float]:
        return [o.seconds for o in self.ops]

    def by_op_type(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.ops:
            out[o.op] = out.get(o.op, 0.0) + o.seconds
        return out


def project(graph: EdgeGraph, profile) -> Projection:
    """Projects `graph`'s latency and energy on `profile` (a name or `DeviceProfile`).

    Returns:
      A `Projection`, labelled ``"projected"``.
    """
    p = get_profile(profile)
    rows = []
    for i, o in enumerate(graph.ops):
        if o.static:  # folded into constants on a device
            b, f = 0, 0.0
        else:
            b, f = op_bytes(graph, i), float(o.flops)
        tc, tm = f / p.peak_flops, b / p.bandwidth
        rows.append(
            OpProjection(
                name=o.name,
                op=o.op,
                flops=f,
                bytes=b,
                compute_s=tc,
                memory_s=tm,
                seconds=max(tc, tm),
                bound="compute" if tc >= tm else "memory",
            )
        )
    total = float(sum(r.seconds for r in rows))
    energy = None if p.active_power_w is None else total * p.active_power_w
    return Projection(device=p.name, ops=tuple(rows), total_s=total, energy_j=energy)
