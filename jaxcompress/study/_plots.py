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
        ax.plot(xs, ys, "o-", color="tab:blue", label="stages")
        for x, y, n in zip(xs, ys, names, strict=True):
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if sweep:
            pts = sweep["points"]
            ax.scatter(
                [scale * p[xkey] for p in pts],
                [100 * p["accuracy"] for p in pts],
                marker="s",
                color="tab:orange",
                label=f"sweep {sweep['key']}",
                zorder=3,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{rep['name']}: accuracy vs {xkey.split('_')[0] if scale == 100 else 'bits'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, folder, fname, out)
        plt.close(fig)

    if any("artifact_bytes" in s for s in stages):
        has_lat = any("latency_p50_ms" in s for s in stages)
        fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(9 if has_lat else 5, 3.6))
        axes = axes if has_lat else [axes]
        kb = [s.get("artifact_bytes", 0) / 1000 for s in stages]
        axes[0].bar(names, kb, color="tab:green")
        for i, v in enumerate(kb):
            axes[0].text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        axes[0].set_ylabel("artifact size (KB)")
        axes[0].set_title("size per stage")
        if has_lat:
            p50 = [s.get("latency_p50_ms", 0) for s in stages]
            p90 = [s.get("latency_p90_ms", 0) for s in stages]
            idx = list(range(len(names)))
            axes[1].bar([i - 0.2 for i in idx], p50, width=0.4, label="p50", color="tab:purple")
            axes[1].bar([i + 0.2 for i in idx], p90, width=0.4, label="p90", color="tab:pink")
            axes[1].set_xticks(idx, names)
            axes[1].set_ylabel("latency on this host (ms, batch 1)")
            axes[1].set_title("measured latency per stage")
            axes[1].legend(fontsize=8)
        for a in axes:
            a.tick_params(axis="x", labelrotation=20)
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
        axes[1].legend(fontsize=8)
        for a in axes:
            a.tick_params(axis="x", labelrotation=30)
        _save(fig, folder, "per_layer.png", out)
        plt.close(fig)

    if sweep:
        pts = sweep["points"]
        has_lat = all("latency_p50_ms" in p for p in pts)
        fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(10 if has_lat else 5.5, 3.8))
        axes = axes if has_lat else [axes]
        from jaxcompress.study._compress import pareto_front

        panels = [("artifact_bytes", 1e-3, "artifact size (KB)")]
        if has_lat:
            panels.append(("latency_p50_ms", 1.0, "latency p50 on this host (ms)"))
        for ax, (k, sc, label) in zip(axes, panels, strict=True):
            xs = [sc * p[k] for p in pts]
            ys = [100 * p["accuracy"] for p in pts]
            flags = pareto_front(pts, minimize=(k,))  # the front of this panel's two axes
            front = sorted((x, y) for x, y, f in zip(xs, ys, flags, strict=True) if f)
            ax.scatter(xs, ys, color="tab:gray", label="sweep points")
            if front:
                ax.plot(
                    [f[0] for f in front],
                    [f[1] for f in front],
                    "o-",
                    color="tab:red",
                    label="Pareto front",
                )
            for x, y, p in zip(xs, ys, pts, strict=True):
                ax.annotate(
                    str(p["value"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_title(f"sweep {sweep['key']}: accuracy / size trade-off")
        if has_lat:
            axes[1].set_title("accuracy / latency trade-off")
        _save(fig, folder, "sweep.png", out)
        plt.close(fig)
    return out
