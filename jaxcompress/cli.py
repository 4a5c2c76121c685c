"""The ``jaxcompress`` console command.

Subcommands::

    jaxcompress run [RECIPE] [--out DIR] [--dataset mnist --data-dir DIR] [--check]
        a whole compression study from a TOML recipe (a file, or a shipped recipe's name; none:
        the embedded default study on MNIST-1D); writes a resumable run folder with report.md,
        report.json, plots and the artifact
    jaxcompress recipes                       list the shipped recipes
    jaxcompress inspect SOURCE [--stage NAME] graph, encodings, sizes; checksums verified
    jaxcompress bench SOURCE [--stage NAME] [--device rpi4 ...] [--link MBIT ...]
        latency measured here + projected on device profiles (+ split plan with --link)
    jaxcompress export SOURCE [--onnx OUT.onnx] [--out OUT.jcx] [--stage NAME]
        an artifact (or a run folder's model) to ONNX or a verified copy
    jaxcompress data download mnist|fashion_mnist --to DIR
        fetch the IDX files (checksummed, written atomically)
    jaxcompress train [--dataset ...]         train a reference model, print its accuracy

SOURCE is an artifact file or a run folder written by ``jaxcompress run`` (its final model, or the
artifact of ``--stage NAME``). ``jaxcompress`` alone prints this help; ``--version`` the version.

Ctrl-C ends a command with one line and exit code 130; for ``run`` the line names the stage that
was running (the run folder keeps every finished stage: the same command resumes).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time

from jaxcompress._core import (
    JaxCompressError,
    JaxCompressValueError,
    StageInterrupted,
    atomic_write,
)

__all__ = ["main"]

_MODELS = {
    "mnist1d": ("cnn1d", "mlp1d", "transformer"),
    "mnist": ("lenet300100", "lenet5"),
    "fashion_mnist": ("lenet300100", "lenet5"),
}
_IDX_DATASETS = ("mnist", "fashion_mnist")

# `jaxcompress bench` defaults: those of a study's [edge] section (docs/study.md), so a run's
# edge report and a bench of its artifact measure the same thing.
BENCH_DEFAULTS = {
    "devices": ("rpi4", "stm32h7a3"),
    "threads": 1,
    "warmup": 10,
    "iters": 100,
    "rtt_ms": 20.0,
    "split_edge": "rpi4",
    "limit": 1000,
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("jaxcompress")
    except Exception:  # pragma: no cover - not installed: the source tree's version
        import jaxcompress

        return jaxcompress.__version__


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def _show_progress(args) -> bool:
    # Bars only on a terminal: in a log file they leave carriage returns and escape codes.
    return not args.no_progress and sys.stderr.isatty()


# -- parser -----------------------------------------------------------------------------------
def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxcompress",
        description="Compress JAX/Flax networks and emulate them on edge devices.",
        epilog="Start with `jaxcompress run` (the default study on MNIST-1D, offline, about two "
        "minutes). `jaxcompress COMMAND --help` describes each command.",
    )
    p.add_argument("--version", action="version", version=f"jaxcompress {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    sub.add_parser("recipes", help="list the shipped recipes")
    i = sub.add_parser("inspect", help="verify an artifact and print its graph, encodings, sizes")
    _add_source(i)
    i.add_argument("--json", action="store_true", help="print JSON")
    _add_bench(sub)
    e = sub.add_parser("export", help="export an artifact or a run folder's model (ONNX / copy)")
    _add_source(e)
    e.add_argument("--onnx", default=None, help="write an ONNX model here")
    e.add_argument("--batch-size", type=int, default=1, help="ONNX batch size")
    e.add_argument("--out", default=None, help="copy the (verified) artifact here")
    _add_data(sub)
    _add_train(sub)
    return p


def _add_source(parser) -> None:
    parser.add_argument(
        "source", help="an artifact file, or a run folder written by `jaxcompress run`"
    )
    parser.add_argument(
        "--stage",
        default=None,
        help="with a run folder: that stage's artifact (default: the final model)",
    )


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="run a compression study from a TOML recipe")
    r.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="recipe file, or the name of a shipped recipe (see `jaxcompress recipes`); "
        "default: the embedded default study on MNIST-1D",
    )
    r.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    r.add_argument("--dataset", default=None, choices=("mnist1d", *_IDX_DATASETS))
    r.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist)")
    r.add_argument(
        "--no-progress", action="store_true", help="no progress bars (never drawn off a terminal)"
    )
    r.add_argument("--quiet", action="store_true", help="no stage log lines")
    r.add_argument(
        "--check",
        action="store_true",
        help="validate the recipe (and that its data folder holds the IDX files) and exit",
    )


def _add_bench(sub) -> None:
    d = BENCH_DEFAULTS
    b = sub.add_parser(
        "bench",
        help="benchmark an artifact (measured here, projected on devices)",
        description="Measure an artifact on this host with the edge runtime and project it on "
        "device profiles (calibrated cost model, labelled projected, with each profile's calibration "
        "status and the roofline lower bound); optionally measure accuracy and plan an "
        "edge-cloud split. Defaults are those of a study's [edge] section.",
    )
    b.add_argument("source", nargs="?", help="an artifact file, or a run folder")
    b.add_argument(
        "--stage", default=None, help="with a run folder: that stage's artifact (default: final)"
    )
    b.add_argument(
        "--device",
        action="append",
        default=None,
        help=f"device profile (repeatable; default {' and '.join(d['devices'])})",
    )
    b.add_argument("--profiles", default=None, help="extra JSON profile file")
    b.add_argument("--list-devices", action="store_true", help="list device profiles and exit")
    b.add_argument("--threads", type=int, default=d["threads"], help="kernel threads")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--warmup", type=int, default=d["warmup"])
    b.add_argument("--iters", type=int, default=d["iters"])
    b.add_argument("--max-seconds", type=float, default=None)
    b.add_argument(
        "--dataset",
        default=None,
        choices=("mnist1d", *_IDX_DATASETS),
        help="also measure test accuracy in the runtime",
    )
    b.add_argument("--data-dir", default=None)
    b.add_argument(
        "--limit",
        type=int,
        default=d["limit"],
        help="test examples for accuracy (the first N; the split plan uses the same N; 0: all)",
    )
    b.add_argument(
        "--float-accuracy",
        type=float,
        default=None,
        help="the float model's accuracy, for the relative figure",
    )
    b.add_argument(
        "--link",
        type=float,
        action="append",
        default=None,
        help="plan an edge-cloud split over a link of this many Mbit/s (repeatable)",
    )
    b.add_argument("--rtt-ms", type=float, default=d["rtt_ms"])
    b.add_argument("--jitter-ms", type=float, default=0.0)
    b.add_argument("--split-edge", default=d["split_edge"], help="edge profile for the split")
    b.add_argument(
        "--quantize-cut", action="store_true", help="send int8 activations at intermediate cuts"
    )
    b.add_argument("--json", default=None, help="also write the report as JSON here")
    b.add_argument("--markdown", default=None, help="also write the report as Markdown here")


def _add_data(sub) -> None:
    d = sub.add_parser("data", help="fetch datasets (MNIST, Fashion-MNIST IDX files)")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser(
        "download",
        help="download a dataset's four IDX files (checksummed, written atomically)",
        description="Download the four .gz IDX files into a folder. Each file is checked "
        "against its published MD5 and the IDX format before it is renamed into place; files "
        "already present with the right checksum are kept.",
    )
    dl.add_argument("name", choices=_IDX_DATASETS)
    dl.add_argument("--to", required=True, metavar="DIR", help="folder to fill (created)")
    dl.add_argument("--mirror", default=None, help="base URL of another mirror")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a reference model and print its test accuracy")
    t.add_argument("--dataset", default="mnist1d", choices=sorted(_MODELS))
    t.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist)")
    t.add_argument(
        "--model", default=None, help="cnn1d | mlp1d | transformer | lenet300100 | lenet5"
    )
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--no-progress", action="store_true")


# -- commands ---------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    import jax
    import optax
    from flax import nnx

    from jaxcompress import models
    from jaxcompress.data import load_dataset
    from jaxcompress.training import evaluate, fit

    model_name = args.model or _MODELS[args.dataset][0]
    if model_name not in _MODELS[args.dataset]:
        raise JaxCompressValueError(
            f"--model {model_name!r} does not fit --dataset {args.dataset!r}; "
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
        progress=_show_progress(args),
    )
    seconds = time.perf_counter() - t0
    acc = evaluate(apply_fn, result.params, ds.x_test, ds.y_test)
    out = {
        "dataset": args.dataset,
        "model": model_name,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": lr,
        "seed": args.seed,
        "test_accuracy": acc,
        "train_seconds": round(seconds, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['model']} on {out['dataset']}: test accuracy {out['test_accuracy']:.2%} "
            f"({out['epochs']} epochs, {out['train_seconds']} s)"
        )
    return 0


def _resolve_recipe(src: str | None) -> str | None:
    """A recipe argument -> a file: an existing path, else a shipped recipe's name."""
    from jaxcompress.study import shipped_recipe_path, shipped_recipes

    if src is None or os.path.exists(src):
        return src
    names = shipped_recipes()
    if src in names:
        return shipped_recipe_path(src)
    stem = os.path.basename(src)
    stem = stem[:-5] if stem.endswith(".toml") else stem
    raise JaxCompressValueError(
        f"recipe {src}: file not found, and no shipped recipe is called {stem!r}; "
        f"{_did_you_mean(stem, names)}`jaxcompress recipes` lists the shipped recipes"
    )


def _check_data(recipe, args) -> str:
    """``--check``: the folder a recipe's dataset needs exists and holds the four IDX files."""
    from jaxcompress.data import IDX_FILES

    study = recipe.config("study")
    dataset = args.dataset or study.dataset
    if dataset not in _IDX_DATASETS:
        return f"dataset {dataset} (generated offline)"
    data_dir = args.data_dir or study.data_dir
    fetch = f"fetch it with `jaxcompress data download {dataset} --to DIR`"
    if not data_dir:
        raise JaxCompressValueError(
            f"recipe {recipe.source}: dataset {dataset!r} needs its IDX folder: set "
            f"study.data_dir or pass --data-dir DIR ({fetch})"
        )
    if not os.path.isdir(data_dir):
        raise JaxCompressValueError(
            f"recipe {recipe.source}: data folder {data_dir!r} for {dataset!r} does not exist "
            f"({fetch})"
        )
    missing = [
        s
        for s in IDX_FILES.values()
        if not any(os.path.isfile(os.path.join(data_dir, s + ext)) for ext in (".gz", ""))
    ]
    if missing:
        raise JaxCompressValueError(
            f"recipe {recipe.source}: data folder {data_dir!r} lacks {', '.join(missing)} "
            f"(.gz or raw) ({fetch.replace('DIR', data_dir)})"
        )
    return f"dataset {dataset} in {data_dir}"


def _run(args) -> int:
    from jaxcompress.study import load_recipe, run_study

    recipe = load_recipe(_resolve_recipe(args.recipe))
    if args.check:
        data = _check_data(recipe, args)
        print(f"recipe {recipe.source}: valid ({recipe.name}); {data}")
        return 0
    rep = run_study(
        recipe,
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        progress=_show_progress(args),
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


def _artifact_path(source: str, stage: str | None, command: str) -> str:
    """SOURCE (+ ``--stage``) -> an artifact file: the file itself, or a run folder's artifact."""
    if not os.path.isdir(source):
        if stage:
            raise JaxCompressValueError(f"{command}: --stage needs a run folder as SOURCE")
        return source
    if not os.path.isfile(os.path.join(source, "run.json")):
        raise JaxCompressValueError(f"{command}: {source!r} is a folder but not a jaxcompress run")
    if stage is None:
        path = os.path.join(source, "model.jcx")
        if not os.path.isfile(path):
            raise JaxCompressValueError(
                f"{command}: run folder {source!r} has no model.jcx yet (its export stage has "
                "not finished: rerun `jaxcompress run` to complete it)"
            )
        return path
    art = os.path.join(source, "artifacts")
    stages = sorted(
        f[:-4] for f in (os.listdir(art) if os.path.isdir(art) else []) if f.endswith(".jcx")
    )
    if stage not in stages:
        listed = ", ".join(stages) if stages else "none yet"
        raise JaxCompressValueError(
            f"{command}: run folder {source!r} has no artifact for stage {stage!r}; "
            f"{_did_you_mean(stage, stages)}stages with artifacts: {listed}"
        )
    return os.path.join(art, f"{stage}.jcx")


def _inspect(args) -> int:
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    path = _artifact_path(args.source, args.stage, "inspect")
    a = _artifact.load(path)  # verifies version, manifest and every part's sha256
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
    from jaxcompress.edge import (
        Link,
        available_profiles,
        benchmark,
        calibration_status,
        get_profile,
    )

    if args.list_devices:
        for name in available_profiles(args.profiles):
            if name == "host":
                print("host: this machine, calibrated by measurement")
                continue
            profile = get_profile(name, path=args.profiles)
            print(f"{name}: {profile.description} [{calibration_status(profile)[1]}]")
        return 0
    if args.source is None:
        raise JaxCompressValueError("bench: give an artifact file or a run folder (SOURCE)")
    path = _artifact_path(args.source, args.stage, "bench")
    devices = [
        get_profile(d, path=args.profiles) for d in (args.device or BENCH_DEFAULTS["devices"])
    ]
    x = y = None
    if args.dataset:
        from jaxcompress.data import load_dataset

        ds = load_dataset(args.dataset, data_dir=args.data_dir)
        n = min(args.limit, len(ds.x_test)) if args.limit else len(ds.x_test)
        x, y = ds.x_test[:n], ds.y_test[:n]
    links = [Link.mbit(m, rtt_ms=args.rtt_ms, jitter_ms=args.jitter_ms) for m in (args.link or [])]
    rep = benchmark(
        path,
        x=x,
        y=y,
        float_accuracy=args.float_accuracy,
        devices=devices,
        batch=args.batch,
        warmup=args.warmup,
        iters=args.iters,
        max_seconds=args.max_seconds,
        num_threads=args.threads,
        links=links,
        split_edge=get_profile(args.split_edge, path=args.profiles),
        quantize_cut=args.quantize_cut,
        split_accuracy_n=len(x) if x is not None and links else 0,
    )
    md = rep.to_markdown()
    print(md)
    if args.markdown:
        atomic_write(args.markdown, md + "\n")
    if args.json:
        atomic_write(args.json, rep.to_json() + "\n")
    return 0


def _export(args) -> int:
    from jaxcompress_kernels import artifact as _artifact

    src = _artifact_path(args.source, args.stage, "export")
    if not (args.onnx or args.out):
        raise JaxCompressValueError("export: give --onnx OUT.onnx and/or --out OUT.jcx")
    a = _artifact.load(src)  # refuse a bad file before writing anything
    if args.out:
        with open(src, "rb") as f:
            atomic_write(args.out, f.read())
        print(f"artifact {src} ({a.file_bytes} bytes, verified) -> {args.out}")
    if args.onnx:
        from jaxcompress.export import save_onnx

        n = save_onnx(src, args.onnx, batch_size=args.batch_size)
        print(f"ONNX model ({n} bytes, batch {args.batch_size}) -> {args.onnx}")
    return 0


def _data(args) -> int:
    from jaxcompress.data import download_idx

    download_idx(
        args.name,
        args.to,
        mirror=args.mirror,
        timeout=args.timeout,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(
        f"{args.name}: four IDX files in {args.to}; use --dataset {args.name} --data-dir {args.to}"
    )
    return 0


_COMMANDS = {
    "run": _run,
    "recipes": lambda a: _recipes(),
    "inspect": _inspect,
    "bench": _bench,
    "export": _export,
    "data": _data,
    "train": _train,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxcompress`` command; returns the process exit code.

    Exit codes: 0 success; 1 an artifact failed its self-check; 2 bad input (a one-line error on
    stderr); 130 interrupted (Ctrl-C).
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    name = args.command
    try:
        return _COMMANDS[name](args)
    except KeyboardInterrupt as e:
        # one line, no traceback; on a terminal start it on a fresh line (after ^C or a bar)
        lead = "\n" if sys.stderr.isatty() else ""
        if isinstance(e, StageInterrupted):
            what = f"interrupted in stage {e.stage}; rerun the same command to resume"
        else:
            what = "interrupted" + ("; rerun the same command to resume" if name == "run" else "")
        print(f"{lead}jaxcompress {name}: {what}", file=sys.stderr)
        return 130
    except (JaxCompressError, OSError) as e:
        print(f"jaxcompress {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
