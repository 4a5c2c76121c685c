"""Dense baselines trained by jaxcompress.training.fit, beside the published numbers.

* LeNet-300-100 on real MNIST (Han et al. 2015: 1.64% test error; target here <= 2.0%).
* The 1-D CNN on MNIST-1D (Greydanus 2020: 94% test accuracy; target here >= 90%).

Usage (from the repository root):
    python benchmarks/reproduce_baselines.py [--data-dir ../shared/data/mnist] [--quick]
Writes benchmarks/results/reproduce_baselines.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import jax
import optax
from flax import nnx

import jaxcompress
from jaxcompress import models
from jaxcompress.data import load_dataset
from jaxcompress.training import evaluate, fit

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


def run(name, ctor, ds, *, epochs, lr, batch_size, seed):
    apply_fn, params = models.functional(ctor(rngs=nnx.Rngs(seed)))
    steps = epochs * (ds.x_train.shape[0] // batch_size)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    t0 = time.perf_counter()
    r = fit(
        apply_fn,
        params,
        ds,
        optimizer=opt,
        epochs=epochs,
        batch_size=batch_size,
        key=jax.random.key(seed),
        progress=True,
    )
    secs = time.perf_counter() - t0
    acc = evaluate(apply_fn, r.params, ds.x_test, ds.y_test)
    print(f"{name}: test accuracy {acc:.4f} ({epochs} epochs, {secs:.1f} s)", flush=True)
    return acc, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--quick", action="store_true", help="1 epoch each (smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "reproduce_baselines.md")
    )
    args = ap.parse_args()

    mnist = load_dataset("mnist", data_dir=args.data_dir)
    m1d = load_dataset("mnist1d")
    e_mnist, e_1d = (1, 1) if args.quick else (20, 150)
    acc_l, s_l = run(
        "LeNet-300-100",
        models.LeNet300100,
        mnist,
        epochs=e_mnist,
        lr=1e-3,
        batch_size=100,
        seed=args.seed,
    )
    acc_c, s_c = run(
        "CNN1D", models.CNN1D, m1d, epochs=e_1d, lr=1e-2, batch_size=100, seed=args.seed
    )
    cmd = "python benchmarks/reproduce_baselines.py" + (" --quick" if args.quick else "")
    table = f"""# Dense baselines (jaxcompress.training.fit)

| model | data | epochs | optimizer | test error | test accuracy | published | target | met | wall time |
|---|---|---:|---|---:|---:|---|---|---|---:|
| LeNet-300-100 | MNIST (60k/10k) | {e_mnist} | Adam 1e-3, cosine, batch 100 | {1 - acc_l:.2%} | {acc_l:.2%} | 1.64% error (Han et al. 2015) | <= 2.0% error | {"yes" if 1 - acc_l <= 0.02 else "NO"} | {s_l:.0f} s |
| CNN1D | MNIST-1D (4k/1k) | {e_1d} | Adam 1e-2, cosine, batch 100 | {1 - acc_c:.2%} | {acc_c:.2%} | 94% accuracy (Greydanus 2020) | >= 90% accuracy | {"yes" if acc_c >= 0.90 else "NO"} | {s_c:.0f} s |

- Command: `{cmd}` (seed {args.seed})
- Machine: {_cpu()}, {jax.device_count()} JAX CPU device(s), {platform.system()} {platform.release()}
- Versions: jaxcompress {jaxcompress.__version__}, jax {jax.__version__}, flax {__import__("flax").__version__}, optax {optax.__version__}, Python {platform.python_version()}
- Date: {datetime.date.today().isoformat()}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
