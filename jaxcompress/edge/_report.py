"""``benchmark``: one edge report over an artifact (latency, size, memory, accuracy, projection).

Everything *measured* runs on this host with the JAX-free edge runtime
(``jaxcompress_kernels.runtime``); everything on a named device is *projected* with the cost model
of `jaxcompress.edge.project` and says so, with the profile's calibration status (how far to
trust the number) and the plain roofline lower bound beside it. `projection_rows` and
`projection_table` render the projections of a report dict; the study report uses them too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np

from jaxcompress._core import JaxCompressValueError, cpu_model
from jaxcompress.edge._graph import EdgeGraph, GraphExecutor, graph_from_artifact
from jaxcompress.edge._latency import LatencyStats, measure_latency
from jaxcompress.edge._memory import ArenaPlan, check_fits, plan_arena
from jaxcompress.edge._profiles import get_profile
from jaxcompress.edge._roofline import Projection, project
from jaxcompress.edge._split import Link, SplitPlan, plan_split, split_accuracy

__all__ = [
    "SizeReport",
    "AccuracyReport",
    "EdgeReport",
    "benchmark",
    "size_report",
    "projection_rows",
    "projection_table",
]


def projection_rows(report: dict) -> list[dict]:
    """One row per projected device of a report dict (`EdgeReport.to_dict`).

    Returns:
      ``[{"device", "projected_ms", "lower_bound_ms", "energy_mj", "fits", "status",
      "calibrated", "notes", "host_error"}]``; ``host_error`` is ``(projected - measured p50) /
      measured p50`` for the ``host`` row (None elsewhere).
    """
    out = []
    p50 = (report.get("latency_measured_host") or {}).get("p50")
    for k, p in report.get("projected", {}).items():
        e = p.get("energy_j")
        err = None
        if k == "host" and p50:
            err = (p["total_s"] - p50) / p50
        out.append(
            {
                "device": k,
                "projected_ms": 1e3 * p["total_s"],
                "lower_bound_ms": 1e3 * p.get("lower_bound_s", p["total_s"]),
                "energy_mj": None if e is None else 1e3 * e,
                "fits": (report.get("fits", {}).get(k) or {}).get("message", ""),
                "status": p.get("status", "uncalibrated lower bound"),
                "calibrated": bool(p.get("calibrated", False)),
                "notes": list(p.get("notes", [])),
                "host_error": err,
            }
        )
    return out


def projection_table(report: dict, *, max_notes: int = 5) -> list[str]:
    """Markdown lines: the projected devices of a report dict with how far to trust each.

    Every latency says *projected*; each row carries its profile's calibration status
    ("calibrated: median |error| X% ..." or "uncalibrated lower bound") and the roofline lower
    bound; the host row also its error against the measured p50; then, per device, why ops with
    compressed weights are projected slower than dense ones (decode / sparse costs), if any.
    """
    rows = projection_rows(report)
    lines = [
        "| device | latency ms (projected) | lower bound ms (roofline) | energy mJ (estimate) | "
        "fits | how far to trust it |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        e = "-" if r["energy_mj"] is None else f"{r['energy_mj']:.4f}"
        trust = r["status"]
        if r["host_error"] is not None:
            trust += f"; vs this run's measured p50: {100 * r['host_error']:+.0f}%"
        lines.append(
            f"| {r['device']} | {r['projected_ms']:.4f} | {r['lower_bound_ms']:.4f} | {e} | "
            f"{r['fits']} | {trust} |"
        )
    for r in rows:
        if r["notes"]:
            lines += ["", f"Why compressed ops are projected slower on {r['device']}:"]
            lines += [f"- {n}" for n in r["notes"][:max_notes]]
            if len(r["notes"]) > max_notes:
                lines.append(f"- ... and {len(r['notes']) - max_notes} more ops")
    return lines


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """Sizes of an artifact.

    Attributes:
      artifact_bytes: the file size.
      weight_count: elements of the weights (tensors read as the weight of ``linear``/``conv``).
      weight_bytes: their stored bytes (codes, indices, scales, codebooks included).
      weight_bytes_by_encoding: ``{encoding: stored bytes}`` over the weights.
      bits_per_weight: ``8 * weight_bytes / weight_count`` (32 for dense float32).
      sparsity: fraction of exact zeros in the decoded weights.
      other_bytes: stored bytes of the other tensors (biases, norms, embeddings, constants).
    """

    artifact_bytes: int
    weight_count: int
    weight_bytes: int
    weight_bytes_by_encoding: dict
    bits_per_weight: float
    sparsity: float
    other_bytes: int


def size_report(artifact) -> SizeReport:
    """`SizeReport` of a verified `jaxcompress_kernels.artifact.Artifact`."""
    from jaxcompress_kernels.artifact import decode_dense

    weights = {n["weight"] for n in artifact.graph["nodes"] if "weight" in n}
    by_enc: dict[str, int] = {}
    count = wbytes = zeros = other = 0
    for name, t in artifact.tensors.items():
        if name in weights:
            count += t.size
            wbytes += t.stored_bytes
            by_enc[t.encoding] = by_enc.get(t.encoding, 0) + t.stored_bytes
            zeros += int(t.size - np.count_nonzero(decode_dense(t)))
        else:
            other += t.stored_bytes
    return SizeReport(
        artifact_bytes=int(artifact.file_bytes),
        weight_count=int(count),
        weight_bytes=int(wbytes),
        weight_bytes_by_encoding=by_enc,
        bits_per_weight=8.0 * wbytes / count if count else 0.0,
        sparsity=zeros / count if count else 0.0,
        other_bytes=int(other),
    )


@dataclasses.dataclass(frozen=True)
class AccuracyReport:
    """Top-1 accuracy of the artifact (edge runtime) against the float model.

    ``relative = accuracy / float_accuracy``; ``meets_99`` is MLPerf's "99% of float" target
    (``relative >= 0.99``).
    """

    n: int
    accuracy: float
    float_accuracy: float | None
    absolute_drop: float | None
    relative: float | None
    meets_99: bool | None


@dataclasses.dataclass(frozen=True)
class EdgeReport:
    """What `benchmark` measured and projected (see its docstring)."""

    artifact: str
    batch: int
    latency: LatencyStats
    op_seconds: tuple[float, ...]
    size: SizeReport
    arena: ArenaPlan
    graph: EdgeGraph
    projections: dict
    fits: dict
    accuracy: AccuracyReport | None
    self_check_ok: bool
    splits: tuple = ()
    machine: dict = dataclasses.field(default_factory=dict)
    activations: str = "float"

    def to_dict(self) -> dict:
        def proj(p: Projection) -> dict:
            return p.to_dict()

        def node(o, t) -> dict:
            return {
                "name": o.name,
                "op": o.op,
                "shape": list(o.shape),
                "kernel": o.kernel,
                "flops": o.flops,
                "measured_s": t,
            }

        def split(s: SplitPlan) -> dict:
            return {
                "link": dataclasses.asdict(s.link),
                "edge": s.edge,
                "cloud": s.cloud,
                "best": s.best.label,
                "rows": [
                    dict(dataclasses.asdict(r), sent_values=list(r.sent_values)) for r in s.rows
                ],
            }

        return {
            "artifact": self.artifact,
            "batch": self.batch,
            "activations": self.activations,
            "machine": self.machine,
            "latency_measured_host": self.latency.to_dict(),
            "size": dataclasses.asdict(self.size),
            "memory": {
                "arena_bytes": self.arena.arena_bytes,
                "peak_bytes": self.arena.peak_bytes,
                "static_bytes": self.arena.static_bytes,
            },
            "graph": {
                "ops": len(self.graph.ops),
                "flops_per_example": self.graph.flops,
                "nodes": [
                    node(o, t) for o, t in zip(self.graph.ops, self.op_seconds, strict=False)
                ],
            },
            "projected": {k: proj(v) for k, v in self.projections.items()},
            "fits": {k: dataclasses.asdict(v) for k, v in self.fits.items()},
            "accuracy": None if self.accuracy is None else dataclasses.asdict(self.accuracy),
            "self_check_ok": self.self_check_ok,
            "splits": [split(s) for s in self.splits],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        lat, sz = self.latency, self.size
        ms = 1e3
        thr = lat.threads
        out = [f"## Edge report: `{os.path.basename(self.artifact)}`", ""]
        out.append(
            f"Measured on this host ({self.machine.get('cpu', '?')}), batch {self.batch}, "
            f"numba threads {thr.numba_threads}, BLAS {thr.blas_threads or '?'}, "
            f"CPU affinity {list(thr.affinity) if thr.affinity else '?'}; "
            f"activations {self.activations}; "
            f"self-check {'passed' if self.self_check_ok else 'FAILED'}."
        )
        out += ["", "| latency (measured) | ms |", "|---|---|"]
        if lat.init_s is not None:
            out.append(f"| init (load + verify + plan) | {lat.init_s * ms:.3f} |")
        out.append(f"| first run | {lat.first_s * ms:.3f} |")
        out.append(f"| steady n | {lat.n} |")
        for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max"):
            v = getattr(lat, k)
            out.append(f"| {k}{' (headline)' if k == 'p90' else ''} | {v * ms:.3f} |")
        enc = ", ".join(f"{k} {v} B" for k, v in sorted(sz.weight_bytes_by_encoding.items()))
        out += [
            "",
            "| size | value |",
            "|---|---|",
            f"| artifact bytes | {sz.artifact_bytes} |",
            f"| weights | {sz.weight_count} elements, {sz.weight_bytes} B ({enc}) |",
            f"| bits per weight | {sz.bits_per_weight:.2f} |",
            f"| sparsity | {sz.sparsity:.3f} |",
            f"| other tensors | {sz.other_bytes} B |",
            f"| activation arena (planned) | {self.arena.arena_bytes} B "
            f"(peak live {self.arena.peak_bytes} B) |",
        ]
        if self.accuracy is not None:
            a = self.accuracy
            out += [
                "",
                "| accuracy | value |",
                "|---|---|",
                f"| runtime top-1 (n={a.n}) | {a.accuracy:.4f} |",
            ]
            if a.float_accuracy is not None:
                out += [
                    f"| float model | {a.float_accuracy:.4f} |",
                    f"| absolute drop | {a.absolute_drop:+.4f} |",
                    f"| relative | {a.relative:.4f} ({'meets' if a.meets_99 else 'misses'} "
                    "99% of float) |",
                ]
        out += [
            "",
            "| node | op | output shape | kernel (the runtime's plan) | MFLOPs | measured ms |",
            "|---:|---|---|---|---:|---:|",
        ]
        for i, (o, t) in enumerate(zip(self.graph.ops, self.op_seconds, strict=False)):
            if o.static or o.alias:
                continue
            out.append(
                f"| {i} | {o.op} | {list(o.shape)} | {o.kernel} | {o.flops / 1e6:.3f} | "
                f"{t * ms:.4f} |"
            )
        out += [""] + projection_table(self.to_dict())
        for s in self.splits:
            out += [
                "",
                f"Split plan: edge {s.edge}, cloud {s.cloud}, link {s.link.name or s.link}"
                f" (best: {s.best.label})",
                "",
                s.to_markdown(),
            ]
        return "\n".join(out)


def _batches(x, batch_size):
    for s in range(0, len(x), batch_size):
        yield s, np.asarray(x[s : s + batch_size], np.float32)


def benchmark(
    artifact,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    float_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    float_accuracy: float | None = None,
    devices: Sequence = ("rpi4", "stm32h7a3"),
    batch: int = 1,
    warmup: int = 10,
    iters: int = 100,
    max_seconds: float | None = None,
    num_threads: int | None = None,
    links: Sequence[Link] = (),
    split_edge="rpi4",
    split_cloud=None,
    quantize_cut: bool = False,
    split_accuracy_n: int = 0,
    eval_batch_size: int = 1000,
    activations: str | None = None,
) -> EdgeReport:
    """Measures and projects an artifact on the edge.

    Measured on this host with the JAX-free runtime: init (load + verify + kernel plan), first
    run, warm-up, steady-state latency (n, mean, std, min, p50, p90 headline, p95, p99, max) with
    threads and CPU affinity, per-op time (medians over the steady runs), the bundled self-check,
    and (with `x`, `y`) top-1 accuracy against the float model. Computed from the file: artifact
    bytes, weight bytes by encoding, bits per weight, sparsity, the planned activation arena.
    Projected (cost model, labelled so, with each profile's calibration status and the roofline
    lower bound) on each of `devices` and on the calibrated ``host``: latency, energy estimate,
    fits in RAM/flash. With `links`, the split plan (edge: `split_edge`
    projected; cloud: `split_cloud`, default the host's *measured* per-op times) over each link.

    Args:
      artifact: path, `Artifact` or `Runtime`.
      x: optional inputs ``(N, ...)`` float32; the first `batch` rows are the latency input (else
        the bundled sample input).
      y: optional ``(N,)`` labels for accuracy.
      float_fn: optional ``x -> logits`` of the float model (e.g. the jitted JAX apply).
      float_accuracy: the float model's accuracy, if known (instead of `float_fn`).
      devices: profile names or `DeviceProfile`s to project on.
      batch: latency batch size (1 = single-stream).
      warmup, iters, max_seconds: see `measure_latency`.
      num_threads: kernel threads for the runtime (None keeps the current setting).
      links: `Link`s for split planning (empty: no split plan).
      split_edge, split_cloud: the two sides of the split (see above).
      quantize_cut: int8 activations at intermediate cuts, accuracy measured when
        `split_accuracy_n` > 0 and labels are given.
      split_accuracy_n: examples of `x`/`y` used to measure each cut's accuracy.
      eval_batch_size: batch size for accuracy runs.
      activations: the runtime's activation mode for a path or `Artifact` (``"float"``, the
        default, or ``"dynamic_int8"``: see `jaxcompress_kernels.runtime.Runtime`); a `Runtime`
        keeps its own (None). The report's per-node kernels and ``activations`` say what ran.

    Returns:
      An `EdgeReport` (``to_markdown()``, ``to_dict()``, ``to_json()``).

    Raises:
      JaxCompressValueError: `x`/`y` lengths differ, ``batch < 1``.
      jaxcompress_kernels.ArtifactError: the artifact fails verification.

    Example:
      >>> rep = benchmark("model.jcx", devices=("stm32h7a3",), iters=50)   # doctest: +SKIP
      >>> print(rep.to_markdown())                                        # doctest: +SKIP
    """
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    if int(batch) < 1:
        raise JaxCompressValueError(f"{batch=} must be >= 1")
    if y is not None and (x is None or len(x) != len(y)):
        raise JaxCompressValueError("y needs x of the same length")
    t0 = time.perf_counter()
    mode = {} if activations is None else {"activations": activations}
    if isinstance(artifact, _runtime.Runtime):
        if activations is not None and activations != artifact.activations:
            raise JaxCompressValueError(
                f"activations={activations!r} differs from the given Runtime's "
                f"{artifact.activations!r}"
            )
        rt = artifact
    elif isinstance(artifact, _artifact.Artifact):
        rt = _runtime.Runtime(artifact, num_threads=num_threads, **mode)
    else:  # a path: the init time covers reading, verifying and planning the kernels
        rt = _runtime.Runtime(_artifact.load(artifact), num_threads=num_threads, **mode)
    init_s = time.perf_counter() - t0
    art = rt.artifact
    src = x if x is not None else art.sample_input
    xb = np.asarray(src[:batch], np.float32)
    if len(xb) < batch:
        xb = np.resize(xb, (batch, *xb.shape[1:])).astype(np.float32)
    # the timed calls run the graph only: reading the per-node timers costs Python time per step
    # (tens of microseconds on a graph of many small steps), so they are read in separate runs
    lat = measure_latency(rt.run, xb, warmup=warmup, iters=iters, max_seconds=max_seconds)
    lat = dataclasses.replace(lat, init_s=init_s)
    op_runs: list[list[float]] = []
    for _ in range(max(1, min(lat.n, 100))):
        rt.run(xb)
        op_runs.append(rt.node_times())
    op_seconds = tuple(float(v) for v in np.median(np.asarray(op_runs), axis=0))
    ok = rt.self_check().ok
    graph = graph_from_artifact(rt)
    plan = plan_arena(graph)
    size = size_report(art)
    projections, fits = {}, {}
    for d in ("host", *devices):
        p = get_profile(d)
        if p.name in projections:
            continue
        projections[p.name] = project(graph, p)
        fits[p.name] = check_fits(graph, p, plan=plan)
    acc = None
    if x is not None and y is not None:
        hits = 0
        fhits = 0
        for s, xe in _batches(x, eval_batch_size):
            out = np.asarray(rt.run(xe))
            hits += int((out.argmax(-1) == np.asarray(y[s : s + len(xe)])).sum())
            if float_fn is not None:
                fout = np.asarray(float_fn(xe))
                fhits += int((fout.argmax(-1) == np.asarray(y[s : s + len(xe)])).sum())
        a = hits / len(x)
        fa = fhits / len(x) if float_fn is not None else float_accuracy
        acc = AccuracyReport(
            n=len(x),
            accuracy=a,
            float_accuracy=fa,
            absolute_drop=None if fa is None else a - fa,
            relative=None if not fa else a / fa,
            meets_99=None if not fa else bool(a / fa >= 0.99),
        )
    splits = []
    if links:
        # the split is planned per request of one example: the host's measured per-op times
        # serve as the cloud when they were measured at batch 1, else its projection
        if split_cloud is not None:
            cloud = split_cloud
        else:
            cloud = list(op_seconds) if batch == 1 else "host"
        accuracy_fn = None
        if split_accuracy_n and x is not None and y is not None:
            ex = GraphExecutor(rt)
            xs, ys = x[:split_accuracy_n], y[:split_accuracy_n]
            cache: dict[int, float] = {}

            def accuracy_fn(c):
                if c not in cache:
                    cache[c] = split_accuracy(
                        ex, graph, c, xs, ys, quantize=quantize_cut, batch_size=eval_batch_size
                    )
                return cache[c]

        edge = split_edge
        for link in links:
            sp = plan_split(
                graph,
                edge=edge,
                cloud=cloud,
                link=link,
                quantize=quantize_cut,
                accuracy=accuracy_fn,
            )
            if split_cloud is None and batch == 1:
                sp = dataclasses.replace(sp, cloud="host (measured per-op times)")
            splits.append(sp)
    machine = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    return EdgeReport(
        artifact=art.path,
        batch=int(batch),
        latency=lat,
        op_seconds=op_seconds,
        size=size,
        arena=plan,
        graph=graph,
        projections=projections,
        fits=fits,
        accuracy=acc,
        self_check_ok=bool(ok),
        splits=tuple(splits),
        machine=machine,
        activations=rt.activations,
    )
