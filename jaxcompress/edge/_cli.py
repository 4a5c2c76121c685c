"""Command-line form of `jaxcompress.edge.benchmark`: ``main(argv) -> exit code``.

Meant to be wired as ``jaxcompress edge ARTIFACT ...``; runnable today as
``python -m jaxcompress.edge._cli ARTIFACT ...``.

Example::

    python -m jaxcompress.edge._cli lenet5.jcx --device rpi4 --device stm32h7a3 \\
        --dataset mnist --data-dir ../shared/data/mnist --limit 2000 --link 1 --link 10
"""

from __future__ import annotations

import argparse
import sys

from jaxcompress._core import JaxCompressError

__all__ = ["main", "build_parser"]


def build_parser(prog: str = "jaxcompress edge") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Measure an artifact on this host with the edge runtime and project it on "
        "devices (calibrated cost model, labelled projected, with each profile's calibration "
        "status and the roofline lower bound); optionally plan an edge-cloud split.",
    )
    p.add_argument("artifact", help="artifact file written by jaxcompress.export.save")
    p.add_argument(
        "--device",
        action="append",
        default=None,
        help="profile to project on (repeatable; default rpi4 and stm32h7a3)",
    )
    p.add_argument("--profiles", default=None, help="extra JSON profile file")
    p.add_argument("--list-devices", action="store_true", help="list profiles and exit")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="kernel threads")
    p.add_argument(
        "--dataset",
        default=None,
        choices=("mnist", "fashion_mnist", "mnist1d"),
        help="measure test accuracy on this dataset",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="test examples for accuracy")
    p.add_argument(
        "--float-accuracy",
        type=float,
        default=None,
        help="the float model's accuracy, for the relative (99%% of float) figure",
    )
    p.add_argument(
        "--link",
        type=float,
        action="append",
        default=None,
        help="plan a split over a link of this many Mbit/s (repeatable)",
    )
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--split-edge", default="rpi4", help="edge profile for the split")
    p.add_argument(
        "--quantize-cut", action="store_true", help="send int8 activations at intermediate cuts"
    )
    p.add_argument("--json", default=None, help="write the report as JSON to this file")
    p.add_argument("--markdown", default=None, help="write the report as Markdown to this file")
    return p


def main(argv=None) -> int:
    """Runs the edge benchmark; prints the Markdown report. Returns 0, or 2 on bad input."""
    args = build_parser().parse_args(argv)
    from jaxcompress.edge._profiles import available_profiles, get_profile
    from jaxcompress.edge._report import benchmark
    from jaxcompress.edge._roofline import calibration_status
    from jaxcompress.edge._split import Link
    from jaxcompress_kernels.errors import ArtifactError

    try:
        if args.list_devices:
            for name in available_profiles(args.profiles):
                if name == "host":
                    print("host: this machine, calibrated by measurement")
                    continue
                p = get_profile(name, path=args.profiles)
                print(f"{name}: {p.description} [{calibration_status(p)[1]}]")
            return 0
        devices = [
            get_profile(d, path=args.profiles) for d in (args.device or ["rpi4", "stm32h7a3"])
        ]
        x = y = None
        if args.dataset:
            from jaxcompress.data import load_dataset

            ds = load_dataset(args.dataset, data_dir=args.data_dir)
            n = args.limit or len(ds.x_test)
            x, y = ds.x_test[:n], ds.y_test[:n]
        links = [
            Link.mbit(m, rtt_ms=args.rtt_ms, jitter_ms=args.jitter_ms) for m in (args.link or [])
        ]
        rep = benchmark(
            args.artifact,
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
            split_accuracy_n=min(len(x), 1000) if x is not None and links else 0,
        )
    except (JaxCompressError, ArtifactError, OSError) as e:
        print(f"jaxcompress edge: {e}", file=sys.stderr)
        return 2
    md = rep.to_markdown()
    print(md)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(rep.to_json() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
