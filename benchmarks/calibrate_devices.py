"""Fits the per-core-class cost model on MLPerf Tiny v1.0 and validates it leave-one-model-out.

Data: ``--data`` (default ``../shared/data/mlperf_tiny/v1.0_closed_latency.csv``): the closed
division's measured latencies (int8 models, several engines) on NUCLEO-L4R5ZI (``stm32l4r5``,
Cortex-M4F), NUCLEO-H7A3ZI-Q (``stm32h7a3``, Cortex-M7) and three Cortex-M33 boards
(``stm32u575``, ``stm32u585``, ``nrf5340``). Our exports of the same four reference models
(``jaxcompress.models``: DS-CNN = kws, MobileNetV1 0.25 = vww, ResNet-8 = ic, FC AutoEncoder = ad)
are exported as full-integer graphs (batch norm folded into the layer before it, as TFLite does;
``ptq(..., activation_bits=8)``; ``export.save(..., integer=True)``), and the cost model reads
their int8 op specs (``qconv2d``, ``qlinear``, ``qadd``, ...) from the runtime's plan.

Model (``jaxcompress.edge._calibrate``): per core class one int8 (conv) efficiency, linear layers
at that efficiency divided by the class's instruction-count ratio (``core_classes.json``,
``linear_mac_cost_ratio``, not fitted); shared by all classes a per-output-element cost (MAC
equivalents) and a factor on each board's datasheet flash read cost (``profiles.json``:
``(flash_wait_states + 1) / flash_read_bytes`` cycles per weight byte streamed from flash); one
time factor per engine other than the reference (X-CUBE-AI). Validation: for each model, fit
on the other three (all boards) and project it; errors against the median over a board's
submitters (each projected with its engine) and against the fastest submitter.

Writes ``jaxcompress/edge/calibration.json`` (the fit on all data, with each class's
leave-one-model-out error: the status every projection quotes) and
``benchmarks/results/calibrate_devices.md``. Deterministic; takes about a minute.

``--host`` instead validates the host projection in one run (under the benchmark lock): the
host's per-kernel-family costs are measured afresh (no cache, ``jaxcompress.edge._hostcal``, on
its own calibration graphs), then every graph kind the project produces (random weights, batch
1, one kernel thread) is measured with the runtime (p50 of 300 runs after 20 warm-ups) and
projected on that host profile: LeNet-300-100 and LeNet-5 dense and 90% pruned + int8 (CSR),
the tiny transformer dense, 2:4 + 4-bit and 4-bit codebook, the default study's pruned 4-bit
CNN1D, the four MLPerf Tiny models (float) and DS-CNN / FC AutoEncoder as full-integer graphs;
writes ``benchmarks/results/calibrate_host.md`` (every row says whether it meets 25%).

Usage (from the repository root):
    python benchmarks/calibrate_devices.py [--data CSV] [--no-write-calibration]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        flock /tmp/jaxcompress-bench.lock python benchmarks/calibrate_devices.py --host
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_CSV = Path("shared") / "data" / "mlperf_tiny" / "v1.0_closed_latency.csv"
# ../shared beside the repository (a worktree one level deeper also finds it)
DEFAULT_DATA = next(
    (p / _CSV for p in (ROOT.parent, ROOT.parent.parent) if (p / _CSV).is_file()),
    ROOT.parent / _CSV,
)

BOARDS = {  # MLPerf board name -> our profile
    "NUCLEO_L4R5ZI": "stm32l4r5",
    "NUCLEO-H7A3ZI-Q": "stm32h7a3",
    "NUCLEO-U575ZI-Q": "stm32u575",
    "B_U585I_IOT02A": "stm32u585",
    "NRF5340-DK": "nrf5340",
}
ENGINES = {"STMicroelectronics": "X-CUBE-AI", "plumerai": "Plumerai", "OctoML": "microTVM"}
REFERENCE = "X-CUBE-AI"
MODELS = {  # benchmark -> (model, input shape)
    "kws": ("DSCNN", (49, 10, 1)),
    "vww": ("MobileNetV1VWW", (96, 96, 3)),
    "ic": ("ResNet8", (32, 32, 3)),
    "ad": ("FCAutoEncoder", (640,)),
}
MODEL_NAMES = {
    "kws": "DS-CNN (kws)",
    "vww": "MobileNetV1 0.25 (vww)",
    "ic": "ResNet-8 (ic)",
    "ad": "FC AutoEncoder (ad)",
}


def fold_batchnorm(model):
    """Folds every inference-mode batch norm of the MLPerf Tiny models into the conv / dense layer
    before it (``w' = w s``, ``b' = (b - mean) s + beta``, ``s = gamma / sqrt(var + eps)``, as
    TFLite's converter does), so the model exports as a full-integer graph. Returns `model`."""
    import jax.numpy as jnp
    from flax import nnx

    class FoldedBN(nnx.Module):
        """A batch norm folded into the layer before it: the identity."""

        def __call__(self, x, use_running_average=True):
            return x

    def fold(layer, bn):
        s = bn.scale.get_value() / jnp.sqrt(bn.var.get_value() + bn.epsilon)
        layer.kernel.set_value(layer.kernel.get_value() * s)
        b = layer.bias.get_value()
        layer.bias.set_value((b - bn.mean.get_value()) * s + bn.bias.get_value())

    for _, m in list(nnx.iter_graph(model)):
        bn = getattr(m, "bn", None)
        if isinstance(bn, nnx.BatchNorm):  # _ConvBN: conv -> bn
            fold(m.conv, bn)
            m.bn = FoldedBN()
        elif isinstance(bn, nnx.List):  # FCAutoEncoder: dense[i] -> bn[i]
            for i, (d, b) in enumerate(zip(m.dense, bn, strict=True)):
                fold(d, b)
                bn[i] = FoldedBN()
    return model


def export_graphs(folder: str, keys=None) -> dict:
    """Exports the four models as full-integer graphs (int8 weights and activations, batch norm
    folded, post-training ranges from random calibration inputs: latency does not depend on the
    values) and returns their `EdgeGraph`s (with `keys`: only those models, as artifact paths)."""
    from flax import nnx

    from jaxcompress import models, quantization
    from jaxcompress.edge import graph_from_artifact
    from jaxcompress.export import save

    graphs = {}
    for key, (cls, shape) in MODELS.items():
        if keys is not None and key not in keys:
            continue
        m = fold_batchnorm(getattr(models, cls)(rngs=nnx.Rngs(0)))
        apply_fn, params = models.functional(m)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, *shape)).astype(np.float32)
        cal = [rng.standard_normal((4, *shape)).astype(np.float32) for _ in range(2)]
        r = quantization.ptq(apply_fn, params, cal, activation_bits=8)
        path = os.path.join(folder, f"{key}.jcx")
        save(path, r.apply_fn, r.params, x, integer=True, calibration_batches=cal)
        graphs[key] = path if keys is not None else graph_from_artifact(path, num_threads=1)
    return graphs


def read_rows(path):
    from jaxcompress.edge._calibrate import Measurement

    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                Measurement(
                    board=BOARDS[r["board"]],
                    model=r["benchmark"],
                    engine=ENGINES[r["submitter"]],
                    latency_s=float(r["latency_ms"]) / 1e3,
                )
            )
    return rows


def _host_graphs(folder: str) -> list:
    """``[(name, kind, path)]``: the graphs the host projection is validated on (random weights:
    latency does not depend on the values), exported into `folder`: dense float models, their
    compressed forms (CSR int8, N:M + 4-bit, packed 4-bit, codebook), the tiny transformer and
    two MLPerf Tiny models as full-integer graphs."""
    from flax import nnx

    from jaxcompress import clustering, models, pruning, quantization
    from jaxcompress.export import save

    def nm_where(path, leaf):
        return path.endswith("kernel") and leaf.shape[-2] % 4 == 0

    compress = {
        "dense": lambda p: p,
        "90% pruned + int8 (CSR)": lambda p: quantization.quantize_params(
            pruning.apply_masks(p, pruning.magnitude_masks(p, 0.9, scope="global")),
            bits=8,
            where=r"kernel",
        ),
        "2:4 + 4-bit g32": lambda p: quantization.quantize_params(
            pruning.apply_masks(p, pruning.nm_masks(p, 2, 4, where=nm_where)),
            bits=4,
            group_size=32,
            where=nm_where,
            group_fallback="per_channel",
        ),
        "50% pruned + 4-bit": lambda p: quantization.quantize_params(
            pruning.apply_masks(p, pruning.magnitude_masks(p, 0.5, scope="layer")),
            bits=4,
            where=r"kernel",
        ),
        "4-bit codebook": lambda p: clustering.cluster(p, bits=4, where=r"kernel"),
    }
    specs = [
        ("LeNet-300-100", "LeNet300100", {}, (28, 28, 1), ("dense", "90% pruned + int8 (CSR)")),
        ("LeNet-5", "LeNet5", {}, (28, 28, 1), ("dense", "90% pruned + int8 (CSR)")),
        (
            "tiny transformer",
            "TinyTransformer",
            {},
            (40, 1),
            ("dense", "2:4 + 4-bit g32", "4-bit codebook"),
        ),
        ("CNN1D-32 (default study)", "CNN1D", {"channels": 32}, (40, 1), ("50% pruned + 4-bit",)),
        *[(MODEL_NAMES[k], v[0], {}, v[1], ("dense",)) for k, v in MODELS.items()],
    ]
    out = []
    for name, cls, kw, shape, kinds in specs:
        m = getattr(models, cls)(**kw, rngs=nnx.Rngs(0))
        apply_fn, params = models.functional(m)
        x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        for kind in kinds:
            path = os.path.join(folder, f"{cls}-{len(out)}.jcx")
            save(path, apply_fn, compress[kind](params), x)
            out.append((name, kind, path))
    ints = export_graphs(folder, keys=("kws", "ad"))
    out += [(MODEL_NAMES[k], "full-integer int8", p) for k, p in ints.items()]
    return out


def host_validation(out: str, argv) -> int:
    import dataclasses

    from jaxcompress.edge import graph_from_artifact, measure_latency, project
    from jaxcompress.edge._costmodel import HOST_FIXED_FEATURES as HOST_FIXED
    from jaxcompress.edge._costmodel import HOST_UNIT_FEATURES as HOST_UNIT
    from jaxcompress.edge._hostcal import _params_from, measure_host_cost
    from jaxcompress.edge._profiles import calibrate_host
    from jaxcompress_kernels import runtime
    from jaxcompress_kernels.format.container import atomic_write

    t0 = time.time()
    _, info = measure_host_cost(num_threads=1)
    base = calibrate_host()
    host = dataclasses.replace(base, cost=_params_from(info, base.peak_flops))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, kind, path in _host_graphs(d):
            rt = runtime.load(path, num_threads=1)
            x = np.asarray(rt.artifact.sample_input[:1], np.float32)
            lat = measure_latency(lambda rt=rt, x=x: rt.run(x), warmup=20, iters=300)
            g = graph_from_artifact(rt)
            pr = project(g, host)
            kernels = sorted({o.kernel.split("(")[0] for o in g.ops if o.weight})
            rows.append(
                (name, kind, lat.p50, pr.total_s, pr.lower_bound_s, len(rt.plan.steps), kernels)
            )
    c = info["step_costs"]
    md = [
        "# Host projection vs the runtime's measurement (same run)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {time.time() - t0:.0f} s",
        "- command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 "
        "OPENBLAS_NUM_THREADS=1 flock /tmp/jaxcompress-bench.lock "
        f"python benchmarks/calibrate_devices.py {' '.join(argv)}`",
        f"- machine: {_cpu()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {version('numba')}",
        f"- host cost measured in this run (`jaxcompress.edge._hostcal`, no cache) on "
        f"{info['steps']} steps of {info['graphs']} calibration graphs (none of the models "
        f"below), fit median |error| {100 * info['fit_median_rel_error']:.1f}%: per call "
        f"{1e6 * info['run_overhead_s']:.2f} us, run loop per step {1e6 * info['loop_overhead_s']:.2f} us; "
        "fixed per step (us): "
        + ", ".join(f"{k} {1e6 * c[k]:.2f}" for k in HOST_FIXED)
        + "; per unit: "
        + ", ".join(f"{k} {1e12 * c[k]:.1f} ps" for k in HOST_UNIT),
        "- models: random weights (latency does not depend on the values), batch 1, one kernel "
        "thread, the runtime's default plan (autotuned: a small compressed weight may run decoded "
        "to float32; `kernels` lists what the plan chose), p50 of 300 runs after 20 warm-ups",
        "",
        "| model | weights | kernels | steps | measured p50 us | projected us | error | "
        "roofline lower bound us | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    worst = 0.0
    for name, kind, p50, proj, lb, nsteps, kernels in rows:
        err = (proj - p50) / p50
        worst = max(worst, abs(err))
        md.append(
            f"| {name} | {kind} | {', '.join(kernels)} | {nsteps} | {1e6 * p50:.1f} | "
            f"{1e6 * proj:.1f} | {100 * err:+.1f}% | {1e6 * lb:.1f} | "
            f"{'met' if abs(err) <= 0.25 else 'MISSED'} (<= 25%) |"
        )
    md += ["", f"Largest |error|: {100 * worst:.1f}% over {len(rows)} graphs."]
    text = "\n".join(md) + "\n"
    atomic_write(out, text.encode())
    print(text)
    return 0


def _cpu() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


def _op_counts(graph) -> dict:
    out = {}
    for o in graph.ops:
        if not o.alias:
            out[o.op] = out.get(o.op, 0) + 1
    return out


def _flash(p) -> str:
    if p.flash_cycles_per_byte is None:
        return "unknown (no flash term)"
    return (
        f"{p.flash_wait_states} WS / {p.flash_read_bytes} B = "
        f"{p.flash_cycles_per_byte:.3g} cycles/B"
    )


def _ablation(rows, graphs, profiles, lomo) -> list[str]:
    """The leave-one-model-out errors without each of the two non-fitted datasheet terms."""
    import dataclasses

    from jaxcompress.edge._calibrate import leave_one_model_out

    no_flash = {
        b: dataclasses.replace(p, flash_wait_states=None, flash_read_bytes=None)
        for b, p in profiles.items()
    }
    variants = {
        "the model": lomo,
        "without the flash read term (no board's flash data)": leave_one_model_out(
            rows, graphs, no_flash, reference_engine=REFERENCE
        ),
        "without the linear-layer ratio (linear at the conv efficiency)": leave_one_model_out(
            rows, graphs, profiles, reference_engine=REFERENCE, linear_ratio=False
        ),
    }
    classes = sorted({c["core_class"] for c in lomo})
    md = [
        "",
        "## Ablation: which term carries the FC AutoEncoder",
        "",
        "Leave-one-model-out max |error vs median| per class (median in brackets) and the FC "
        "AutoEncoder's error per board, refitted without one datasheet term at a time.",
        "",
        "| variant | " + " | ".join(classes) + " | FC AutoEncoder (ad) per board |",
        "|---|" + "---:|" * len(classes) + "---|",
    ]
    for name, cells in variants.items():
        per = []
        for c in classes:
            e = [abs(x["error_median"]) for x in cells if x["core_class"] == c]
            per.append(f"{100 * max(e):.1f}% ({100 * statistics.median(e):.1f}%)")
        ad = ", ".join(
            f"{x['board']} {100 * x['error_median']:+.1f}%"
            for x in sorted(cells, key=lambda x: x["board"])
            if x["model"] == "ad"
        )
        md.append(f"| {name} | " + " | ".join(per) + f" | {ad} |")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--no-write-calibration", action="store_true")
    ap.add_argument(
        "--out",
        default=None,
        help="results file (default benchmarks/results/calibrate_devices.md, or "
        "calibrate_host.md with --host)",
    )
    ap.add_argument("--host", action="store_true", help="validate the host projection instead")
    args = ap.parse_args(argv)
    results = ROOT / "benchmarks" / "results"
    if args.host:
        return host_validation(
            args.out or str(results / "calibrate_host.md"),
            list(argv if argv is not None else sys.argv[1:]),
        )
    args.out = args.out or str(results / "calibrate_devices.md")

    from jaxcompress.edge import get_profile
    from jaxcompress.edge._calibrate import fit_cost_model, leave_one_model_out
    from jaxcompress.edge._costmodel import core_classes
    from jaxcompress_kernels.format.container import atomic_write

    t0 = time.time()
    rows = read_rows(args.data)
    profiles = {b: get_profile(b) for b in BOARDS.values()}
    with tempfile.TemporaryDirectory() as d:
        graphs = export_graphs(d)
    fit = fit_cost_model(rows, graphs, profiles, reference_engine=REFERENCE)
    lomo = leave_one_model_out(rows, graphs, profiles, reference_engine=REFERENCE)
    fit2 = fit_cost_model(rows, graphs, profiles, reference_engine=REFERENCE)
    deterministic = fit2 == fit

    per_class = defaultdict(list)
    for c in lomo:
        per_class[c["core_class"]].append(c)
    n_rows = defaultdict(int)
    for r in rows:
        n_rows[profiles[r.board].core_class] += 1

    cal = {
        "format": "jaxcompress-calibration",
        "version": 2,
        "source": (
            "MLPerf Tiny v1.0 closed division, measured latencies (EEMBC EnergyRunner median "
            "throughput) of mlcommons/tiny_results_v1.0; int8 models; our full-integer exports "
            "of the same reference models (batch norm folded)"
        ),
        "command": "python benchmarks/calibrate_devices.py",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "reference_engine": REFERENCE,
        "n_parameters": fit.n_parameters,
        "model": (
            "per core class: int8 (conv) efficiency, linear layers / linear_mac_cost_ratio "
            "(core_classes.json, not fitted); shared: out_overhead_macs, flash_stream_factor "
            "(x each board's datasheet (flash_wait_states + 1) / flash_read_bytes cycles per "
            "weight byte streamed from flash); per non-reference engine: a time factor"
        ),
        "engines": fit.engine_factor,
        "shared": {
            "out_overhead_macs": fit.out_overhead_macs,
            "flash_stream_factor": fit.flash_stream_factor,
        },
        "decode_cycles_per_weight": {"packed": 2.0, "codebook": 3.0, "sparse": 2.0, "int8": 1.0},
        "sparse_efficiency": 0.35,
        "priors_note": (
            "decode_cycles_per_weight and sparse_efficiency are NOT fitted (no published MCU "
            "measurement of packed/sparse weights): unpacking a sub-byte code is a shift+mask+"
            "convert (~2 cycles), a codebook lookup adds a load (~3), a CSR/N:M index costs a "
            "load per nonzero (~2); a sparse inner loop loses the dual-MAC SIMD (SMLAD) and "
            "adds the index load, ~1/3 of dense throughput. Priors, stated as such."
        ),
        "classes": {},
    }
    for c in fit.classes:
        cells = per_class[c]
        errs = [abs(x["error_median"]) for x in cells]
        cal["classes"][c] = {
            "int8_efficiency": fit.efficiency[c],
            "int8_cycles_per_mac": fit.cycles_per_mac[c],
            "n_measurements": n_rows[c],
            "boards": sorted({x["board"] for x in cells}),
            "lomo_median_abs_error": float(statistics.median(errs)),
            "lomo_max_abs_error": float(max(errs)),
            "lomo_median_abs_error_fastest": float(
                statistics.median(abs(x["error_fastest"]) for x in cells)
            ),
        }
    if not args.no_write_calibration:
        atomic_write(
            str(ROOT / "jaxcompress" / "edge" / "calibration.json"),
            (json.dumps(cal, indent=2) + "\n").encode(),
        )

    md = ["# Device projections vs MLPerf Tiny v1.0 (leave-one-model-out)", ""]
    md += [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {time.time() - t0:.0f} s",
        f"- command: `{' '.join(shlex.quote(a) for a in ['python', 'benchmarks/calibrate_devices.py', *(argv or sys.argv[1:])])}`",
        f"- versions: Python {platform.python_version()}, numpy {np.__version__}, scipy "
        f"{version('scipy')}, jax {version('jax')}, flax {version('flax')}",
        f"- data: `{os.path.relpath(args.data, ROOT)}` ({len(rows)} submissions, "
        f"{len({(r.board, r.model) for r in rows})} board x model cells)",
        "- graphs: our full-integer exports of the four reference models (batch norm folded, "
        "`ptq(..., activation_bits=8)`, `export.save(..., integer=True)`): "
        + "; ".join(
            f"{k} " + ", ".join(f"{n} {op}" for op, n in sorted(_op_counts(g).items()))
            for k, g in graphs.items()
        ),
        f"- parameters fitted: {fit.n_parameters} ({len(fit.classes)} class efficiencies, "
        f"per-output cost, flash read factor, {len(fit.engines) - 1} engine factors), "
        f"for {len(rows)} measurements; deterministic (two fits equal): {deterministic}",
        "- not fitted: each board's flash read cost from its datasheet, `(flash_wait_states + 1) "
        "/ flash_read_bytes` cycles per weight byte ("
        + "; ".join(f"{b} {_flash(p)}" for b, p in profiles.items())
        + "); each class's linear-layer cost ratio (instruction count, core_classes.json): "
        + ", ".join(f"{c} {core_classes()[c]['linear_mac_cost_ratio']:g}" for c in fit.classes),
        "",
        "## Fitted parameters (all data)",
        "",
        "| parameter | value |",
        "|---|---:|",
    ]
    for c in fit.classes:
        md.append(
            f"| {c}: int8 efficiency (cycles per MAC) | {fit.efficiency[c]:.3f} "
            f"({fit.cycles_per_mac[c]:.2f}) |"
        )
    md.append(f"| per-output-element cost (MAC equivalents) | {fit.out_overhead_macs:.1f} |")
    md.append(
        f"| flash read factor (x datasheet cycles per streamed weight byte) | "
        f"{fit.flash_stream_factor:.3f} |"
    )
    for e, v in fit.engine_factor.items():
        md.append(f"| engine factor {e}{' (reference)' if e == REFERENCE else ''} | {v:.3f} |")
    md += [
        "",
        "## Leave-one-model-out errors",
        "",
        "Projected = the model fitted without that model (on every board), for each submitter's "
        "engine; the median / fastest over the board's submitters. Error = (projected - measured) "
        "/ measured. Target: |error vs median| <= 25% on L4R5 and H7A3, <= 35% on the M33 boards.",
        "",
        "| board | class | model | engines | measured median ms | projected ms | error | "
        "measured fastest ms | projected ms | error | reference-engine projection ms | target |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    worst = {}
    for c in sorted(lomo, key=lambda x: (x["board"], x["model"])):
        lim = 0.35 if c["core_class"] == "cortex-m33" else 0.25
        ok = abs(c["error_median"]) <= lim
        worst[c["board"]] = max(worst.get(c["board"], 0.0), abs(c["error_median"]))
        md.append(
            f"| {c['board']} | {c['core_class']} | {MODEL_NAMES[c['model']]} | "
            f"{', '.join(sorted(set(c['engines'])))} | {1e3 * c['measured_median_s']:.2f} | "
            f"{1e3 * c['projected_median_s']:.2f} | {100 * c['error_median']:+.1f}% | "
            f"{1e3 * c['measured_fastest_s']:.2f} | {1e3 * c['projected_fastest_s']:.2f} | "
            f"{100 * c['error_fastest']:+.1f}% | {1e3 * c['projected_reference_s']:.2f} | "
            f"{'met' if ok else 'MISSED'} (<= {100 * lim:.0f}%) |"
        )
    md += ["", "## Summary per core class (the status every projection quotes)", ""]
    md += [
        "| class | boards | submissions | LOMO median abs error (vs median) | max | vs fastest (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c, rec in cal["classes"].items():
        md.append(
            f"| {c} | {', '.join(rec['boards'])} | {rec['n_measurements']} | "
            f"{100 * rec['lomo_median_abs_error']:.1f}% | {100 * rec['lomo_max_abs_error']:.1f}% | "
            f"{100 * rec['lomo_median_abs_error_fastest']:.1f}% |"
        )
    md += [
        "",
        "Worst |error vs median| per board: "
        + ", ".join(f"{b} {100 * v:.1f}%" for b, v in sorted(worst.items()))
        + ".",
    ]
    md += _ablation(rows, graphs, profiles, lomo)
    text = "\n".join(md) + "\n"
    atomic_write(args.out, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
