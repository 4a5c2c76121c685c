"""Run one shipped study recipe over several seeds and tabulate mean and spread beside the paper.

    nice -n 10 python benchmarks/study_seeds.py han2015_lenet5 --seeds 0 1 2 \
        --data-dir ../shared/data/mnist --out runs/han2015_lenet5_seeds

Each seed is a full `jaxcompress run` of the recipe with ``study.seed`` replaced, in its own run
folder ``<out>/seed<k>`` (resumable: rerunning the command skips finished stages). The table
(``benchmarks/results/study_<recipe>_seeds.md``) lists, per seed, the dense and final test error,
the kernel weights kept and the compression in weights (dense count / kept count) -- or, for a
distillation recipe (teacher -> student -> distill), the teacher's, the student-alone and the
distilled student's test errors and how many fewer errors distillation makes -- then the mean and
the sample standard deviation over seeds, and the recipe's ``[paper.values]`` beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

from jaxcompress.study import load_recipe, run_study
from jaxcompress.study._recipe import shipped_recipe_path
from jaxcompress.study._util import atomic_write, machine, versions

HERE = Path(__file__).resolve().parent


def _is_distillation(rep: dict) -> bool:
    """A teacher -> student -> distill study with no compression stage after it."""
    return [s["stage"] for s in rep["stages"]] == ["teacher", "student", "distill"]


def _stage_seconds(rep: dict) -> float:
    """Seconds spent in the stages, as each stage recorded them when it ran (so a resumed run
    still reports the time its stages took, not the seconds of the resuming invocation)."""
    return float(sum(rep["timings_s"].values()))


def _seed_wall(folder: str, rep: dict, seconds: float) -> float:
    """The wall seconds of the invocation that ran the seed's stages: this one's when it ran
    them all (recorded in ``<folder>/seed_wall.json``), else the one recorded there earlier."""
    path = os.path.join(folder, "seed_wall.json")
    if not rep["resumed_stages"]:
        atomic_write(path, json.dumps({"wall_seconds": seconds}) + "\n")
        return seconds
    try:
        with open(path, encoding="utf-8") as f:
            return float(json.load(f)["wall_seconds"])
    except (OSError, ValueError, KeyError):
        return float("nan")  # rendered as "nan s": the first invocation's wall is unknown


def _row(rep: dict) -> dict:
    stages = {s["stage"]: s for s in rep["stages"]}
    if _is_distillation(rep):
        alone, kd = stages["student"]["errors"], stages["distill"]["errors"]
        return {
            "teacher_errors": stages["teacher"]["errors"],
            "student_errors": alone,
            "distilled_errors": kd,
            "fewer_pct": 100 * (1 - kd / alone) if alone else 0.0,
            "n_test": stages["distill"]["n_test"],
        }
    dense, final = stages["student"], rep["stages"][-1]
    kept = 1.0 - final["sparsity"]
    return {
        "dense_error_pct": dense["error_pct"],
        "final_error_pct": final["error_pct"],
        "weights_kept_pct": 100 * kept,
        "compression_x": 1.0 / kept if kept else float("inf"),
        "n_test": final["n_test"],
    }


def _mean_sd(xs: list[float], digits: int = 2) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} +- {statistics.stdev(xs):.{digits}f}"


def _header(name: str, rows: dict, command: str, nice: int) -> list[str]:
    m = machine()
    v = versions()
    return [
        f"# Study `{name}` over {len(rows)} seeds",
        "",
        f"- command: `{command}`" + (f" (run under `nice -n {nice}`)" if nice else ""),
        f"- date: {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {m['cpu']}, {m['cores']} cores, shared with other jobs",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- stage time: the seconds the seed's stages took (training, export, edge), as recorded "
        "when each stage ran; wall time: the seconds of the invocation of this command that ran "
        "the seed's stages (stage time plus data loading and the report)",
    ]


def render_distillation(name: str, rows: dict, times: dict, paper: dict, command: str, nice=0):
    """Teacher, student alone and distilled student test errors per seed, mean +- sd, paper."""
    n = next(iter(rows.values()))["n_test"]
    lines = _header(name, rows, command, nice) + [
        f"- test errors out of the full test set (n = {n}); fewer errors = 1 - distilled / alone "
        "(the alone and distilled students share the init, optimizer, schedule and epochs)",
        "",
        "| seed | teacher errors | student alone errors | distilled errors | fewer errors "
        "| stage time | wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, r in rows.items():
        st, wall = times[s]
        lines.append(
            f"| {s} | {r['teacher_errors']} | {r['student_errors']} | {r['distilled_errors']} | "
            f"{r['fewer_pct']:.1f}% | {st:.0f} s | {wall:.0f} s |"
        )
    keys = ("teacher_errors", "student_errors", "distilled_errors")
    agg = {k: _mean_sd([r[k] for r in rows.values()], 1) for k in keys}
    fewer = _mean_sd([r["fewer_pct"] for r in rows.values()], 1)
    lines.append(
        f"| mean +- sd | {agg['teacher_errors']} | {agg['student_errors']} | "
        f"{agg['distilled_errors']} | {fewer}% | | |"
    )
    if paper:
        t, a, d = (paper.get(k) for k in keys)
        cells = [f"{x:g}" if x is not None else "-" for x in (t, a, d)]
        pf = f"{100 * (1 - d / a):.0f}%" if a and d else "-"
        lines.append(f"| paper | {' | '.join(cells)} | {pf} | | |")
    lines.append("")
    return "\n".join(lines)


def render(name: str, rows: dict, times: dict, paper: dict, command: str, nice: int = 0) -> str:
    """Dense and final test error, weights kept and compression per seed, mean +- sd, paper."""
    lines = _header(name, rows, command, nice) + [
        "- test errors on the full test set (n = "
        f"{next(iter(rows.values()))['n_test']}); weights = kernel weights (conv and dense "
        "kernels; biases not counted, as in Han et al. 2015); compression = dense weights / "
        "kept (nonzero) weights",
        "",
        "| seed | dense error % | pruned error % | weights kept % | compression | stage time "
        "| wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, r in rows.items():
        st, wall = times[s]
        lines.append(
            f"| {s} | {r['dense_error_pct']:.2f} | {r['final_error_pct']:.2f} | "
            f"{r['weights_kept_pct']:.2f} | {r['compression_x']:.2f}x | {st:.0f} s | {wall:.0f} s |"
        )
    keys = ("dense_error_pct", "final_error_pct", "weights_kept_pct", "compression_x")
    agg = {k: _mean_sd([r[k] for r in rows.values()]) for k in keys}
    lines.append(
        f"| mean +- sd | {agg['dense_error_pct']} | {agg['final_error_pct']} | "
        f"{agg['weights_kept_pct']} | {agg['compression_x']}x | | |"
    )
    if paper:
        kept = paper.get("weights_kept_pct")
        lines.append(
            f"| paper | {paper.get('dense_error_pct', '-')} | {paper.get('final_error_pct', '-')} | "
            f"{kept if kept is not None else '-'} | "
            f"{f'{100 / kept:.0f}x' if kept else '-'} | | |"
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
    rows, times, distillation = {}, {}, False
    for s in args.seeds:
        t0 = time.perf_counter()
        rep = run_study(
            recipe.with_value("study.seed", s),
            os.path.join(out, f"seed{s}"),
            data_dir=args.data_dir,
            progress=False,
        )
        wall = _seed_wall(os.path.join(out, f"seed{s}"), rep, time.perf_counter() - t0)
        times[s] = (_stage_seconds(rep), wall)
        rows[s] = _row(rep)
        distillation = _is_distillation(rep)
        print(f"seed {s}: {rows[s]} ({wall:.0f} s wall)", flush=True)
    paper = recipe["paper"]["values"] if "paper" in recipe else {}
    command = "python benchmarks/study_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    nice = os.nice(0)
    text = (render_distillation if distillation else render)(
        args.recipe, rows, times, paper, command, nice
    )
    path = HERE / "results" / f"study_{args.recipe}_seeds.md"
    atomic_write(str(path), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
