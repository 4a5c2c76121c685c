"""Edge-cloud split planning (Neurosurgeon, Kang et al. 2017) on a deterministic virtual clock.

For every cut ``c`` (ops ``[0, c)`` on the edge device, ops ``[c, n)`` in the cloud)::

    total(c) = edge(c) + up(c) + cloud(c) + down(c)
    edge(c)  = sum_{i < c} t_edge_i            cloud(c) = sum_{i >= c} t_cloud_i
    up(c)    = RTT / 2 + 8 * bytes_sent(c) / bandwidth + jitter
    down(c)  = RTT / 2 + 8 * bytes_out / downlink + jitter    (the result comes back)

``bytes_sent(c)`` is every non-static value produced on the edge and still needed in the cloud
(for a DAG with skip connections that can be several tensors, and the raw input itself when a
later op still reads it). ``c = 0`` is *all-cloud* (the raw input is sent) and ``c = n`` is
*all-edge* (nothing is sent, no link time); both rows are always in the table. Jitter is a
half-normal draw with scale ``jitter_s`` per transfer from ``numpy.random.default_rng(seed)`` on a
virtual clock, and every cut sees the same draws (common random numbers), so the plan is
deterministic and the comparison between cuts is not blurred by noise.

With ``quantize=True`` every float32 activation sent at an intermediate cut is sent as int8
(symmetric per-tensor absmax, round half to even; 1 byte per element plus a 4-byte scale); the raw
input at the all-cloud cut is always sent as is. The accuracy effect is measured by running the
prefix, quantizing what crosses, and running the suffix (`split_accuracy`).

``raw_input_leaves_device`` says only whether the raw input tensor itself is transmitted; it is not
a privacy guarantee (intermediate activations can leak information about the input).

References:
  Kang, Hauswald, Gao, Rovinski, Mudge, Mars, Tang. "Neurosurgeon: Collaborative Intelligence
  Between the Cloud and Mobile Edge." ASPLOS 2017.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.edge._graph import EdgeGraph
from jaxcompress.edge._latency import percentile
from jaxcompress.edge._profiles import DeviceProfile
from jaxcompress.edge._roofline import Projection, project

__all__ = [
    "Link",
    "VirtualClock",
    "SplitRow",
    "SplitPlan",
    "plan_split",
    "split_accuracy",
    "quantize_activation",
]


@dataclasses.dataclass(frozen=True)
class Link:
    """A network link.

    Attributes:
      bandwidth_bps: uplink bits per second (> 0).
      rtt_s: round-trip time in seconds (>= 0), half charged on each direction.
      jitter_s: scale of a half-normal delay added to each transfer (>= 0).
      downlink_bps: downlink bits per second (defaults to `bandwidth_bps`).
      name: a label for tables.
    """

    bandwidth_bps: float
    rtt_s: float = 0.0
    jitter_s: float = 0.0
    downlink_bps: float | None = None
    name: str = ""

    def __post_init__(self):
        for f in ("bandwidth_bps", "rtt_s", "jitter_s"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise JaxCompressValueError(f"{f}={v!r} must be a finite number >= 0")
        if self.bandwidth_bps <= 0:
            raise JaxCompressValueError(f"bandwidth_bps={self.bandwidth_bps!r} must be > 0")
        if self.downlink_bps is not None and not self.downlink_bps > 0:
            raise JaxCompressValueError(f"downlink_bps={self.downlink_bps!r} must be > 0")

    @classmethod
    def mbit(cls, mbit_per_s: float, *, rtt_ms: float = 0.0, jitter_ms: float = 0.0) -> Link:
        """A symmetric link of `mbit_per_s` Mbit/s (10^6 bits/s)."""
        return cls(
            bandwidth_bps=float(mbit_per_s) * 1e6,
            rtt_s=rtt_ms / 1e3,
            jitter_s=jitter_ms / 1e3,
            name=f"{mbit_per_s:g} Mbit/s, RTT {rtt_ms:g} ms",
        )

    @property
    def down_bps(self) -> float:
        return self.downlink_bps or self.bandwidth_bps


class VirtualClock:
    """A simulated clock: time only moves when `advance`/`transfer` say so (no sleeping)."""

    def __init__(self, seed: int = 0):
        self.now = 0.0
        self.rng = np.random.default_rng(seed)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise JaxCompressValueError(f"{seconds=} must be >= 0")
        self.now += float(seconds)
        return float(seconds)

    def transfer(self, link: Link, nbytes: int, *, downlink: bool = False) -> float:
        """Moves `nbytes` over `link`; returns (and advances by) the seconds it took."""
        bw = link.down_bps if downlink else link.bandwidth_bps
        jitter = abs(float(self.rng.normal(0.0, link.jitter_s))) if link.jitter_s > 0 else 0.0
        return self.advance(link.rtt_s / 2 + 8.0 * nbytes / bw + jitter)


@dataclasses.dataclass(frozen=True)
class SplitRow:
    """One cut. Times in seconds (means over the simulated requests, p90 of the total too)."""

    cut: int
    label: str  # "all-cloud", "all-edge" or "after <op> (<type>)"
    edge_s: float
    transfer_s: float
    cloud_s: float
    total_s: float
    total_p90_s: float
    sent_bytes: int
    sent_values: tuple[str, ...]
    raw_input_bytes: int
    raw_input_leaves_device: bool
    quantized: bool
    accuracy: float | None = None

    @property
    def sent_vs_raw(self) -> float:
        """``sent_bytes / raw_input_bytes`` (0 for all-edge)."""
        return self.sent_bytes / self.raw_input_bytes if self.raw_input_bytes else math.inf


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """All cuts and the best one (lowest mean total)."""

    rows: tuple[SplitRow, ...]
    best: SplitRow
    link: Link
    edge: str
    cloud: str

    @property
    def all_edge(self) -> SplitRow:
        return self.rows[-1]

    @property
    def all_cloud(self) -> SplitRow:
        return self.rows[0]

    def to_markdown(self, *, ms: bool = True) -> str:
        u, f = ("ms", 1e3) if ms else ("s", 1.0)
        acc = any(r.accuracy is not None for r in self.rows)
        head = (
            f"| cut | edge {u} | link {u} | cloud {u} | total {u} | p90 {u} | bytes sent "
            f"| vs raw input | raw input leaves device |" + (" accuracy |" if acc else "")
        )
        lines = [head, "|" + "---|" * (9 + acc)]
        for r in self.rows:
            star = " **best**" if r is self.best else ""
            vs = "-" if r.sent_bytes == 0 else f"{r.sent_vs_raw:.3f}x"
            line = (
                f"| {r.label}{star} | {r.edge_s * f:.3f} | {r.transfer_s * f:.3f} | "
                f"{r.cloud_s * f:.3f} | {r.total_s * f:.3f} | {r.total_p90_s * f:.3f} | "
                f"{r.sent_bytes} | {vs} | {'yes' if r.raw_input_leaves_device else 'no'} |"
            )
            if acc:
                line += " - |" if r.accuracy is None else f" {r.accuracy:.4f} |"
            lines.append(line)
        return "\n".join(lines)


def _per_op_seconds(graph: EdgeGraph, side, what: str) -> tuple[list[float], str]:
    if isinstance(side, Projection):
        t, name = side.per_op_seconds, f"{side.device} ({side.label})"
    elif isinstance(side, (str, DeviceProfile)):
        pr = project(graph, side)
        t, name = pr.per_op_seconds, f"{pr.device} ({pr.label})"
    elif isinstance(side, Sequence) or isinstance(side, np.ndarray):
        t, name = [float(v) for v in side], "measured"
    else:
        raise JaxCompressTypeError(
            f"{what} must be a profile name, DeviceProfile, Projection or "
            f"per-op seconds, got {type(side).__name__}"
        )
    if len(t) != len(graph.ops):
        raise JaxCompressValueError(
            f"{what} has {len(t)} per-op times, the graph {len(graph.ops)} ops"
        )
    if any(not math.isfinite(v) or v < 0 for v in t):
        raise JaxCompressValueError(f"{what} per-op times must be finite and >= 0")
    return t, name


def _sent_bytes(graph: EdgeGraph, values, quantize: bool, cut: int) -> int:
    total = 0
    for v in values:
        nb = graph.nbytes(v)
        if quantize and 0 < cut and graph.dtype(v) == "float32":
            nb = nb // 4 + 4
        total += nb
    return total


def default_cuts(graph: EdgeGraph) -> list[int]:
    """0, n, and every cut right after a non-static, non-alias op."""
    n = len(graph.ops)
    cuts = {0, n}
    cuts |= {i + 1 for i, o in enumerate(graph.ops) if not o.static and not o.alias}
    return sorted(cuts)


def plan_split(
    graph: EdgeGraph,
    *,
    edge,
    cloud,
    link: Link,
    quantize: bool = False,
    cuts: Sequence[int] | None = None,
    trials: int = 32,
    seed: int = 0,
    accuracy: Callable[[int], float] | None = None,
) -> SplitPlan:
    """Evaluates every cut of `graph` between an edge device and a cloud over `link`.

    Args:
      graph: an `EdgeGraph`.
      edge: the edge side: a profile name / `DeviceProfile` (roofline projection), a `Projection`,
        or measured per-op seconds (one per op).
      cloud: the cloud side, same forms.
      link: a `Link`.
      quantize: send float32 activations at intermediate cuts as int8 (+ one float32 scale).
      cuts: cut indices to evaluate (default `default_cuts`); 0 and ``len(graph.ops)`` are
        always added.
      trials: simulated requests per cut on the virtual clock (mean and p90 reported).
      seed: seed of the jitter draws (the same draws for every cut).
      accuracy: optional ``cut -> accuracy`` (e.g. from `split_accuracy`), stored in each row.

    Returns:
      A `SplitPlan` with one `SplitRow` per cut (all-cloud first, all-edge last) and the best.

    Raises:
      JaxCompressValueError: bad cut, per-op times of the wrong length, ``trials < 1``.

    Example:
      >>> from jaxcompress.edge import chain_graph, Link, plan_split
      >>> g = chain_graph(10_000, [(1e6, 0, 100), (1e6, 0, 10)])
      >>> plan = plan_split(g, edge=[0.01, 0.01], cloud=[0.0, 0.0], link=Link.mbit(1.0))
      >>> plan.best.label
      'after layer0 (layer)'
    """
    if int(trials) < 1:
        raise JaxCompressValueError(f"{trials=} must be >= 1")
    n = len(graph.ops)
    t_edge, edge_name = _per_op_seconds(graph, edge, "edge")
    t_cloud, cloud_name = _per_op_seconds(graph, cloud, "cloud")
    cut_list = sorted(set(default_cuts(graph) if cuts is None else cuts) | {0, n})
    for c in cut_list:
        if not 0 <= c <= n:
            raise JaxCompressValueError(f"cut={c} must be in 0..{n}")
    out_bytes = sum(graph.nbytes(o) for o in graph.outputs)
    rows = []
    for c in cut_list:
        edge_s = float(sum(t_edge[:c]))
        cloud_s = float(sum(t_cloud[c:]))
        values = tuple(graph.crossing(c)) if c < n else ()
        sent = _sent_bytes(graph, values, quantize, c) if c < n else 0
        clock = VirtualClock(seed)
        totals, transfers = [], []
        for _ in range(int(trials)):
            start = clock.now
            clock.advance(edge_s)
            tr = 0.0
            if c < n:
                tr += clock.transfer(link, sent)
                clock.advance(cloud_s)
                tr += clock.transfer(link, out_bytes, downlink=True)
            totals.append(clock.now - start)
            transfers.append(tr)
        if c == 0:
            label = "all-cloud"
        elif c == n:
            label = "all-edge"
        else:
            o = graph.ops[c - 1]
            label = f"after {o.name} ({o.op})"
        rows.append(
            SplitRow(
                cut=c,
                label=label,
                edge_s=edge_s,
                transfer_s=float(np.mean(transfers)),
                cloud_s=cloud_s if c < n else 0.0,
                total_s=float(np.mean(totals)),
                total_p90_s=percentile(totals, 90),
                sent_bytes=int(sent),
                sent_values=values,
                raw_input_bytes=graph.input_bytes,
                raw_input_leaves_device=graph.input in values,
                quantized=bool(quantize and 0 < c < n),
                accuracy=None if accuracy is None else float(accuracy(c)),
            )
        )
    best = min(rows, key=lambda r: (r.total_s, -r.cut))
    return SplitPlan(rows=tuple(rows), best=best, link=link, edge=edge_name, cloud=cloud_name)


def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Symmetric per-tensor int8: ``q = clip(round_half_even(x / s), -127, 127)``,
    ``s = max|x| / 127`` (1 when x is all zero). Returns ``(q int8, s float32)``."""
    x = np.asarray(x, np.float32)
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    s = np.float32(amax / 127.0 if amax > 0 else 1.0)
    q = np.clip(np.rint(x / s), -127, 127).astype(np.int8)
    return q, s


def split_accuracy(
    executor,
    graph: EdgeGraph,
    cut: int,
    x: np.ndarray,
    y=None,
    *,
    quantize: bool = True,
    batch_size: int = 1000,
) -> float:
    """Accuracy of the split pipeline at `cut`: prefix on the edge, the crossing float32 values
    int8-quantized and dequantized (when `quantize`), suffix in the cloud.

    Args:
      executor: a `GraphExecutor` of the same artifact the graph was built from.
      graph: the `EdgeGraph`.
      cut: the cut index.
      x: ``(N, ...)`` inputs.
      y: ``(N,)`` integer labels; when None, the agreement of the top-1 class with the unsplit,
        unquantized run is returned instead.
      quantize: quantize what crosses the cut (intermediate cuts only).
      batch_size: examples per run.

    Returns:
      Top-1 accuracy (or agreement) in ``[0, 1]``.
    """
    n = len(graph.ops)
    crossing = graph.crossing(cut) if cut < n else []
    hits, total = 0, 0
    for s in range(0, len(x), batch_size):
        xb = np.asarray(x[s : s + batch_size], np.float32)
        env = executor.run_prefix(xb, cut)
        if quantize and 0 < cut < n:
            for v in crossing:
                if env[v].dtype == np.float32:
                    q, sc = quantize_activation(env[v])
                    env[v] = q.astype(np.float32) * sc
        out = np.asarray(executor.run_suffix(env, cut))
        if y is None:
            ref = np.asarray(executor.run_suffix(executor.run_prefix(xb, 0), 0))
            target = ref.argmax(-1)
        else:
            target = np.asarray(y[s : s + batch_size])
        hits += int((out.argmax(-1) == target).sum())
        total += len(xb)
    return hits / max(total, 1)
