"""PNG plots of a study report (matplotlib, Agg backend: no display needed).

* ``accuracy_vs_sparsity.png`` and ``accuracy_vs_bits.png``: every stage (and sweep point);
* ``size_latency.png``: artifact size and measured p50 latency bars per stage;
* ``per_layer.png``: sparsity and bits per weight of each layer of the final model;
* ``sweep.png``: the swept setting's accuracy against artifact size (and latency) with the
  Pareto front marked.
"""

from __future__ import annotations

import os

__all__ = ["make_plots"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: str, name: str, out: list[str]) -> None:
    import io

    from jaxcompress._core import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(os.path.join(folder, name), buf.getvalue())
    out.append(f"plots/{name}")


def make_plots(rep: dict, folder: str) -> list[str]:
    """Write the plots of ``rep`` into ``folder``; returns their paths relative to the run."""
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    out: list[str] = []
    stages = [s for s in rep["stages"] if s["stage"] != "teacher"]
    sweep = rep.get("sweep")
    names = [s["stage"] for s in stages]

    for xkey, xlabel, fname in (
        ("sparsity", "sparsity of the weights (%)", "accuracy_vs_sparsity.png"),
        (
            "weight_bits_per_weight",
            "bits per weight (codes + scales/codebooks)",
            "accuracy_vs_bits.png",
        ),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        scale = 100 if xkey == "sparsity" else 1
        xs = [scale * s[xkey] for s in stages]
        ys = [100 * s["accuracy"] for s in stages]
        ax.plot(xs, ys, "-", color="tab:gray", alpha=0.5, zorder=1)
        markers = "os^DvP*X"
        for i, (x, y, n) in enumerate(zip(xs, ys, names, strict=True)):
            ax.scatter([x], [y], marker=markers[i % len(markers)], s=45, zorder=3, label=n)
        if sweep:
            pts = sweep["points"]
            ax.scatter(
                [scale * p[xkey] for p in pts],
                [100 * p["accuracy"] for p in pts],
                marker="x",
                color="black",
                label=f"sweep {sweep['key']} (values in the report)",
                zorder=2,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{rep['name']}: accuracy vs {xkey.split('_')[0] if scale == 100 else 'bits'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        _save(fig, folder, fname, out)
        plt.close(fig)

    all_stages = [s for s in rep["stages"] if "artifact_bytes" in s]
    if all_stages:
        stages_sl = all_stages
        names_sl = [s["stage"] for s in stages_sl]
        has_lat = all("latency_p50_ms" in s for s in stages_sl)
        fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(10 if has_lat else 5, 3.8))
        axes = axes if has_lat else [axes]
        kb = [s["artifact_bytes"] / 1000 for s in stages_sl]
        axes[0].bar(names_sl, kb, color="tab:green")
        for i, v in enumerate(kb):
            axes[0].text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("artifact size (KB, log scale)")
        axes[0].set_title("artifact size per stage")
        if has_lat:
            p50 = [s["latency_p50_ms"] for s in stages_sl]
            lo = [
                s["latency_p50_ms"] - (s.get("latency_p10_ms") or s["latency_p50_ms"])
                for s in stages_sl
            ]
            hi = [s["latency_p90_ms"] - s["latency_p50_ms"] for s in stages_sl]
            axes[1].bar(names_sl, p50, color="tab:purple", yerr=[lo, hi], capsize=4)
            axes[1].set_ylabel("latency p50, bars p10-p90 (ms)")
            axes[1].set_title("measured latency on this host (batch 1)")
        for a in axes:
            a.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        _save(fig, folder, "size_latency.png", out)
        plt.close(fig)

    layers = rep.get("per_layer") or []
    if layers:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        lnames = [la["path"].replace("/kernel", "") for la in layers]
        axes[0].bar(lnames, [100 * la["sparsity"] for la in layers], color="tab:red")
        axes[0].set_ylabel("sparsity (%)")
        axes[0].set_title(f"per-layer sparsity ({rep['final_stage']})")
        axes[1].bar(
            lnames, [la["bits_per_weight"] for la in layers], color="tab:cyan", label="fixed width"
        )
        axes[1].plot(
            lnames, [la["huffman_bits_per_weight"] for la in layers], "ko", label="Huffman"
        )
        axes[1].set_ylabel("bits per weight")
        axes[1].set_title("per-layer bits per weight")
        axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        for a in axes:
            a.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        _save(fig, folder, "per_layer.png", out)
        plt.close(fig)

    if sweep:
        pts = sweep["points"]
        has_lat = all("latency_p50_ms" in p for p in pts)
        fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(10 if has_lat else 5.5, 3.8))
        axes = axes if has_lat else [axes]
        panels = [("artifact_bytes", 1e-3, "artifact size (KB)", "pareto_size")]
        if has_lat:
            panels.append(
                (
                    "latency_p50_ms",
                    1.0,
                    "latency p50 on this host (ms), bars p10-p90",
                    "pareto_latency",
                )
            )
        acc_err = 100 * (pts[0].get("ties", {}).get("accuracy") or 0.0) if pts else 0.0
        for ax, (k, sc, label, flag) in zip(axes, panels, strict=True):
            xs = [sc * p[k] for p in pts]
            ys = [100 * p["accuracy"] for p in pts]
            xerr = None
            if k == "latency_p50_ms":
                xerr = [
                    [p[k] - (p.get("latency_p10_ms") or p[k]) for p in pts],
                    [p["latency_p90_ms"] - p[k] for p in pts],
                ]
            ax.errorbar(
                xs,
                ys,
                xerr=xerr,
                yerr=acc_err or None,
                fmt="o",
                color="tab:gray",
                ecolor="lightgray",
                capsize=3,
                label="sweep points (bars: noise)",
            )
            flags = [bool(p.get(flag, p.get("pareto_size"))) for p in pts]
            front = sorted((x, y) for x, y, f in zip(xs, ys, flags, strict=True) if f)
            if front:
                ax.plot(
                    [f[0] for f in front],
                    [f[1] for f in front],
                    "o-",
                    color="tab:red",
                    label="Pareto front (noise = ties)",
                )
            order = sorted(range(len(pts)), key=lambda i: (xs[i], ys[i]))
            for rank, i in enumerate(order):
                ax.annotate(
                    str(pts[i]["value"]),
                    (xs[i], ys[i]),
                    textcoords="offset points",
                    xytext=(5, 6 if rank % 2 == 0 else -12),
                    fontsize=8,
                )
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        axes[0].set_title(f"sweep {sweep['key']}: accuracy / size trade-off")
        if has_lat:
            axes[1].set_title("accuracy / latency trade-off")
        fig.tight_layout()
        _save(fig, folder, "sweep.png", out)
        plt.close(fig)
    return out
