"""Run one shipped study recipe over several seeds and tabulate mean and spread beside the paper.

    nice -n 5 python benchmarks/study_seeds.py han2015_lenet5 --seeds 0 1 2 \
        --data-dir ../shared/data/mnist --out runs/han2015_lenet5_seeds

Each seed is a full `jaxcompress run` of the recipe with ``study.seed`` replaced, in its own run
folder ``<out>/seed<k>`` (resumable: rerunning the command skips finished stages). The table
(``benchmarks/results/study_<recipe>_seeds.md``) lists, per seed, the dense and final test error,
the weights kept and the compression in weights (dense count / kept count), then the mean and
the sample standard deviation over seeds, and the recipe's ``[paper.values]`` beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

from jaxcompress.study import load_recipe, run_study
from jaxcompress.study._recipe import shipped_recipe_path
from jaxcompress.study._util import atomic_write, machine, versions

HERE = Path(__file__).resolve().parent


def _row(rep: dict) -> dict:
    stages = {s["stage"]: s for s in rep["stages"]}
    dense, final = stages["student"], rep["stages"][-1]
    kept = 1.0 - final["sparsity"]
    return {
        "dense_error_pct": dense["error_pct"],
        "final_error_pct": final["error_pct"],
        "weights_kept_pct": 100 * kept,
        "compression_x": 1.0 / kept if kept else float("inf"),
        "n_test": final["n_test"],
    }


def _mean_sd(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs):.2f}"


def render(name: str, rows: dict, walls: dict, paper: dict, command: str) -> str:
    m = machine()
    v = versions()
    lines = [
        f"# Study `{name}` over {len(rows)} seeds",
        "",
        f"- command: `{command}`",
        f"- date: {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {m['cpu']}, {m['cores']} cores, shared with other jobs (run under nice -n 5)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- test errors on the full test set (n = "
        f"{next(iter(rows.values()))['n_test']}); compression = dense weights / kept weights "
        "(all parameters, biases included)",
        "",
        "| seed | dense error % | pruned error % | weights kept % | compression | wall time |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s, r in rows.items():
        lines.append(
            f"| {s} | {r['dense_error_pct']:.2f} | {r['final_error_pct']:.2f} | "
            f"{r['weights_kept_pct']:.2f} | {r['compression_x']:.1f}x | {walls[s]:.0f} s |"
        )
    keys = ("dense_error_pct", "final_error_pct", "weights_kept_pct", "compression_x")
    agg = {k: _mean_sd([r[k] for r in rows.values()]) for k in keys}
    lines.append(
        f"| mean +- sd | {agg['dense_error_pct']} | {agg['final_error_pct']} | "
        f"{agg['weights_kept_pct']} | {agg['compression_x']} | |"
    )
    if paper:
        kept = paper.get("weights_kept_pct")
        lines.append(
            f"| paper | {paper.get('dense_error_pct', '-')} | {paper.get('final_error_pct', '-')} | "
            f"{kept if kept is not None else '-'} | "
            f"{f'{100 / kept:.0f}x' if kept else '-'} | |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe", help="a shipped recipe name")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="parent folder of the per-seed run folders")
    args = ap.parse_args(argv)
    recipe = load_recipe(shipped_recipe_path(args.recipe))
    out = args.out or os.path.join("runs", f"{args.recipe}_seeds")
    rows, walls = {}, {}
    for s in args.seeds:
        t0 = time.perf_counter()
        rep = run_study(
            recipe.with_value("study.seed", s),
            os.path.join(out, f"seed{s}"),
            data_dir=args.data_dir,
            progress=False,
        )
        walls[s] = time.perf_counter() - t0
        rows[s] = _row(rep)
        print(f"seed {s}: {rows[s]} ({walls[s]:.0f} s)", flush=True)
    paper = recipe["paper"]["values"] if "paper" in recipe else {}
    command = "python benchmarks/study_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(args.recipe, rows, walls, paper, command)
    path = HERE / "results" / f"study_{args.recipe}_seeds.md"
    atomic_write(str(path), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
