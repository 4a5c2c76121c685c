"""The ``jaxcompress`` console command.

Subcommands::

    jaxcompress run [RECIPE] [--out DIR] [--dataset mnist --data-dir DIR]
        a whole compression study from a TOML recipe (a file, or a shipped recipe's name; none:
        the embedded default study on MNIST-1D); writes a resumable run folder with report.md,
        report.json, plots and the artifact
    jaxcompress recipes                       list the shipped recipes
    jaxcompress inspect ARTIFACT              graph, encodings, sizes; checksums verified
    jaxcompress bench ARTIFACT --device rpi4 --threads 1
        latency measured here + projected on device profiles (+ split plan with --link)
    jaxcompress export SOURCE [--onnx OUT.onnx] [--out OUT.jcx] [--stage NAME]
        an artifact (or a run folder's final / named stage artifact) to ONNX or a copy
    jaxcompress train                         train a reference model, print its accuracy

``jaxcompress`` with no subcommand trains the 1-D CNN on MNIST-1D (same as ``train``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from jaxcompress._core import JaxCompressError, JaxCompressValueError

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
    _add_study_commands(sub)
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


def _add_study_commands(sub) -> None:
    r = sub.add_parser("run", help="run a compression study from a TOML recipe")
    r.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="recipe file, or the name of a shipped recipe (see `jaxcompress recipes`); "
        "default: the embedded default study on MNIST-1D",
    )
    r.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    r.add_argument("--dataset", default=None, choices=("mnist1d", "mnist", "fashion_mnist"))
    r.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--quiet", action="store_true", help="no stage log lines")
    r.add_argument("--check", action="store_true", help="validate the recipe and exit")

    sub.add_parser("recipes", help="list the shipped recipes")

    i = sub.add_parser("inspect", help="verify an artifact and print its graph, encodings, sizes")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser("bench", help="benchmark an artifact (measured here, projected on devices)")
    b.add_argument("artifact")
    b.add_argument(
        "--device", action="append", default=None, help="device profile (repeatable; default rpi4)"
    )
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--iters", type=int, default=100)
    b.add_argument(
        "--dataset",
        default=None,
        choices=("mnist1d", "mnist", "fashion_mnist"),
        help="also measure test accuracy in the runtime",
    )
    b.add_argument("--data-dir", default=None)
    b.add_argument("--limit", type=int, default=1000, help="test examples for accuracy")
    b.add_argument(
        "--link",
        type=float,
        action="append",
        default=None,
        help="plan an edge-cloud split over a link of this many Mbit/s (repeatable)",
    )
    b.add_argument("--rtt-ms", type=float, default=20.0)
    b.add_argument("--json", default=None, help="also write the report as JSON here")
    b.add_argument("--list-devices", action="store_true")

    e = sub.add_parser("export", help="export an artifact or a run folder's model (ONNX / copy)")
    e.add_argument("source", help="an artifact file or a run folder written by `jaxcompress run`")
    e.add_argument(
        "--stage",
        default=None,
        help="with a run folder: the stage's artifact (default: the final model)",
    )
    e.add_argument("--onnx", default=None, help="write an ONNX model here")
    e.add_argument("--batch-size", type=int, default=1, help="ONNX batch size")
    e.add_argument("--out", default=None, help="copy the (verified) artifact here")


def _run(args) -> int:
    from jaxcompress.study import load_recipe, run_study, shipped_recipe_path, shipped_recipes

    src = args.recipe
    if src is not None and not os.path.exists(src) and src in shipped_recipes():
        src = shipped_recipe_path(src)
    recipe = load_recipe(src)
    if args.check:
        print(f"recipe {recipe.source}: valid ({recipe.name})")
        return 0
    rep = run_study(
        recipe,
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        quiet=args.quiet,
    )
    final = rep["stages"][-1]
    out_dir = args.out or os.path.join(
        "runs", f"{recipe.name}{'-' + args.dataset if args.dataset else ''}"
    )
    print(
        f"{rep['name']}: {final['stage']} test accuracy {final['accuracy']:.2%}, "
        f"sparsity {final['sparsity']:.1%}, {final['weight_bits_per_weight']:.2f} bits/weight; "
        f"report: {os.path.join(out_dir, 'report.md')}"
    )
    return 0


def _recipes() -> int:
    from jaxcompress.study import load_recipe, shipped_recipe_path, shipped_recipes

    for name in shipped_recipes():
        r = load_recipe(shipped_recipe_path(name), check_profiles=False)
        print(f"{name}: {r['study']['description'] or r.name}")
    return 0


def _inspect(args) -> int:
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    a = _artifact.load(args.artifact)  # verifies version, manifest and every part's sha256
    rt = _runtime.Runtime(a)
    chk = rt.self_check()
    ops: dict[str, int] = {}
    for n in a.graph["nodes"]:
        ops[n["op"]] = ops.get(n["op"], 0) + 1
    tensors = []
    for name, t in a.tensors.items():
        tensors.append(
            {
                "name": name,
                "encoding": t.encoding,
                "shape": list(t.shape),
                "stored_bytes": t.stored_bytes,
                "bits_per_value": 8 * t.stored_bytes / t.size if t.size else 0.0,
                "kernel": rt.plan.get(name),
            }
        )
    out = {
        "artifact": a.path,
        "file_bytes": a.file_bytes,
        "format_version": a.manifest.get("format_version"),
        "checksums": "verified (manifest sha256 and every part's sha256)",
        "input_shape": list(a.sample_input.shape),
        "output_shape": list(a.sample_output.shape),
        "graph_ops": ops,
        "nodes": len(a.graph["nodes"]),
        "tensors": tensors,
        "self_check": {"ok": chk.ok, "max_abs": chk.max_abs, "rel": chk.rel},
        "description": a.manifest.get("description", ""),
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0 if chk.ok else 1
    print(
        f"artifact {a.path}: {a.file_bytes} bytes, format version {out['format_version']}; "
        f"checksums verified"
    )
    if out["description"]:
        print(f"description: {out['description']}")
    print(
        f"input {tuple(a.sample_input.shape)} -> output {tuple(a.sample_output.shape)}; "
        f"{out['nodes']} nodes: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
    )
    print()
    print("| tensor | encoding | shape | stored bytes | bits/value | kernel |")
    print("|---|---|---|---:|---:|---|")
    for t in tensors:
        print(
            f"| {t['name']} | {t['encoding']} | {tuple(t['shape'])} | {t['stored_bytes']} | "
            f"{t['bits_per_value']:.2f} | {t['kernel'] or '-'} |"
        )
    print()
    print(
        f"self-check against the bundled output: {'passed' if chk.ok else 'FAILED'} "
        f"(max |diff| {chk.max_abs:.3g}, relative {chk.rel:.3g})"
    )
    return 0 if chk.ok else 1


def _bench(args) -> int:
    from jaxcompress.edge import Link, available_profiles, benchmark, get_profile

    if args.list_devices:
        for name in available_profiles():
            print(name)
        return 0
    devices = [get_profile(d) for d in (args.device or ["rpi4"])]
    x = y = None
    if args.dataset:
        from jaxcompress.data import load_dataset

        ds = load_dataset(args.dataset, data_dir=args.data_dir)
        x, y = ds.x_test[: args.limit], ds.y_test[: args.limit]
    links = [Link.mbit(m, rtt_ms=args.rtt_ms) for m in (args.link or [])]
    rep = benchmark(
        args.artifact,
        x=x,
        y=y,
        devices=devices,
        batch=args.batch,
        warmup=args.warmup,
        iters=args.iters,
        num_threads=args.threads,
        links=links,
        split_edge=devices[0],
        split_accuracy_n=min(len(x), 200) if x is not None and links else 0,
    )
    print(rep.to_markdown())
    if args.json:
        from jaxcompress.study._stages import atomic_write

        atomic_write(args.json, rep.to_json() + "\n")
    return 0


def _export(args) -> int:
    import shutil

    from jaxcompress_kernels import artifact as _artifact

    src = args.source
    if os.path.isdir(src):
        if not os.path.isfile(os.path.join(src, "run.json")):
            raise JaxCompressValueError(f"export: {src!r} is a folder but not a jaxcompress run")
        src = (
            os.path.join(src, "artifacts", f"{args.stage}.jcx")
            if args.stage
            else os.path.join(src, "model.jcx")
        )
        if not os.path.isfile(src):
            raise JaxCompressValueError(f"export: no artifact {src!r} in that run")
    elif args.stage:
        raise JaxCompressValueError("export: --stage needs a run folder as SOURCE")
    if not (args.onnx or args.out):
        raise JaxCompressValueError("export: give --onnx OUT.onnx and/or --out OUT.jcx")
    a = _artifact.load(src)  # refuse a bad file before writing anything
    if args.out:
        shutil.copyfile(src, args.out)
        print(f"artifact {src} ({a.file_bytes} bytes, verified) -> {args.out}")
    if args.onnx:
        from jaxcompress.export import save_onnx

        n = save_onnx(src, args.onnx, batch_size=args.batch_size)
        print(f"ONNX model ({n} bytes, batch {args.batch_size}) -> {args.onnx}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxcompress`` command; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    commands = {
        "run": _run,
        "inspect": _inspect,
        "bench": _bench,
        "export": _export,
        "recipes": lambda a: _recipes(),
    }
    if args.command in commands:
        try:
            return commands[args.command](args)
        except JaxCompressError as e:
            print(f"jaxcompress {args.command}: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"jaxcompress {args.command}: error: {e}", file=sys.stderr)
            return 2
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
