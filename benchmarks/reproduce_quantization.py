"""LeNet-5 on real MNIST: PTQ (int8 per-channel, int4 per-group), QAT (int4, 2-bit), sensitivity.

Targets (issue 5): int8 per-channel PTQ within 0.1 points of float; int4 per-group (g=32) PTQ
within 0.5; int4 QAT within 0.2; 2-bit QAT reported. The float model is trained once and cached
(``~/.cache/jaxcompress``). Run under the shared lock:

    flock /tmp/jaxcompress-bench.lock /work/venv/bin/python benchmarks/reproduce_quantization.py

Writes ``benchmarks/results/reproduce_quantization.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quant_common as common  # noqa: E402

from jaxcompress.clustering import size_report  # noqa: E402
from jaxcompress.quantization import (  # noqa: E402
    dequantize_params,
    fake_quantize,
    mixed_precision,
    ptq,
    quantize_params,
    sensitivity,
)
from jaxcompress.training import evaluate, fit  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=common.data_dir_default())
    ap.add_argument("--model", default="lenet5", choices=sorted(common.MODELS))
    ap.add_argument("--float-epochs", type=int, default=12)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat2-epochs", type=int, default=2)
    ap.add_argument("--note", default="", help="a line added to the results header")
    ap.add_argument("--quick", action="store_true", help="small subset, 1 epoch: a smoke run")
    ap.add_argument("--skip-qat", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.float_epochs, args.qat_epochs, args.qat2_epochs = 1, 1, 1

    t_all = time.perf_counter()
    train, test = common.load_mnist(args.data_dir, quick=args.quick)
    apply_fn, params, f_acc, info = common.float_model(
        args.model, train, test, epochs=args.float_epochs, quick=args.quick
    )
    print(f"float {args.model}: {100 * f_acc:.2f}% ({info})", flush=True)
    x_test, y_test = test
    rows = []

    def row(name, acc, tree, seconds, note="", target=None):
        rep = size_report(tree)
        delta = 100 * (acc - f_acc)
        ok = "" if target is None else ("yes" if -delta <= target + 1e-9 else "**no**")
        rows.append(
            f"| {name} | {100 * acc:.2f} | {delta:+.2f} | "
            f"{'' if target is None else f'>= -{target}'} | {ok} | {rep.bits_per_weight:.2f} | "
            f"{rep.nbytes / 1024:.1f} | {seconds:.0f} | {note} |"
        )
        print(rows[-1], flush=True)
        write(partial=True)

    rep = None

    def write(partial=False):
        lines = [
            f"# reproduce_quantization ({args.model}, MNIST{' QUICK subset' if args.quick else ''})",
            "",
        ]
        if partial:
            lines += ["**PARTIAL: the run had not finished when this was written.**", ""]
        lines += common.header("reproduce_quantization.py")
        lines += [f"- note: {args.note}"] if args.note else []
        lines += [
            f"- total wall time: {time.perf_counter() - t_all:.0f} s (float model cache: `{info['cache']}`)",
            "- accuracy on the 10,000 MNIST test images (quick: 2,000); delta in percentage points vs"
            " float; bits/weight and KiB from `size_report` over *all* params (biases stay float32;"
            " scales 32 bit, affine zero points 8 bit)",
            "",
            "| model | test acc % | delta (pts) | target | met | bits/weight | KiB | seconds | notes |",
            "|---|---:|---:|---|---|---:|---:|---:|---|",
            *rows,
            "",
        ]
        if rep is not None:
            lines += [
                "## Per-layer sensitivity (first 2,000 test images, only that layer quantized,"
                " per-channel symmetric)",
                "",
                rep.table(),
                "",
            ]
        out.write_text("\n".join(lines))

    out = (
        Path(args.out)
        if args.out
        else common.REPO
        / "benchmarks"
        / "results"
        / ("reproduce_quantization" + ("_quick" if args.quick else "") + ".md")
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    row(
        "float32",
        f_acc,
        params,
        0,
        f"trained {args.float_epochs} epochs (adam, cosine), {info['train_seconds']} s",
    )

    # --- PTQ -----------------------------------------------------------------------------------
    cal = [train[0][i : i + 100] for i in range(0, 1000, 100)]
    for name, kw, target in [
        ("PTQ int8 per-channel (weights)", dict(bits=8), 0.1),
        (
            "PTQ int4 per-group g=32 (weights)",
            dict(bits=4, group_size=32, group_fallback="per_channel"),
            0.5,
        ),
        (
            "PTQ int4 per-group g=32, MSE clip",
            dict(bits=4, group_size=32, group_fallback="per_channel", calibration="mse"),
            0.5,
        ),
        *(
            [("PTQ int4 per-group g=25 (every layer grouped)", dict(bits=4, group_size=25), 0.5)]
            if args.model == "lenet5"
            else []
        ),
        ("PTQ int4 per-channel", dict(bits=4), None),
        (
            "PTQ int8 weights + int8 activations (static, minmax)",
            dict(bits=8, activation_bits=8),
            0.1,
        ),
    ]:
        t0 = time.perf_counter()
        res = ptq(apply_fn, params, cal, **kw)
        acc = evaluate(res.apply_fn, res.params, x_test, y_test)
        note = ""
        if kw.get("group_fallback") == "per_channel":
            grouped = [p for p, x in _qleaves(res.params) if x.group_size is not None]
            note = (
                f"grouped: {', '.join(grouped) or 'none'}; other kernels (K not divisible by 32)"
                " per-channel"
            )
        if kw.get("activation_bits"):
            note = f"{len(res.ranges.ranges)} activation sites, 10 calibration batches of 100"
        row(name, acc, res.params, time.perf_counter() - t0, note, target)

    # --- sensitivity + mixed precision --------------------------------------------------------
    t0 = time.perf_counter()
    nonlocal_rep = sensitivity(apply_fn, params, x_test[:2000], y_test[:2000], bits=(2, 3, 4, 8))
    rep = nonlocal_rep
    choice = mixed_precision(rep, avg_bits=3.0)
    mp = quantize_params(params, bits=choice)
    acc = evaluate(apply_fn, dequantize_params(mp), x_test, y_test)
    row(
        "PTQ mixed precision (avg <= 3 bits incl. scales)",
        acc,
        mp,
        time.perf_counter() - t0,
        ", ".join(f"{k}: {v}" for k, v in choice.items()),
    )

    # --- QAT ------------------------------------------------------------------------------------
    if not args.skip_qat:
        for name, fq, epochs, target in [
            ("QAT int4 per-channel", fake_quantize(bits=4), args.qat_epochs, 0.2),
            ("QAT 2-bit (ternary) per-channel", fake_quantize(bits=2), args.qat2_epochs, None),
        ]:
            t0 = time.perf_counter()
            steps = epochs * (len(train[0]) // 128)
            res = fit(
                apply_fn,
                params,
                train,
                optimizer=optax.adam(
                    optax.cosine_decay_schedule(1e-4 if "int4" in name else 3e-4, steps)
                ),
                epochs=epochs,
                batch_size=128,
                key=jax.random.key(1),
                param_transform=fq,
                progress=False,
            )
            qtree = fq.quantize(res.params)
            acc = evaluate(apply_fn, dequantize_params(qtree), x_test, y_test)
            acc_fq = evaluate(apply_fn, fq(res.params), x_test, y_test)
            assert acc == acc_fq, (acc, acc_fq)  # what you train is what you deploy
            row(
                name,
                acc,
                qtree,
                time.perf_counter() - t0,
                f"{epochs} epochs from float, adam + cosine; deployed QuantizedArray tree",
                target,
            )

    write()
    print(f"wrote {out}")


def _qleaves(tree):
    from jaxcompress._core import key_path_str
    from jaxcompress.quantization import QuantizedArray

    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, QuantizedArray)
    )
    return [(key_path_str(p), x) for p, x in flat if isinstance(x, QuantizedArray)]


if __name__ == "__main__":
    main()
