"""Han et al. 2015 on real MNIST: LeNet-300-100 and LeNet-5 pruned to ~92% (12x), and 2:4.

    flock /tmp/jaxcompress-bench.lock /work/venv/bin/python benchmarks/reproduce_han2015.py \
        --model lenet300
    flock /tmp/jaxcompress-bench.lock /work/venv/bin/python benchmarks/reproduce_han2015.py \
        --model lenet5

Protocol (one loop, ``jaxcompress.training.fit``, for every row):

1. dense pre-training: ``--epochs`` epochs of Adam at ``--lr`` (batch ``--batch-size``);
2. from that checkpoint, ``--prune-epochs`` more epochs with Adam and a cosine-decayed learning
   rate, in three branches that differ only by the last transform of the chain:
   * dense: nothing (the dense baseline, same total budget);
   * pruned: ``magnitude_pruning`` with Zhu & Gupta's cubic schedule over the first 2/3 of the
     phase (``frequency`` 100 steps) to Han's per-layer targets (``explicit`` distribution), then
     fine-tuning with the masks fixed (the transform keeps them);
   * 2:4 (LeNet-300-100 only): ``nm_pruning(2, 4)`` from the first step of the phase.

Writes ``benchmarks/results/reproduce_han2015_<model>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import flax
import jax
import optax
from flax import nnx

import jaxcompress
from jaxcompress import pruning
from jaxcompress.data import load_dataset
from jaxcompress.models import LeNet5, LeNet300100, functional
from jaxcompress.training import evaluate, fit

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent

# Han et al. 2015, Table 1/2 and Table 3-4: weights remaining per layer.
HAN = {
    "lenet300": {
        "layers": {"hidden/0/kernel": 0.08, "hidden/1/kernel": 0.09, "out/kernel": 0.26},
        "error": (1.64, 1.59),
        "compression": 12,
    },
    "lenet5": {
        "layers": {
            "conv1/kernel": 0.66,
            "conv2/kernel": 0.12,
            "fc1/kernel": 0.08,
            "fc2/kernel": 0.19,
        },
        "error": (0.80, 0.77),
        "compression": 12,
    },
}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["lenet300", "lenet5"], default="lenet300")
    ap.add_argument("--data-dir", default=str(REPO / ".." / "shared" / "data" / "mnist"))
    ap.add_argument("--epochs", type=int, default=None, help="dense pre-training epochs")
    ap.add_argument("--prune-epochs", type=int, default=None, help="epochs of each branch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--prune-frac",
        type=float,
        default=2 / 3,
        help="fraction of the phase over which sparsity ramps up (the rest fine-tunes)",
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-nm", action="store_true", help="skip the 2:4 branch")
    ap.add_argument("--quick", action="store_true", help="1+1 epochs on 6000 examples")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    defaults = {"lenet300": (10, 10), "lenet5": (4, 4)}[args.model]
    epochs = args.epochs if args.epochs is not None else defaults[0]
    prune_epochs = args.prune_epochs if args.prune_epochs is not None else defaults[1]

    ds = load_dataset("mnist", data_dir=args.data_dir)
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if args.quick:
        epochs, prune_epochs = 1, 1
        x_train, y_train = x_train[:6000], y_train[:6000]
    model = (LeNet300100 if args.model == "lenet300" else LeNet5)(rngs=nnx.Rngs(args.seed))
    apply_fn, params = functional(model)
    key = jax.random.key(args.seed)
    han = HAN[args.model]
    steps_per_epoch = x_train.shape[0] // args.batch_size
    t_start = time.perf_counter()

    def run(p, opt, n_epochs, k):
        t = time.perf_counter()
        res = fit(
            apply_fn,
            p,
            (x_train, y_train),
            optimizer=opt,
            epochs=n_epochs,
            batch_size=args.batch_size,
            key=k,
            progress=False,
        )
        return res, time.perf_counter() - t

    k_pre, k_phase = jax.random.split(key)
    pre, t_pre = run(params, optax.adam(args.lr), epochs, k_pre)
    acc_pre = evaluate(apply_fn, pre.params, x_test, y_test)
    print(
        f"dense pre-training: {epochs} epochs, {t_pre:.0f} s, test error {100 * (1 - acc_pre):.2f}%",
        flush=True,
    )

    phase_steps = prune_epochs * steps_per_epoch
    lr_sched = optax.cosine_decay_schedule(args.lr, phase_steps)
    end_step = max(1, int(args.prune_frac * phase_steps))
    targets = {k: 1.0 - v for k, v in han["layers"].items()}
    schedule = pruning.polynomial(
        max(targets.values()), begin_step=0, end_step=end_step, frequency=min(100, end_step)
    )
    branches = [
        ("dense (same loop)", None),
        (
            "magnitude, Zhu-Gupta cubic to Han's per-layer targets",
            pruning.magnitude_pruning(schedule, distribution=pruning.explicit(targets)),
        ),
    ]
    if args.model == "lenet300" and not args.no_nm:
        branches.append(("2:4 (N:M along the input axis)", pruning.nm_pruning(2, 4)))

    rows = []
    for name, tx in branches:
        opt = optax.adam(lr_sched) if tx is None else optax.chain(optax.adam(lr_sched), tx)
        res, secs = run(pre.params, opt, prune_epochs, k_phase)
        acc = evaluate(apply_fn, res.params, x_test, y_test)
        rep = pruning.sparsity_report(res.params)
        rows.append((name, 100 * (1 - acc), rep, secs))
        print(
            f"{name}: {prune_epochs} epochs, {secs:.0f} s, test error {100 * (1 - acc):.2f}%, "
            f"sparsity {rep.sparsity:.2%} ({rep.compression:.1f}x)",
            flush=True,
        )
        print(rep.table(), flush=True)

    total = time.perf_counter() - t_start
    dense_err = rows[0][1]
    lines = [
        f"# reproduce_han2015: {args.model} on MNIST",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared, run under the bench lock)",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, flax "
        f"{flax.__version__}, optax {optax.__version__}, jaxcompress {jaxcompress.__version__}",
        f"- command: `flock /tmp/jaxcompress-bench.lock python benchmarks/reproduce_han2015.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- data: MNIST IDX from `{args.data_dir}` ({x_train.shape[0]} train / {x_test.shape[0]} "
        "test images)",
        f"- protocol: {epochs} epochs dense Adam(lr={args.lr}), batch {args.batch_size}, seed "
        f"{args.seed}; then each branch {prune_epochs} epochs of Adam with cosine decay from "
        f"{args.lr}; pruning schedule: cubic (Zhu & Gupta), steps 0..{end_step} of "
        f"{phase_steps}, every {min(100, end_step)} steps, then fine-tuning with fixed masks",
        f"- dense pre-training: {t_pre:.0f} s, test error {100 * (1 - acc_pre):.2f}%; whole run "
        f"{total / 60:.1f} min",
        "",
        "| model | method | epochs (dense + phase) | test error | vs dense (points) | "
        "weights kept | compression | phase wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, err, rep, secs in rows:
        lines.append(
            f"| {args.model} | {name} | {epochs} + {prune_epochs} | {err:.2f}% | "
            f"{err - dense_err:+.2f} | {1 - rep.sparsity:.2%} | {rep.compression:.1f}x | "
            f"{secs:.0f} s |"
        )
    lines.append(
        f"| {args.model} | Han et al. 2015 (paper) | Caffe | {han['error'][0]:.2f}% -> "
        f"{han['error'][1]:.2f}% | {han['error'][1] - han['error'][0]:+.2f} | | "
        f"{han['compression']}x | |"
    )
    lines += [
        "",
        "Per-layer weights kept (pruned run) beside Han et al.:",
        "",
        "| layer | shape | kept (ours) | kept (Han) |",
        "|---|---|---:|---:|",
    ]
    pruned_rep = rows[1][2]
    for leaf in pruned_rep.leaves:
        lines.append(
            f"| {leaf.path} | {leaf.shape} | {leaf.kept:.2%} | "
            f"{han['layers'].get(leaf.path, float('nan')):.0%} |"
        )
    if len(rows) > 2:
        lines += ["", "2:4 run per layer:", "", "| layer | kept |", "|---|---:|"]
        for leaf in rows[2][2].leaves:
            lines.append(f"| {leaf.path} | {leaf.kept:.2%} |")
    gap = rows[1][1] - dense_err
    verdict = "met" if gap <= 0.1 else "MISSED"
    lines += ["", f"Target (pruned within 0.1 points of dense): {verdict} ({gap:+.2f} points)."]
    if len(rows) > 2:
        gap24 = rows[2][1] - dense_err
        lines.append(f"2:4 vs dense: {gap24:+.2f} points.")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else ROOT / "results" / f"reproduce_han2015_{args.model}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
