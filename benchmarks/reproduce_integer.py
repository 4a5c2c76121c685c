"""Full-integer LeNet-5 on real MNIST: float, fake-quant, JAX integer reference, our runtime and
ONNX Runtime, on the same artifact.

LeNet-5 is trained as in ``reproduce_export.py`` (its ``_train``: Adam 1e-3, batch 100, 3 epochs,
seed 0), quantized post-training with ``ptq(..., activation_bits=8)`` (int8 symmetric per-channel
weights, 8-bit affine activations with min/max observers on calibration images), exported with
``jaxcompress.export.save(..., integer=True)`` and run:

- float: the trained model in JAX;
- fake-quant: ``ptq``'s ``apply_fn`` in JAX (float arithmetic on the quantization grids);
- JAX integer: ``quantization.integer_reference`` on the artifact (int8/int32 ``jnp`` ops);
- runtime: ``jaxcompress_kernels.runtime.Runtime`` on the artifact (integer kernels);
- ONNX Runtime: ``export.to_onnx`` of the artifact (QLinearConv, int8 MaxPool, QDQ).

It also counts test logits where the runtime differs from the JAX integer reference (must be 0),
the largest ONNX Runtime difference in output steps, and the gap between the integer and the
fake-quant logits in output steps against ``fake_quant_gap_bound``.

Usage (from the repository root):
    flock /tmp/jaxcompress-bench.lock python benchmarks/reproduce_integer.py \
        --data-dir ../shared/data/mnist [--quick]
Writes benchmarks/results/reproduce_integer.md (``reproduce_integer_quick.md`` with --quick).
"""

from __future__ import annotations

import os

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
from flax import nnx  # noqa: E402

import jaxcompress  # noqa: E402
from jaxcompress import export, models, quantization  # noqa: E402
from jaxcompress.data import load_dataset  # noqa: E402
from jaxcompress_kernels import artifact, runtime  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_export import _batched, _cpu, _train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--quick", action="store_true", help="1 epoch on 5000 images, 1000 test")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=1000, help="calibration images")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not data_dir.is_absolute():
        data_dir = (ROOT / data_dir).resolve()
    epochs = 1 if args.quick else args.epochs
    n_train = 5000 if args.quick else None
    test_n = 1000 if args.quick else 10000
    t_start = time.perf_counter()
    ds = load_dataset("mnist", data_dir=str(data_dir))
    apply_fn, params = models.functional(models.LeNet5(rngs=nnx.Rngs(0)))
    t0 = time.perf_counter()
    params = _train(apply_fn, params, ds, epochs=epochs, seed=0, n=n_train)
    print(f"trained {epochs} epoch(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    # calibration: the first images of the training set, 10 batches
    cal = np.array_split(np.asarray(ds.x_train[: args.calibration], np.float32), 10)
    r = quantization.ptq(apply_fn, params, cal, activation_bits=8)
    xt, yt = np.asarray(ds.x_test[:test_n], np.float32), np.asarray(ds.y_test[:test_n])
    fwd = jax.jit(apply_fn)
    fq = jax.jit(r.apply_fn)
    y_float = _batched(lambda x: fwd(params, x), xt)
    y_fq = _batched(lambda x: fq(r.params, x), xt)
    rows = {"float (JAX)": y_float, "fake-quant (JAX, ptq)": y_fq}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lenet5_int8.jcx")
        t0 = time.perf_counter()
        info = export.save(
            path, r.apply_fn, r.params, xt[:4], integer=True, calibration_batches=cal
        )
        t_export = time.perf_counter() - t0
        art = artifact.load(path)
        ref = quantization.integer_reference(art)
        y_int = _batched(ref, xt)
        rt = runtime.Runtime(art, num_threads=1)
        y_rt = _batched(rt.run, xt)
        sess = export.onnx_session(export.to_onnx(art, batch_size=1000), num_threads=1)
        y_ort = _batched(lambda x: sess.run(None, {"input": x})[0], xt)
        plan = getattr(rt, "plan", None)
        kernels = sorted({str(p).split("(")[0] for p in plan.values()}) if plan else []
        bound = quantization.fake_quant_gap_bound(ref)
    rows["JAX integer reference"] = y_int
    rows["runtime (integer kernels)"] = y_rt
    rows["ONNX Runtime (QLinearConv/QDQ)"] = y_ort
    deq = [n for n in art.graph["nodes"] if n["op"] == "dequantize"][-1]
    s_out = art.graph["quant"][deq["in"][0]]["scale"]
    acc = {k: float(np.mean(v.argmax(1) == yt)) for k, v in rows.items()}
    rt_mismatch = int(np.count_nonzero(y_rt != y_int))
    ort_steps = float(np.max(np.abs(y_ort - y_int)) / s_out)
    gap = np.abs(y_int - y_fq).max(1) / s_out
    total = time.perf_counter() - t_start
    for k, v in acc.items():
        print(f"{k:34s} {100 * v:.2f}%", flush=True)
    print(
        f"runtime != JAX integer: {rt_mismatch} of {y_int.size} logits; ORT max "
        f"{ort_steps:.2f} steps; gap to fake-quant max {gap.max():.2f} / median "
        f"{np.median(gap):.2f} steps (bound {bound:.1f})",
        flush=True,
    )
    write(
        args,
        acc,
        info,
        rt_mismatch,
        ort_steps,
        gap,
        bound,
        s_out,
        kernels,
        epochs,
        n_train,
        test_n,
        t_export,
        total,
        art,
    )


def write(
    args,
    acc,
    info,
    rt_mismatch,
    ort_steps,
    gap,
    bound,
    s_out,
    kernels,
    epochs,
    n_train,
    test_n,
    t_export,
    total,
    art,
) -> None:
    import onnxruntime as ort

    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("reproduce_integer_quick.md" if args.quick else "reproduce_integer.md")
    )
    f = acc["float (JAX)"]
    lines = [
        "# Full-integer LeNet-5 on real MNIST (int8 activations, int8 weights, int32 biases)",
        "",
        f"| model run | test accuracy ({test_n} images) | vs float (points) |",
        "|---|---:|---:|",
    ]
    for k, v in acc.items():
        lines.append(f"| {k} | {100 * v:.2f}% | {100 * (v - f):+.2f} |")
    worst = min(acc[k] for k in list(acc)[2:])
    verdict = "within" if abs(worst - f) <= 0.001 + 1e-12 else "NOT within"
    lines += [
        "",
        f"- Target: full-integer within 0.1 points of float (TFLite's full-integer LeNet-5: "
        f"98.86% vs 98.86% float). Here: the full-integer runs are {verdict} 0.1 points "
        f"(worst {100 * (worst - f):+.2f}).",
        f"- Runtime vs JAX integer reference: {rt_mismatch} differing logits of "
        f"{test_n * 10} (bit-exact when 0). ONNX Runtime vs JAX integer: at most "
        f"{ort_steps:.2f} output steps (output scale {s_out:.4g}).",
        f"- Integer vs fake-quant logits: max {gap.max():.2f}, median {np.median(gap):.2f}, "
        f"99th percentile {np.quantile(gap, 0.99):.2f} output steps; derived worst-case bound "
        f"`fake_quant_gap_bound` = {bound:.1f} steps (valid inside the calibrated ranges; "
        "docs/integer.md).",
        f"- Graph: {dict(sorted(info.graph_ops.items()))}; runtime kernels: "
        f"{', '.join(kernels) if kernels else 'n/a'}; artifact {info.file_bytes:,} bytes; "
        f"export {t_export:.1f} s.",
        f"- Training: `reproduce_export._train` (Adam 1e-3, batch 100, seed 0), {epochs} "
        f"epoch(s){' on the first 5000 images' if n_train else ''}. PTQ: "
        "`ptq(apply_fn, params, cal, activation_bits=8)` (int8 symmetric per-channel weights, "
        f"8-bit affine activations, min/max observers) on the first {args.calibration} training "
        "images in 10 batches; the same batches calibrate the logits' range at export "
        "(`calibration_batches=`).",
        f"- Command: `flock /tmp/jaxcompress-bench.lock python benchmarks/reproduce_integer.py "
        f"--data-dir {args.data_dir}{' --quick' if args.quick else ''}` (total {total:.0f} s)",
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
