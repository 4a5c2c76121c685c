"""Export results: compressed LeNet-300-100 and LeNet-5 as artifacts, run by the edge runtime and by
ONNX Runtime on the same artifact.

For each model (trained briefly on real MNIST) and each compression this measures the artifact
size, bits per weight (codes + indices + scales + codebooks of the rank >= 2 tensors), batch-1
latency with one thread in our runtime (`jaxcompress_kernels.runtime`) and in ONNX Runtime (pinned
session options, ONNX built from the artifact), test accuracy in JAX (dequantized weights), in our
runtime and in ONNX Runtime, and the largest relative output difference between them.

Usage (from the repository root, under the benchmark lock):
    flock /tmp/jaxcompress-bench.lock python benchmarks/reproduce_export.py \
        [--data-dir ../shared/data/mnist] [--quick]
Writes benchmarks/results/reproduce_export.md (``reproduce_export_quick.md`` with --quick).
"""

from __future__ import annotations

import os

# one thread everywhere (BLAS inside NumPy and XLA); set before NumPy is imported
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxcompress  # noqa: E402
from jaxcompress import clustering, models, pruning, quantization  # noqa: E402
from jaxcompress.data import load_dataset  # noqa: E402
from jaxcompress.export import ORT_OPTIONS, onnx_session, reference_output, save, to_onnx  # noqa: E402
from jaxcompress.training import fit  # noqa: E402
from jaxcompress_kernels import runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


def _train(apply_fn, params, ds, *, epochs, seed, lr=1e-3, param_transform=None, n=None):
    data = (ds.x_train[:n], ds.y_train[:n]) if n else ds
    r = fit(
        apply_fn,
        params,
        data,
        optimizer=optax.adam(lr),
        epochs=epochs,
        batch_size=100,
        key=jax.random.key(seed),
        param_transform=param_transform,
        progress=False,
    )
    return r.params


def _nm_where(path, leaf):
    return path.endswith("kernel") and leaf.shape[-2] % 4 == 0


def compressions(apply_fn, dense, ds, args, sparsity):
    """(name, params) for every compression; pruned variants are fine-tuned with their masks."""
    ft = dict(epochs=args.finetune_epochs, seed=1, lr=3e-4, n=args.train_subset)
    out = [("dense fp32", dense)]
    masks = pruning.magnitude_masks(dense, sparsity, where=r"kernel")
    pruned = _train(
        apply_fn,
        pruning.apply_masks(dense, masks),
        ds,
        param_transform=lambda p: pruning.apply_masks(p, masks),
        **ft,
    )
    pruned = pruning.apply_masks(pruned, masks)
    out.append(("pruned (float CSR)", pruned))
    out.append(
        ("pruned + int8 per-channel", quantization.quantize_params(pruned, bits=8, where=r"kernel"))
    )
    out.append(("pruned + clustered 4-bit", clustering.cluster(pruned, bits=4, where=r"kernel")))
    nm = pruning.nm_masks(dense, 2, 4, where=_nm_where)
    nm_params = _train(
        apply_fn,
        pruning.apply_masks(dense, nm),
        ds,
        param_transform=lambda p: pruning.apply_masks(p, nm),
        **ft,
    )
    nm_params = pruning.apply_masks(nm_params, nm)
    out.append(
        (
            "2:4 + 4-bit g32",
            quantization.quantize_params(
                nm_params, bits=4, group_size=32, where=r"kernel", group_fallback="per_channel"
            ),
        )
    )
    out.append(("4-bit per-channel", quantization.quantize_params(dense, bits=4, where=r"kernel")))
    out.append(("clustered 4-bit", clustering.cluster(dense, bits=4, where=r"kernel")))
    return out


def _latency(fn, x, reps) -> tuple[float, float]:
    for _ in range(10):
        fn(x)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e6
    return float(np.median(ts)), float(np.percentile(ts, 90))


def _batched(fn, x, bs=1000):
    return np.concatenate([np.asarray(fn(x[i : i + bs])) for i in range(0, len(x), bs)])


def measure(name, comp, apply_fn, params, ds, folder, args) -> dict:
    path = Path(folder) / f"{name}-{comp}.jcx".replace(" ", "_").replace("/", "_")
    info = save(path, apply_fn, params, ds.x_test[:4])
    rt = runtime.load(path, num_threads=1)
    assert rt.self_check().ok
    x1 = np.ascontiguousarray(ds.x_test[:1])
    rt_p50, rt_p90 = _latency(rt.run, x1, args.reps)
    s1 = onnx_session(to_onnx(path, batch_size=1), num_threads=1)
    ort_p50, ort_p90 = _latency(lambda x: s1.run(None, {"input": x}), x1, args.reps)
    xt, yt = ds.x_test[: args.test_n], ds.y_test[: args.test_n]
    bs = 1000 if len(xt) >= 1000 else len(xt)
    y_jax = _batched(lambda x: reference_output(apply_fn, params, x), xt, bs)
    y_rt = _batched(rt.run, xt, bs)
    sb = onnx_session(to_onnx(path, batch_size=bs), num_threads=1)
    y_ort = _batched(lambda x: sb.run(None, {"input": x})[0], xt, bs)
    scale = float(np.abs(y_jax).max())
    row = {
        "model": name,
        "compression": comp,
        "bytes": info.file_bytes,
        "bpw": info.bits_per_weight,
        "kernels": sorted(set(p.split("(")[0] for p in rt.plan.values())),
        "rt_p50": rt_p50,
        "rt_p90": rt_p90,
        "ort_p50": ort_p50,
        "ort_p90": ort_p90,
        "acc_jax": float(np.mean(y_jax.argmax(1) == yt)),
        "acc_rt": float(np.mean(y_rt.argmax(1) == yt)),
        "acc_ort": float(np.mean(y_ort.argmax(1) == yt)),
        "rel_rt": float(np.abs(y_rt - y_jax).max()) / scale,
        "rel_ort": float(np.abs(y_ort - y_jax).max()) / scale,
    }
    print(
        f"{name:14s} {comp:28s} {row['bytes']:>9d} B {row['bpw']:6.2f} b/w "
        f"rt {rt_p50:8.1f} us  ort {ort_p50:8.1f} us  acc {row['acc_jax']:.4f}/"
        f"{row['acc_rt']:.4f}/{row['acc_ort']:.4f}  rel {row['rel_rt']:.1e}/{row['rel_ort']:.1e}",
        flush=True,
    )
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--quick", action="store_true", help="tiny training and timing (smoke run)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not data_dir.is_absolute():
        data_dir = (ROOT / data_dir).resolve()
    args.epochs = (
        {"LeNet-300-100": 1, "LeNet-5": 1} if args.quick else {"LeNet-300-100": 8, "LeNet-5": 3}
    )
    args.finetune_epochs = 1
    args.train_subset = 5000 if args.quick else None
    args.reps = 30 if args.quick else 300
    args.test_n = 1000 if args.quick else 10000
    ds = load_dataset("mnist", data_dir=str(data_dir))
    rows = []
    t_start = time.perf_counter()
    specs = [
        ("LeNet-300-100", models.LeNet300100, 0.9),
        ("LeNet-5", models.LeNet5, {"conv1": 0.5, "conv2": 0.8, "fc1": 0.92, "fc2": 0.8}),
    ]
    with tempfile.TemporaryDirectory() as folder:
        for name, ctor, sparsity in specs:
            apply_fn, params = models.functional(ctor(rngs=nnx.Rngs(0)))
            t0 = time.perf_counter()
            dense = _train(
                apply_fn, params, ds, epochs=args.epochs[name], seed=0, n=args.train_subset
            )
            print(
                f"{name}: trained {args.epochs[name]} epochs in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            if isinstance(sparsity, dict):
                sparsity = pruning.explicit(sparsity, default=0.9)
            for comp, p in compressions(apply_fn, dense, ds, args, sparsity):
                rows.append(measure(name, comp, apply_fn, p, ds, folder, args))
    total = time.perf_counter() - t_start
    write(rows, args, total)


def write(rows, args, total) -> None:
    import onnxruntime as ort

    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("reproduce_export_quick.md" if args.quick else "reproduce_export.md")
    )
    lines = [
        "# Export: compressed models in the edge runtime and in ONNX Runtime (real MNIST)",
        "",
        "| model | compression | kernels (our runtime) | artifact bytes | bits/weight | "
        "runtime p50 / p90 (us) | ONNX Runtime p50 / p90 (us) | acc JAX | acc runtime | "
        "acc ORT | rel. err runtime / ORT |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['compression']} | {', '.join(r['kernels'])} | {r['bytes']:,} | "
            f"{r['bpw']:.2f} | {r['rt_p50']:.0f} / {r['rt_p90']:.0f} | "
            f"{r['ort_p50']:.0f} / {r['ort_p90']:.0f} | {100 * r['acc_jax']:.2f}% | "
            f"{100 * r['acc_rt']:.2f}% | {100 * r['acc_ort']:.2f}% | "
            f"{r['rel_rt']:.1e} / {r['rel_ort']:.1e} |"
        )
    e = args.epochs
    lines += [
        "",
        f"- Training: Adam 1e-3, batch 100, LeNet-300-100 {e['LeNet-300-100']} epochs, LeNet-5 "
        f"{e['LeNet-5']} epochs (brief: accuracy is below the papers' fully trained numbers); "
        f"pruned and 2:4 variants are fine-tuned {args.finetune_epochs} epoch (Adam 3e-4) with "
        "their masks; quantization is post-training (symmetric, per output channel or groups of "
        "32 along K); clustering is `jaxcompress.clustering.cluster` (linear init, 4 bits).",
        "- Pruning: LeNet-300-100 90% per layer; LeNet-5 conv1 50%, conv2 80%, fc1 92%, fc2 80% "
        "(magnitude, per layer). 2:4 applies to kernels whose input-channel axis is divisible by "
        "4 (not LeNet-5's conv1, which has one input channel and stays 4-bit per-channel dense).",
        "- Bits/weight: stored bytes of every rank >= 2 tensor (codes, indices, positions, "
        "scales, codebooks) x 8 / its element count; biases are float32 and excluded. Artifact "
        "bytes: the whole file (graph, biases, sample input/output, checksums included).",
        f"- Latency: batch 1, one thread (Numba kernels via `Runtime(num_threads=1)`, "
        "OPENBLAS/OMP_NUM_THREADS=1; ONNX Runtime `intra_op_num_threads=1`), median and p90 over "
        f"{args.reps} calls after 10 warm-up calls, one MNIST test image. ONNX models are built "
        "from the artifact (`jaxcompress.export.to_onnx`) with session options "
        f"{ORT_OPTIONS}.",
        f"- Accuracy on {args.test_n} MNIST test images; JAX = the model run with the same "
        "dequantized weights; rel. err = max |y - y_JAX| / max |y_JAX| over the test logits.",
        f"- Command: `flock /tmp/jaxcompress-bench.lock python benchmarks/reproduce_export.py"
        f"{' --quick' if args.quick else ''}` (total {total:.0f} s)",
        f"- Machine: {_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Versions: jaxcompress {jaxcompress.__version__}, jax {jax.__version__}, numpy "
        f"{np.__version__}, numba {__import__('numba').__version__}, onnxruntime "
        f"{ort.__version__}, onnx {__import__('onnx').__version__}, Python "
        f"{platform.python_version()}",
        f"- Date: {datetime.date.today().isoformat()}",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
