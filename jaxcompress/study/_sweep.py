"""The sweep: the run repeated for each value of one recipe key (``[sweep]``).

Each value gets its own copy of the recipe and re-runs the model stages from the first one the
key belongs to, starting from the main run's previous stage; each copy is exported and timed.
The points then get their Pareto flags, with differences within the measured noise as ties.
"""

from __future__ import annotations

from jaxcompress.study._compress import (
    MODEL_STAGES,
    _plain,
    accuracy_noise,
    model_stage_chain,
    pareto_front,
)
from jaxcompress.study._deploy import MODEL_NAMES, export_and_time
from jaxcompress.study._types import PREVIOUS, Stage, StageOutput

__all__ = ["SWEEP_STAGE"]


def _run_sweep(ctx, recipe, inputs) -> StageOutput:
    """Run every sweep value from the first affected stage on; the output's metrics hold the
    sweep key and its trade-off points (each point is its own resumable sub-stage ``sweep_<i>``).

    Each point carries ``pareto_size`` (on the accuracy / artifact-size front) and
    ``pareto_size_latency`` (on the accuracy / size / latency front); accuracy differences within
    one standard error and latency differences within the points' p10-p90 spread are ties.
    """
    sw = recipe.config("sweep")
    sec = sw.key.split(".", 1)[0]
    chain = model_stage_chain(recipe)
    start = chain.index(sec)
    base = chain[start - 1]
    apply_fn = ctx.model("student")[0]
    shared = {k: v for k, v in inputs.items() if k == "teacher"}
    points = []
    for i, v in enumerate(_plain(sw.values)):  # as the recipe's TOML holds them
        name = f"sweep_{i:02d}"

        def one(v=v, name=name):
            rv = recipe.with_value(sw.key, v)
            tree = inputs[base].state
            m = {}
            for st in chain[start:]:
                tree, m = MODEL_STAGES[st].run(
                    ctx, rv, dict(shared, **{PREVIOUS: StageOutput(tree, {})})
                )
            point = {
                "value": v,
                "accuracy": m["accuracy"],
                "error_pct": m["error_pct"],
                "n_test": m["n_test"],
                "sparsity": m["sparsity"],
                "weight_bits_per_weight": m["weight_bits_per_weight"],
                "storage_bytes": m["storage_bytes"],
            }
            if recipe.config("export").enabled:
                point.update(export_and_time(ctx, recipe, apply_fn, tree, name))
            else:
                point["artifact_bytes"] = point["storage_bytes"]
            return StageOutput(None, point)

        points.append(dict(ctx.checkpoint(name, one).metrics))
    n = points[0].get("n_test", 0) if points else 0
    acc_tie = max((accuracy_noise(p["accuracy"], n or 1) for p in points), default=0.0)
    flags = pareto_front(points, ties={"accuracy": acc_tie})
    lat = all("latency_p50_ms" in p for p in points)
    if lat:
        spread = max(
            p["latency_p90_ms"] - p.get("latency_p10_ms", p["latency_p50_ms"]) for p in points
        )
        flags3 = pareto_front(
            points,
            minimize=("artifact_bytes", "latency_p50_ms"),
            ties={"accuracy": acc_tie, "latency_p50_ms": spread},
        )
        flags_lat = pareto_front(
            points,
            minimize=("latency_p50_ms",),
            ties={"accuracy": acc_tie, "latency_p50_ms": spread},
        )
    else:
        spread = None
        flags3 = flags_lat = flags
    for p, f, f3, fl in zip(points, flags, flags3, flags_lat, strict=True):
        p["pareto_size"] = f
        p["pareto_size_latency"] = f3
        p["pareto_latency"] = fl
    for p in points:
        p["ties"] = {"accuracy": acc_tie, "latency_p50_ms": spread}
    return StageOutput(None, {"key": sw.key, "points": points})


SWEEP_STAGE = Stage(
    "sweep",
    MODEL_NAMES,
    _run_sweep,
    lambda recipe: "sweep" in recipe,
    checkpoint=False,  # each point is its own sub-stage in the run folder
)
