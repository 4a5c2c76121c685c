"""The ``jaxcompress`` console command.

``jaxcompress`` (or ``jaxcompress train``) trains a reference model and prints its test accuracy;
with no options it trains the 1-D CNN on MNIST-1D (generated offline) in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jaxcompress._core import JaxCompressError

__all__ = ["main"]

_MODELS = {
    "mnist1d": ("cnn1d", "mlp1d", "transformer"),
    "mnist": ("lenet300100", "lenet5"),
    "fashion_mnist": ("lenet300100", "lenet5"),
}


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxcompress",
        description="Compress JAX/Flax networks and emulate them on edge devices.",
    )
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser(
        "train", help="train a reference model and print its test accuracy (default)"
    )
    for parser in (p, t):
        parser.add_argument("--dataset", default="mnist1d", choices=sorted(_MODELS))
        parser.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist)")
        parser.add_argument(
            "--model", default=None, help="cnn1d | mlp1d | transformer | lenet300100 | lenet5"
        )
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument("--lr", type=float, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--no-progress", action="store_true")
    return p


def _train(args: argparse.Namespace) -> dict:
    import jax
    import optax
    from flax import nnx

    from jaxcompress import models
    from jaxcompress.data import load_dataset
    from jaxcompress.training import evaluate, fit

    model_name = args.model or _MODELS[args.dataset][0]
    if model_name not in _MODELS[args.dataset]:
        raise SystemExit(
            f"jaxcompress: --model {model_name!r} does not fit --dataset {args.dataset!r}; "
            f"choose one of {_MODELS[args.dataset]}"
        )
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    rngs = nnx.Rngs(args.seed)
    ctor = {
        "cnn1d": models.CNN1D,
        "mlp1d": models.MLP1D,
        "transformer": models.TinyTransformer,
        "lenet300100": models.LeNet300100,
        "lenet5": models.LeNet5,
    }[model_name]
    apply_fn, params = models.functional(ctor(rngs=rngs))
    mnist1d = args.dataset == "mnist1d"
    epochs = args.epochs if args.epochs is not None else (150 if mnist1d else 10)
    lr = args.lr if args.lr is not None else (1e-2 if mnist1d and model_name == "cnn1d" else 1e-3)
    t0 = time.perf_counter()
    result = fit(
        apply_fn,
        params,
        ds,
        optimizer=optax.adam(lr),
        epochs=epochs,
        batch_size=args.batch_size,
        key=jax.random.key(args.seed),
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - t0
    acc = evaluate(apply_fn, result.params, ds.x_test, ds.y_test)
    return {
        "dataset": args.dataset,
        "model": model_name,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": lr,
        "seed": args.seed,
        "test_accuracy": acc,
        "train_seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxcompress`` command; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    try:
        out = _train(args)
    except JaxCompressError as e:
        print(f"jaxcompress: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['model']} on {out['dataset']}: test accuracy {out['test_accuracy']:.2%} "
            f"({out['epochs']} epochs, {out['train_seconds']} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
