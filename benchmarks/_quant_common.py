"""Shared helpers of the quantization/clustering reproduction scripts (not a public module).

Float models are trained once and cached as ``.npz`` in ``~/.cache/jaxcompress`` (override with
``$JAXCOMPRESS_CACHE``), keyed by model name, epochs and seed, so every locked run reuses them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from jaxcompress._core import named_leaves
from jaxcompress.data import load_dataset
from jaxcompress.models import LeNet5, LeNet300100, functional
from jaxcompress.training import evaluate, fit

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("JAXCOMPRESS_CACHE", Path.home() / ".cache" / "jaxcompress"))
MODELS = {"lenet5": LeNet5, "lenet300100": LeNet300100}


def data_dir_default() -> str:
    return str((REPO / ".." / "shared" / "data" / "mnist").resolve())


def load_mnist(data_dir: str, quick: bool = False):
    ds = load_dataset("mnist", data_dir=data_dir)
    if quick:
        return (ds.x_train[:6000], ds.y_train[:6000]), (ds.x_test[:2000], ds.y_test[:2000])
    return (ds.x_train, ds.y_train), (ds.x_test, ds.y_test)


def save_params(path: Path, params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {p: np.asarray(x) for p, x in named_leaves(params)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_params(path: Path, like):
    z = np.load(path)
    leaves, treedef = jax.tree_util.tree_flatten(like)
    paths = [p for p, _ in named_leaves(like)]
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(z[p]) for p in paths])


def float_model(name: str, train, test, *, epochs: int, seed: int = 0, quick: bool = False):
    """``(apply_fn, params, accuracy, info)``: trained once, then loaded from the cache."""
    apply_fn, params = functional(MODELS[name](rngs=nnx.Rngs(seed)))
    tag = f"{name}_e{epochs}_s{seed}{'_quick' if quick else ''}.npz"
    path = CACHE / tag
    info = {"cache": str(path)}
    if path.exists():
        params = load_params(path, params)
        info["train_seconds"] = "cached"
    else:
        steps = epochs * (len(train[0]) // 128)
        sched = optax.cosine_decay_schedule(1e-3, steps)
        t0 = time.perf_counter()
        res = fit(
            apply_fn,
            params,
            train,
            optimizer=optax.adam(sched),
            epochs=epochs,
            batch_size=128,
            key=jax.random.key(seed),
            progress=False,
        )
        info["train_seconds"] = f"{time.perf_counter() - t0:.0f}"
        params = res.params
        save_params(path, params)
    acc = evaluate(apply_fn, params, *test)
    return apply_fn, params, acc, info


def machine() -> str:
    import flax

    from jaxcompress_kernels.machine import cpu_model

    cpu = cpu_model()

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, jax {jax.__version__}, "
        f"flax {flax.__version__}, optax {optax.__version__}, numpy {np.__version__}"
    )


def header(script: str) -> list[str]:
    try:
        commit = subprocess.check_output(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], text=True
        ).strip()
    except Exception:
        commit = "?"
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {machine()}",
        f"- commit: {commit}",
        f"- command: `{' '.join(['python', 'benchmarks/' + script] + sys.argv[1:])}`",
    ]
