"""The stages after the model stages: Deep Compression sizes, export, compile, edge.

Each is a :class:`~jaxcompress.study._types.Stage` in :data:`DEPLOY_STAGES` that reads its typed
config (`ClusterConfig`, `EdgeConfig`) and the outputs of the stages it names as inputs. The
algorithms live in their packages (`clustering.deep_compression_sizes`, `export.save`,
`edge.benchmark`, the edge runtime); this module wires them to the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from jaxcompress.study._compress import model_stage_chain
from jaxcompress.study._types import Stage, StageOutput
from jaxcompress.study._util import atomic_write, latency_percentiles

__all__ = ["DEPLOY_STAGES", "MODEL_NAMES", "export_and_time", "float_reference"]

# every model stage, in chain order (the stages that export and the sweep read from)
MODEL_NAMES = ("teacher", "student", "distill", "prune", "quantize", "cluster")


def float_reference(chain) -> str:
    """The float stage the compression started from: the last of ``student`` / ``distill``."""
    return [s for s in chain if s in ("student", "distill")][-1]


def _artifact_names(recipe, exported: Mapping) -> list[str]:
    """The stages with an artifact: the teacher (when exported) and the student's chain."""
    return (["teacher"] if "teacher" in exported else []) + model_stage_chain(recipe)


def _run_sizes(ctx, recipe, inputs) -> StageOutput:
    """Deep Compression's storage at each step, from the pruned and the clustered params."""
    from jaxcompress.clustering import deep_compression_sizes

    c = recipe.config("cluster")
    sizes = deep_compression_sizes(
        inputs["prune"].state,
        inputs["cluster"].state,
        index_bits=c.index_bits,
        cluster_bits=c.bits,
    )
    return StageOutput(None, sizes)


def _run_export(ctx, recipe, inputs) -> StageOutput:
    """Export every model stage (the teacher too, when there is one) as an artifact."""
    from jaxcompress.export import save

    chain = model_stage_chain(recipe)
    apply_fn = ctx.model("student")[0]
    x = np.asarray(ctx.data.x_test[:1])
    out = {}
    names = (["teacher"] if "teacher" in inputs else []) + chain
    for name in names:
        path = ctx.path("artifacts", f"{name}.jcx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        info = save(
            path,
            ctx.model("teacher")[0] if name == "teacher" else apply_fn,
            inputs[name].state,
            x,
            description=f"jaxcompress run {recipe.name}: {name}",
        )
        out[name] = {
            "path": os.path.relpath(path, ctx.path()),
            "file_bytes": info.file_bytes,
            "weight_bytes": info.weight_bytes,
            "weight_count": info.weight_count,
            "bits_per_weight": info.bits_per_weight,
            "encodings": {k: v["encoding"] for k, v in info.tensors.items()},
            "tensors": {
                k: {
                    "encoding": v["encoding"],
                    "shape": list(v["shape"]),
                    "stored_bytes": int(v["stored_bytes"]),
                }
                for k, v in info.tensors.items()
            },
            "graph_ops": info.graph_ops,
        }
    final = ctx.path("artifacts", f"{chain[-1]}.jcx")
    with open(final, "rb") as f:
        atomic_write(ctx.path("model.jcx"), f.read())
    out["final"] = chain[-1]
    return StageOutput(None, out)


def _run_compile(ctx, recipe, inputs) -> StageOutput:
    """Load every artifact in the edge runtime and run it once: the first run on a machine
    compiles the runtime's Numba kernels (cached on disk afterwards)."""
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    threads = recipe.config("edge").threads
    names = _artifact_names(recipe, inputs["export"].metrics)
    for name in names:
        rt = _runtime.Runtime(
            _artifact.load(ctx.path("artifacts", f"{name}.jcx")), num_threads=threads
        )
        rt.run(np.asarray(rt.artifact.sample_input[:1], np.float32))
    return StageOutput(None, {"artifacts": names})


def _run_edge(ctx, recipe, inputs) -> StageOutput:
    """Every artifact's latency (round-robin), and the full edge report of ``model.jcx``."""
    from jaxcompress.edge import Link, benchmark, get_profile
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    e = recipe.config("edge")
    devices = [get_profile(d) for d in e.devices]
    ds = ctx.data
    n = min(e.eval_limit, len(ds.x_test)) if e.eval_limit else len(ds.x_test)
    ref = float_reference(model_stage_chain(recipe))
    ref_acc = inputs[ref].metrics.get("accuracy")
    names = _artifact_names(recipe, inputs["export"].metrics)
    runtimes = {
        name: _runtime.Runtime(
            _artifact.load(ctx.path("artifacts", f"{name}.jcx")), num_threads=e.threads
        )
        for name in names
    }
    x1 = np.asarray(ds.x_test[:1], np.float32)
    # every stage timed round-robin, so that they share the same machine load
    lat = latency_percentiles(
        {k: (lambda rt=rt: rt.run(x1)) for k, rt in runtimes.items()},
        iters=e.iters,
        warmup=min(e.warmup, 5),
    )
    per_stage = {}
    for name, rt in runtimes.items():
        d = benchmark(rt, devices=devices, warmup=1, iters=3).to_dict()
        per_stage[name] = {
            "latency_ms": lat[name],
            "projected_ms": {k: 1e3 * v["total_s"] for k, v in d["projected"].items()},
            "artifact_bytes": d["size"]["artifact_bytes"],
            "memory": d["memory"],
        }
    links = [Link.mbit(m, rtt_ms=e.rtt_ms) for m in e.links_mbit]
    split_n = min(n, 1000) if links else 0
    rep = benchmark(
        ctx.path("model.jcx"),
        x=ds.x_test[:n] if n else None,
        y=ds.y_test[:n] if n else None,
        float_accuracy=ref_acc,
        devices=devices,
        warmup=e.warmup,
        iters=e.iters,
        num_threads=e.threads,
        links=links,
        split_edge=get_profile(e.split_edge),
        split_accuracy_n=split_n,
    )
    atomic_write(ctx.path("edge_report.md"), rep.to_markdown() + "\n")
    return StageOutput(
        None,
        {
            "final": rep.to_dict(),
            "per_stage": per_stage,
            "markdown": "edge_report.md",
            "float_reference": ref,
            "eval_n": n,
            "split_accuracy_n": split_n,
        },
    )


def export_and_time(ctx, recipe, apply_fn, tree, name: str) -> dict:
    """Export `tree` as ``artifacts/<name>.jcx`` and, with ``[edge]`` enabled, time it in the
    edge runtime (p10/p50/p90 ms) and project it on the first device."""
    from jaxcompress.edge import benchmark, get_profile
    from jaxcompress.export import save
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    path = ctx.path("artifacts", f"{name}.jcx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = save(path, apply_fn, tree, np.asarray(ctx.data.x_test[:1]))
    e = recipe.config("edge") if "edge" in recipe else None
    out = {"artifact_bytes": info.file_bytes, "artifact_bits_per_weight": info.bits_per_weight}
    if e is not None and e.enabled:
        rt = _runtime.Runtime(_artifact.load(path), num_threads=e.threads)
        x1 = np.asarray(ctx.data.x_test[:1], np.float32)
        lat = latency_percentiles(
            {name: lambda: rt.run(x1)}, iters=max(10, e.iters), warmup=min(5, e.warmup)
        )[name]
        out["latency_p10_ms"] = lat["p10"]
        out["latency_p50_ms"] = lat["p50"]
        out["latency_p90_ms"] = lat["p90"]
        dev = e.devices[0] if e.devices else None
        if dev is not None:
            rep = benchmark(rt, devices=[get_profile(dev)], warmup=1, iters=3).to_dict()
            if dev in rep["projected"]:
                out["projected_device"] = dev
                out["projected_ms"] = 1e3 * rep["projected"][dev]["total_s"]
    return out


def _exports(recipe) -> bool:
    return recipe.config("export").enabled


def _runs_edge(recipe) -> bool:
    return _exports(recipe) and recipe.config("edge").enabled


DEPLOY_STAGES: dict[str, Stage] = {
    "sizes": Stage(
        "sizes",
        ("prune", "cluster"),
        _run_sizes,
        lambda r: "prune" in r and "cluster" in r,
    ),
    "export": Stage("export", MODEL_NAMES, _run_export, _exports),
    "compile": Stage(
        "compile",
        ("export",),
        _run_compile,
        _runs_edge,
        announce="stage compile: compiling the edge runtime's Numba kernels for these models "
        "(first run on this machine only; cached afterwards)",
    ),
    "edge": Stage("edge", ("export", "student", "distill"), _run_edge, _runs_edge),
}
