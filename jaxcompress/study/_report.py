"""The study report: one dict (``report.json``) and its Markdown rendering (``report.md``).

Every number comes from the stages' outputs (``{stage: metrics}``, as their markers hold them)
and the run's bookkeeping (`RunInfo`); published numbers are only ever taken from the recipe's
``[paper]`` section and printed beside ours, labelled as the paper's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxcompress.study._recipe import PAPER_METRICS
from jaxcompress.study._util import machine, now, versions

__all__ = ["RunInfo", "build_report", "to_markdown"]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The run's bookkeeping: when the folder was created, each stage's seconds (in run order),
    the stages read back from the folder, and this invocation's wall time."""

    created: str | None
    timings: Mapping[str, float]
    resumed: tuple[str, ...] | list[str]
    total_seconds: float


def _stage_rows(sm: Mapping[str, dict], chain) -> list[dict]:
    edge = sm.get("edge", {})
    per_stage = edge.get("per_stage", {})
    exp = sm.get("export", {})
    rows = []
    for name in (["teacher"] if "teacher" in sm else []) + list(chain):
        m = sm[name]
        row = {
            "stage": name,
            "accuracy": m["accuracy"],
            "error_pct": m["error_pct"],
            "errors": m["errors"],
            "n_test": m["n_test"],
            "sparsity": m["sparsity"],
            "weight_bits_per_weight": m["weight_bits_per_weight"],
            "storage_bytes": m["storage_bytes"],
            "storage_bytes_huffman": m["storage_bytes_huffman"],
            "fp32_bytes": m["fp32_bytes"],
            "params": m["params"],
            "settings": m.get("settings", {}),
        }
        if name in exp:
            row["artifact_bytes"] = exp[name]["file_bytes"]
            row["artifact_weight_bytes"] = exp[name]["weight_bytes"]
            row["artifact_bits_per_weight"] = exp[name]["bits_per_weight"]
            row["encodings"] = exp[name]["encodings"]
            if "tensors" in exp[name]:
                row["tensors"] = exp[name]["tensors"]
        if name in per_stage:
            ps = per_stage[name]
            lat = ps["latency_ms"]
            row["latency_p10_ms"] = lat.get("p10")
            row["latency_p50_ms"] = lat["p50"]
            row["latency_p90_ms"] = lat["p90"]
            row["projected_ms"] = ps["projected_ms"]
            row["arena_bytes"] = ps["memory"]["arena_bytes"]
        rows.append(row)
    return rows


def _summary(rep: dict) -> dict | None:
    """Final model against the teacher (sizes and latencies as ratios, accuracy in points)."""
    rows = {r["stage"]: r for r in rep["stages"]}
    t, f = rows.get("teacher"), rep["stages"][-1]
    if t is None or "artifact_bytes" not in t or "artifact_bytes" not in f:
        return None
    out = {
        "baseline": "teacher",
        "final_stage": f["stage"],
        "accuracy_teacher": t["accuracy"],
        "accuracy_final": f["accuracy"],
        "accuracy_points_vs_teacher": 100 * (f["accuracy"] - t["accuracy"]),
        "n_test": f["n_test"],
        "artifact_bytes_teacher": t["artifact_bytes"],
        "artifact_bytes_final": f["artifact_bytes"],
        "times_smaller_than_teacher": t["artifact_bytes"] / f["artifact_bytes"],
    }
    if "latency_p50_ms" in t and "latency_p50_ms" in f:
        out.update(
            latency_p50_ms_teacher=t["latency_p50_ms"],
            latency_p50_ms_final=f["latency_p50_ms"],
            times_faster_than_teacher=t["latency_p50_ms"] / f["latency_p50_ms"],
            latency_spread_ms_teacher=[t.get("latency_p10_ms"), t["latency_p90_ms"]],
            latency_spread_ms_final=[f.get("latency_p10_ms"), f["latency_p90_ms"]],
        )
    return out


def _ours_for_paper(rep: dict) -> dict:
    rows = {r["stage"]: r for r in rep["stages"]}
    final = rep["stages"][-1]
    dc = rep.get("deep_compression") or {}
    ours: dict[str, Any] = {}
    if "student" in rows:
        ours["dense_error_pct"] = rows["student"]["error_pct"]
        ours["student_errors"] = rows["student"]["errors"]
        ours["dense_kb"] = rows["student"]["fp32_bytes"] / 1000
    ours["final_error_pct"] = final["error_pct"]
    if "teacher" in rows:
        ours["teacher_errors"] = rows["teacher"]["errors"]
    if "distill" in rows:
        ours["distilled_errors"] = rows["distill"]["errors"]
    if dc:
        ours["dense_kb"] = dc["dense_kb"]
        ours["pruned_kb"] = dc["pruned_kb"]
        ours["clustered_kb"] = dc["clustered_kb"]
        ours["huffman_kb"] = dc["huffman_kb"]
        ours["compression_ratio"] = dc["ratio_huffman"]
        ours["ratio_before_huffman"] = dc["ratio_clustered"]
    else:
        ours["compression_ratio"] = final["fp32_bytes"] / max(final["storage_bytes"], 1e-9)
    ours["weights_kept_pct"] = 100 * (1 - final["sparsity"])
    return ours


def build_report(recipe, chain, outputs: Mapping[str, dict], run: RunInfo) -> dict:
    """The report dict of a finished (or resumed) run.

    Args:
      recipe: the run's :class:`~jaxcompress.study.Recipe`.
      chain: the student's model stages in order (the last one is the final model).
      outputs: ``{stage: metrics}``, every stage's output (the sweep's: its key and points).
      run: the run's bookkeeping.
    """
    r, sm = recipe, outputs
    st = r.config("study")
    rep: dict[str, Any] = {
        "format": "jaxcompress-study-report",
        "format_version": 1,
        "name": r.name,
        "description": st.description,
        "recipe_source": r.source,
        "recipe": r.to_dict(),
        "seed": st.seed,
        "dataset": st.dataset,
        "created": run.created,
        "finished": now(),
        "versions": versions(),
        "machine": machine(),
        "timings_s": dict(run.timings),
        "total_seconds_this_invocation": run.total_seconds,
        "resumed_stages": list(run.resumed),
        "final_stage": chain[-1],
    }
    rep["stages"] = _stage_rows(sm, chain)
    rep["per_layer"] = sm[chain[-1]].get("per_layer", [])
    if "sizes" in sm:
        rep["deep_compression"] = sm["sizes"]
    if "edge" in sm:
        rep["edge"] = sm["edge"]["final"]
        rep["edge_markdown"] = sm["edge"]["markdown"]
        rep["edge_float_reference"] = sm["edge"].get("float_reference")
        rep["edge_split_accuracy_n"] = sm["edge"].get("split_accuracy_n")
    summary = _summary(rep)
    if summary is not None:
        rep["summary"] = summary
    if "export" in sm:
        rep["artifact"] = "model.jcx"
    if "sweep" in sm:
        rep["sweep"] = {"key": sm["sweep"]["key"], "points": sm["sweep"]["points"]}
    pa = r.config("paper")
    if pa is not None:
        ours = _ours_for_paper(rep)
        rep["paper"] = {
            "dataset": pa.dataset or None,
            "comparable": not pa.dataset or pa.dataset == rep["dataset"],
            "title": pa.title,
            "reference": pa.reference,
            "notes": pa.notes,
            "rows": [
                {"metric": k, "label": PAPER_METRICS[k], "paper": v, "ours": ours.get(k)}
                for k, v in pa.values.items()
            ],
        }
    return rep


# -- Markdown -------------------------------------------------------------------------------------
def _f(v, fmt: str = ".2f", none: str = "-") -> str:
    if v is None:
        return none
    try:
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


def _kb(b) -> str:
    return "-" if b is None else f"{b / 1000:.1f}"


_ENCODING_WORDS = {
    "dense": "dense float32",
    "packed": "packed integer codes + per-channel scales",
    "csr": "CSR sparse (float32 values + column indices + row pointers)",
    "csr_codebook": "CSR sparse with codebook indices",
    "nm": "N:M structured sparse, packed codes",
    "codebook": "codebook indices + codebook",
}

DEFINITIONS = (
    "- **test accuracy**: top-1 on the study's test set (all n examples the header names), "
    "computed in JAX on the stage's parameters (compressed leaves dequantized). Every accuracy "
    "in this report is on that set unless its label names another n.",
    "- **errors**: misclassified test examples out of n.",
    "- **artifact KB**: the size of the exported `.jcx` file (KB = 1000 bytes), what a device "
    "stores. It is the sum of the per-layer table below: the stored weight tensors, the "
    "biases and other tensors, and the graph, header and sample input/output.",
    "- **bits/weight**: 8 x (bytes of the kernels in the artifact, codes + indices + scales) / "
    "(number of kernel weights).",
    "- **sparsity**: fraction of kernel weights that are exactly zero.",
    "- **latency**: batch 1, one thread, in the JAX-free edge runtime on this host; p50 with "
    "the p10-p90 spread of runs measured round-robin over all stages (so they share the same "
    "load). Device columns are projections of the calibrated cost model (labelled projected), not measurements; each device's calibration status is in the edge section's projection table.",
    "- **x smaller / x faster / points**: always against the baseline the line names (the "
    "teacher in the summary; percentage points are differences of test accuracy).",
)


def _encoding_words(code: str, layer: dict | None) -> str:
    words = _ENCODING_WORDS.get(code, code)
    if code in ("packed", "nm") and layer is not None and layer.get("encoding"):
        words = f"{words} ({layer['encoding']})"
    return words


def _lat(row: dict) -> str:
    p50 = row.get("latency_p50_ms")
    if p50 is None:
        return "-"
    p10 = row.get("latency_p10_ms")
    lo = "?" if p10 is None else f"{p10:.3f}"
    return f"{p50:.3f} ({lo}-{row['latency_p90_ms']:.3f})"


def _projection_lines(ed: dict) -> list[str]:
    """The device projection table of the final model, with each profile's calibration status
    (rendered by the edge package, the one place that knows how far to trust a projection)."""
    from jaxcompress.edge import projection_table

    return projection_table(ed)


def _per_layer_lines(rep: dict) -> list[str]:
    """How the artifact stores each tensor of the final stage; rows sum to the artifact size."""
    final = rep["stages"][-1]
    tensors = final.get("tensors")
    if not tensors:
        return []
    by_path = {la["path"]: la for la in rep.get("per_layer") or []}
    out = [
        f"## Per layer (final stage: {final['stage']}): how the artifact stores it",
        "",
        "| tensor | shape | sparsity % | stored as | bytes | bits/weight |",
        "|---|---|---:|---|---:|---:|",
    ]
    kernel_bytes = other_bytes = 0
    for name, t in tensors.items():
        n = 1
        for d in t["shape"]:
            n *= int(d)
        la = by_path.get(name)
        kernel = len(t["shape"]) >= 2 and not name.startswith("const/")
        if kernel:
            kernel_bytes += t["stored_bytes"]
        else:
            other_bytes += t["stored_bytes"]
        sp = f"{100 * la['sparsity']:.1f}" if la else "-"
        bpw = f"{8 * t['stored_bytes'] / n:.2f}" if n else "-"
        out.append(
            f"| {name} | {tuple(t['shape'])} | {sp} | {_encoding_words(t['encoding'], la)} | "
            f"{t['stored_bytes']} | {bpw} |"
        )
    art = final["artifact_bytes"]
    rest = art - kernel_bytes - other_bytes
    out += [
        f"| **kernels** (weight bytes) | | | | {kernel_bytes} | "
        f"{final['artifact_bits_per_weight']:.2f} |",
        f"| biases and other tensors | | | | {other_bytes} | |",
        f"| graph, header, sample input/output | | | | {rest} | |",
        f"| **artifact** | | | | {art} | |",
        "",
    ]
    return out


def to_markdown(rep: dict) -> str:
    """``report.md``: the summary and the tables a person reads first, then details."""
    out = [f"# Study report: {rep['name']}", ""]
    if rep["description"]:
        out += [rep["description"], ""]
    mach, ver = rep["machine"], rep["versions"]
    timings = rep["timings_s"]
    compile_s = timings.get("compile")
    total = sum(v for k, v in timings.items())
    n_test = rep["stages"][0]["n_test"]
    out += [
        f"- dataset: {rep['dataset']}; test set n = {n_test}; seed {rep['seed']}",
        f"- recipe: `{rep['recipe_source']}` (resolved copy: `recipe.toml`)",
        f"- machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable); "
        + ", ".join(f"{k} {v}" for k, v in ver.items()),
        f"- finished {rep['finished']}; stage time {total:.1f} s"
        + (
            f" (resumed stages: {', '.join(rep['resumed_stages'])})"
            if rep["resumed_stages"]
            else ""
        ),
    ]
    if compile_s is not None:
        out.append(
            f"- edge runtime kernel compilation: {compile_s:.1f} s (Numba; first run on a "
            "machine only, cached afterwards)"
        )
    out.append("")
    sm = rep.get("summary")
    if sm:
        out += [
            f"## Summary: final model ({sm['final_stage']}) against the teacher",
            "",
            "| | teacher | final | final vs teacher |",
            "|---|---:|---:|---:|",
            f"| test accuracy % (n = {sm['n_test']}) | {100 * sm['accuracy_teacher']:.2f} | "
            f"{100 * sm['accuracy_final']:.2f} | {sm['accuracy_points_vs_teacher']:+.2f} points |",
            f"| artifact KB | {sm['artifact_bytes_teacher'] / 1000:.1f} | "
            f"{sm['artifact_bytes_final'] / 1000:.1f} | "
            f"{sm['times_smaller_than_teacher']:.1f}x smaller |",
        ]
        if "times_faster_than_teacher" in sm:
            t10, t90 = sm["latency_spread_ms_teacher"]
            f10, f90 = sm["latency_spread_ms_final"]
            out.append(
                f"| latency p50 ms (p10-p90), this host | {sm['latency_p50_ms_teacher']:.3f} "
                f"({_f(t10, '.3f', '?')}-{t90:.3f}) | {sm['latency_p50_ms_final']:.3f} "
                f"({_f(f10, '.3f', '?')}-{f90:.3f}) | "
                f"{sm['times_faster_than_teacher']:.1f}x faster |"
            )
        out.append("")
    out += ["## Definitions", "", *DEFINITIONS, ""]
    dev_names: list[str] = []
    for row in rep["stages"]:
        for d in row.get("projected_ms", {}):
            if d not in dev_names and d != "host":
                dev_names.append(d)
    hdr = (
        "| stage | test acc % | errors | sparsity % | bits/weight | artifact KB | "
        "latency p50 ms (p10-p90) |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    for d in dev_names:
        hdr += f" {d} ms (projected) |"
        sep += "---:|"
    out += [f"## Results per stage (test set n = {n_test})", "", hdr, sep]
    for row in rep["stages"]:
        bpw = row.get("artifact_bits_per_weight", row["weight_bits_per_weight"])
        line = (
            f"| {row['stage']} | {100 * row['accuracy']:.2f} | {row['errors']} | "
            f"{100 * row['sparsity']:.1f} | {bpw:.2f} | "
            f"{_kb(row.get('artifact_bytes'))} | {_lat(row)} |"
        )
        for d in dev_names:
            line += f" {_f(row.get('projected_ms', {}).get(d), '.4f')} |"
        out.append(line)
    out.append("")
    if "paper" in rep:
        pa = rep["paper"]
        if pa.get("comparable", True):
            out += [f"## Published numbers beside ours: {pa['title']}", ""]
            col = "ours (this run)"
        else:
            out += [
                f"## Published numbers (not comparable): {pa['title']}",
                "",
                f"**The paper's numbers are on {pa['dataset']}; this run is on "
                f"{rep['dataset']}.** They are listed for reference only, not as a target.",
                "",
            ]
            col = f"ours (this run, {rep['dataset']})"
        if pa["reference"]:
            out += [f"Reference: {pa['reference']}", ""]
        paper_col = f"paper ({pa['dataset']})" if pa.get("dataset") else "paper"
        out += [f"| metric | {paper_col} | {col} |", "|---|---:|---:|"]
        for row in pa["rows"]:
            out.append(f"| {row['label']} | {_f(row['paper'], 'g')} | {_f(row['ours'], '.4g')} |")
        if pa["notes"]:
            out += ["", pa["notes"]]
        out.append("")
    dc = rep.get("deep_compression")
    if dc:
        out += [
            "## Deep Compression storage (prune -> cluster -> Huffman)",
            "",
            f"Relative sparse index of {dc['index_bits']} bits (filler zeros on longer gaps), "
            f"{dc['cluster_bits']}-bit cluster indices, float32 codebooks and biases; "
            "Huffman = measured code lengths + an 8-bit length table per symbol. KB = 1000 B.",
            "",
            "| stage | ours KB | ours ratio |",
            "|---|---:|---:|",
            f"| dense float32 | {dc['dense_kb']:.1f} | 1.0x |",
            f"| after pruning (float32 values + indices) | {dc['pruned_kb']:.1f} | "
            f"{dc['ratio_pruned']:.1f}x |",
            f"| after clustering | {dc['clustered_kb']:.1f} | {dc['ratio_clustered']:.1f}x |",
            f"| after Huffman | {dc['huffman_kb']:.1f} | {dc['ratio_huffman']:.1f}x |",
            "",
            "| layer | weights | kept % | pruned KB | clustered KB | Huffman KB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for la in dc["layers"]:
            out.append(
                f"| {la['path']} | {la['weights']} | {la['kept_pct']:.1f} | "
                f"{la['pruned_bytes'] / 1000:.2f} | {la['clustered_bytes'] / 1000:.2f} | "
                f"{la['huffman_bytes'] / 1000:.2f} |"
            )
        out.append("")
    out += _per_layer_lines(rep)
    ed = rep.get("edge")
    if ed:
        lat = ed["latency_measured_host"]
        mem = ed["memory"]
        acc = ed.get("accuracy")
        ref = rep.get("edge_float_reference")
        out += [
            f"## Edge evaluation of the final model (`{rep.get('artifact', '')}`)",
            "",
            f"Measured on this host, batch {ed['batch']}, self-check "
            f"{'passed' if ed['self_check_ok'] else 'FAILED'}; full report: "
            f"`{rep.get('edge_markdown')}`.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| latency p50 / p90 / p99 (ms, measured) | {1e3 * lat['p50']:.3f} / "
            f"{1e3 * lat['p90']:.3f} / {1e3 * lat['p99']:.3f} |",
            f"| artifact bytes | {ed['size']['artifact_bytes']} |",
            f"| kernel weight bytes (bits/weight) | {ed['size']['weight_bytes']} "
            f"({ed['size']['bits_per_weight']:.2f}) |",
            f"| activation arena (planned) | {mem['arena_bytes']} B |",
        ]
        if acc:
            same = acc["n"] == n_test
            label = f"n = {acc['n']}" + ("" if same else f" of {n_test}: first {acc['n']}")
            out.append(f"| runtime top-1 ({label}) | {acc['accuracy']:.4f} |")
            if acc.get("relative") is not None and ref:
                out.append(
                    f"| runtime top-1 relative to the float model the compression started "
                    f"from (`{ref}`, {acc['float_accuracy']:.4f}) | {acc['relative']:.4f} |"
                )
        out += ["", *_projection_lines(ed)]
        split_n = rep.get("edge_split_accuracy_n")
        for s in ed.get("splits", []):
            link = s["link"]
            has_acc = any(row.get("accuracy") is not None for row in s["rows"])
            acc_label = ""
            if has_acc and split_n:
                acc_label = (
                    f"; accuracy per cut on the first {split_n} test examples"
                    if split_n != n_test
                    else f"; accuracy per cut on the test set (n = {split_n})"
                )
            out += [
                "",
                f"Split plan (Neurosurgeon): edge {s['edge']} (projected), cloud {s['cloud']}, "
                f"link {link['bandwidth_bps'] / 1e6:g} Mbit/s, RTT {1e3 * link['rtt_s']:g} ms; "
                f"best: **{s['best']}**{acc_label}",
                "",
                "| cut | total ms | bytes sent |" + (" accuracy |" if has_acc else ""),
                "|---|---:|---:|" + ("---:|" if has_acc else ""),
            ]
            for row in s["rows"]:
                line = (
                    f"| {row.get('label')} | {_f(1e3 * row['total_s'], '.3f')} | "
                    f"{row.get('sent_bytes')} |"
                )
                if has_acc:
                    line += f" {_f(row.get('accuracy'), '.4f')} |"
                out.append(line)
        out.append("")
    sw = rep.get("sweep")
    if sw:
        ties = sw["points"][0].get("ties", {}) if sw["points"] else {}
        tie_txt = ""
        if ties.get("accuracy") is not None:
            tie_txt = (
                f" Ties: accuracy within {100 * ties['accuracy']:.2f} points (one standard error)"
            )
            if ties.get("latency_p50_ms") is not None:
                tie_txt += (
                    f", latency within {ties['latency_p50_ms']:.4f} ms (the widest p10-p90 spread)"
                )
            tie_txt += " count as equal."
        out += [
            f"## Sweep over `{sw['key']}`",
            "",
            "Pareto: * = not beaten on accuracy and artifact size together; ** = also not beaten "
            f"on accuracy, size and latency together.{tie_txt}",
            "",
            "| value | test acc % | sparsity % | bits/weight | artifact KB | "
            "latency p50 ms (p10-p90) | projected ms | Pareto |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for p in sw["points"]:
            mark = (
                "**"
                if p["pareto_size"] and p["pareto_size_latency"]
                else ("*" if p["pareto_size"] else "")
            )
            bpw = p.get("artifact_bits_per_weight", p["weight_bits_per_weight"])
            out.append(
                f"| {p['value']} | {100 * p['accuracy']:.2f} | {100 * p['sparsity']:.1f} | "
                f"{bpw:.2f} | {_kb(p.get('artifact_bytes'))} | {_lat(p)} | "
                f"{_f(p.get('projected_ms'), '.4f')} | {mark} |"
            )
        out.append("")
    if rep.get("plots"):
        out += ["## Plots", ""]
        for p in rep["plots"]:
            out.append(f"![{p}]({p})")
        out.append("")
    elif rep.get("plots_error"):
        out += [f"({rep['plots_error']})", ""]
    out += ["## Timings", "", "| stage | seconds |", "|---|---:|"]
    for k, v in rep["timings_s"].items():
        label = f"{k} (edge runtime kernel compilation)" if k == "compile" else k
        out.append(f"| {label} | {v:.1f} |")
    out.append(f"| **total** | {total:.1f} |")
    return "\n".join(out) + "\n"
