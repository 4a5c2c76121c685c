"""The study report: one dict (``report.json``) and its Markdown rendering (``report.md``).

Every number comes from the run's stage markers; published numbers are only ever taken from the
recipe's ``[paper]`` section and printed beside ours, labelled as the paper's.
"""

from __future__ import annotations

from typing import Any

from jaxcompress.study._recipe import PAPER_METRICS

__all__ = ["build_report", "to_markdown"]


def _stage_rows(study, chain) -> list[dict]:
    sm = study.stage_metrics
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
            row["artifact_bits_per_weight"] = exp[name]["bits_per_weight"]
            row["encodings"] = exp[name]["encodings"]
        if name in per_stage:
            ps = per_stage[name]
            row["latency_p50_ms"] = ps["latency_ms"]["p50"]
            row["latency_p90_ms"] = ps["latency_ms"]["p90"]
            row["projected_ms"] = ps["projected_ms"]
            row["arena_bytes"] = ps["memory"]["arena_bytes"]
        rows.append(row)
    return rows


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


def build_report(study, chain, *, total_seconds: float) -> dict:
    """The report dict from a finished (or resumed) :class:`~jaxcompress.study.Study`."""
    from jaxcompress.study._stages import _now, machine, versions

    r = study.recipe
    sm = study.stage_metrics
    rep: dict[str, Any] = {
        "format": "jaxcompress-study-report",
        "format_version": 1,
        "name": r.name,
        "description": r["study"]["description"],
        "recipe_source": r.source,
        "recipe": r.to_dict(),
        "seed": r["study"]["seed"],
        "dataset": r["study"]["dataset"],
        "created": getattr(study, "created", None),
        "finished": _now(),
        "versions": versions(),
        "machine": machine(),
        "timings_s": dict(study.timings),
        "total_seconds_this_invocation": total_seconds,
        "resumed_stages": list(study.resumed),
        "final_stage": chain[-1],
    }
    rep["stages"] = _stage_rows(study, chain)
    rep["per_layer"] = sm[chain[-1]].get("per_layer", [])
    if "sizes" in sm:
        rep["deep_compression"] = sm["sizes"]
    if "edge" in sm:
        rep["edge"] = sm["edge"]["final"]
        rep["edge_markdown"] = sm["edge"]["markdown"]
    if "export" in sm:
        rep["artifact"] = "model.jcx"
    if getattr(study, "sweep_points", None) is not None:
        rep["sweep"] = {"key": r["sweep"]["key"], "points": study.sweep_points}
    if "paper" in r:
        pa = r["paper"]
        ours = _ours_for_paper(rep)
        rep["paper"] = {
            "title": pa["title"],
            "reference": pa["reference"],
            "notes": pa["notes"],
            "rows": [
                {"metric": k, "label": PAPER_METRICS[k], "paper": v, "ours": ours.get(k)}
                for k, v in pa["values"].items()
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


def to_markdown(rep: dict) -> str:
    """``report.md``: the tables a person reads first, then details."""
    out = [f"# Study report: {rep['name']}", ""]
    if rep["description"]:
        out += [rep["description"], ""]
    mach, ver = rep["machine"], rep["versions"]
    total = sum(rep["timings_s"].values())
    out += [
        f"- dataset: {rep['dataset']} (test n = {rep['stages'][0]['n_test']}), seed {rep['seed']}",
        f"- recipe: `{rep['recipe_source']}` (resolved copy: `recipe.toml`)",
        f"- machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable); "
        + ", ".join(f"{k} {v}" for k, v in ver.items()),
        f"- finished {rep['finished']}; stage time {total:.1f} s"
        + (
            f" (resumed stages: {', '.join(rep['resumed_stages'])})"
            if rep["resumed_stages"]
            else ""
        ),
        "",
    ]
    dev_names: list[str] = []
    for row in rep["stages"]:
        for d in row.get("projected_ms", {}):
            if d not in dev_names and d != "host":
                dev_names.append(d)
    hdr = (
        "| stage | test acc % | errors | sparsity % | bits/weight | weights KB | "
        "artifact KB | latency p50 ms | p90 ms |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for d in dev_names:
        hdr += f" {d} ms (projected) |"
        sep += "---:|"
    out += ["## Results per stage", "", hdr, sep]
    for row in rep["stages"]:
        line = (
            f"| {row['stage']} | {100 * row['accuracy']:.2f} | {row['errors']} | "
            f"{100 * row['sparsity']:.1f} | {row['weight_bits_per_weight']:.2f} | "
            f"{_kb(row['storage_bytes'])} | {_kb(row.get('artifact_bytes'))} | "
            f"{_f(row.get('latency_p50_ms'), '.3f')} | {_f(row.get('latency_p90_ms'), '.3f')} |"
        )
        for d in dev_names:
            line += f" {_f(row.get('projected_ms', {}).get(d), '.4f')} |"
        out.append(line)
    out += [
        "",
        "weights KB: every parameter as stored by `size_report` (codes + scales/codebooks, biases "
        "float32, fixed-width codes); artifact KB: the exported file (graph, sparse indices, "
        "sample input/output included). Latency: measured on this host in the edge runtime, "
        "batch 1; device columns are projections of the calibrated cost model (labelled projected; "
        "each device's calibration status is in the edge table below).",
        "",
    ]
    if "paper" in rep:
        pa = rep["paper"]
        out += [f"## Published numbers beside ours: {pa['title']}", ""]
        if pa["reference"]:
            out += [f"Reference: {pa['reference']}", ""]
        out += ["| metric | paper | ours (this run) |", "|---|---:|---:|"]
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
    if rep.get("per_layer"):
        out += [
            f"## Per layer (final stage: {rep['final_stage']})",
            "",
            "| layer | shape | sparsity % | encoding | bits/weight | Huffman bits/weight |",
            "|---|---|---:|---|---:|---:|",
        ]
        for la in rep["per_layer"]:
            out.append(
                f"| {la['path']} | {tuple(la['shape'])} | {100 * la['sparsity']:.1f} | "
                f"{la['encoding']} | {la['bits_per_weight']:.2f} | "
                f"{la['huffman_bits_per_weight']:.2f} |"
            )
        out.append("")
    ed = rep.get("edge")
    if ed:
        lat = ed["latency_measured_host"]
        mem = ed["memory"]
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
            f"| weight bytes (bits/weight) | {ed['size']['weight_bytes']} "
            f"({ed['size']['bits_per_weight']:.2f}) |",
            f"| activation arena (planned) | {mem['arena_bytes']} B |",
        ]
        acc = ed.get("accuracy")
        if acc:
            out.append(f"| runtime top-1 (n={acc['n']}) | {acc['accuracy']:.4f} |")
            if acc.get("relative") is not None:
                out.append(f"| relative to float model | {acc['relative']:.4f} |")
        from jaxcompress.edge import projection_table

        out += [""] + projection_table(ed)
        for s in ed.get("splits", []):
            link = s["link"]
            out += [
                "",
                f"Split plan (Neurosurgeon): edge {s['edge']}, cloud {s['cloud']}, link "
                f"{link['bandwidth_bps'] / 1e6:g} Mbit/s, RTT {1e3 * link['rtt_s']:g} ms; "
                f"best: **{s['best']}**",
                "",
                "| cut | total ms | bytes sent |",
                "|---|---:|---:|",
            ]
            for row in s["rows"]:
                out.append(
                    f"| {row.get('label')} | {_f(1e3 * row['total_s'], '.3f')} | "
                    f"{row.get('sent_bytes')} |"
                )
        out.append("")
    sw = rep.get("sweep")
    if sw:
        out += [
            f"## Sweep over `{sw['key']}`",
            "",
            "Pareto: not beaten on accuracy and artifact size together (* = on the front; "
            "** = also on the accuracy / size / latency front).",
            "",
            "| value | test acc % | sparsity % | bits/weight | artifact KB | latency p50 ms | "
            "projected ms | Pareto |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for p in sw["points"]:
            mark = (
                "**"
                if p["pareto_size"] and p["pareto_size_latency"]
                else ("*" if p["pareto_size"] else "")
            )
            out.append(
                f"| {p['value']} | {100 * p['accuracy']:.2f} | {100 * p['sparsity']:.1f} | "
                f"{p['weight_bits_per_weight']:.2f} | {_kb(p.get('artifact_bytes'))} | "
                f"{_f(p.get('latency_p50_ms'), '.3f')} | {_f(p.get('projected_ms'), '.4f')} | "
                f"{mark} |"
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
        out.append(f"| {k} | {v:.1f} |")
    return "\n".join(out) + "\n"
