"""The model stages of a study (train, distill, prune, quantize, cluster), the Deep Compression
size table and sweeps. Every function here calls only the public API of the other subpackages.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxcompress._core import named_leaves

__all__ = [
    "deep_compression_sizes",
    "model_stage_chain",
    "pareto_front",
    "run_model_stage",
    "run_sweep",
    "tree_metrics",
]


def model_stage_chain(recipe) -> list[str]:
    """The student's model stages in order, e.g. ``["student", "distill", "prune", "cluster"]``."""
    return ["student"] + [s for s in ("distill", "prune", "quantize", "cluster") if s in recipe]


def _adam(lr: float, spec: dict | None = None, epochs: int = 0, n_train: int = 0):
    """Adam at ``lr``; with ``spec["schedule"] == "cosine"`` decayed over the section's steps."""
    import optax

    if spec is not None and spec.get("schedule") == "cosine" and epochs:
        steps = max(1, epochs * (n_train // spec["batch_size"]))
        return optax.adam(optax.cosine_decay_schedule(lr, steps))
    return optax.adam(lr)


def _keep_masks(params: Any) -> Any:
    """Bool masks ``w != 0`` on kernels (ndim >= 2), all-True elsewhere: keeps pruned zeros."""
    import jax
    import jax.numpy as jnp

    def m(w):
        w = jnp.asarray(w)
        if w.ndim >= 2 and jnp.issubdtype(w.dtype, jnp.floating):
            return w != 0
        return jnp.ones(w.shape, bool)

    return jax.tree.map(m, params)


def tree_metrics(tree: Any) -> dict:
    """Sparsity, storage (``size_report``, fixed-width and Huffman) and per-layer figures."""
    from jaxcompress.clustering import size_report
    from jaxcompress.pruning import sparsity
    from jaxcompress.quantization import dequantize_params

    dense = dequantize_params(tree)
    rep = size_report(tree)
    reph = size_report(tree, huffman=True)
    kernels = {p: np.asarray(w) for p, w in named_leaves(dense) if np.ndim(w) >= 2}
    per_layer = []
    huff = {x.path: x for x in reph.leaves}
    for x in rep.leaves:
        if x.path not in kernels:
            continue
        w = kernels[x.path]
        per_layer.append(
            {
                "path": x.path,
                "shape": list(w.shape),
                "n": x.n,
                "sparsity": float(np.mean(w == 0)) if w.size else 0.0,
                "encoding": x.encoding,
                "bits_per_weight": x.bits_per_weight,
                "huffman_bits_per_weight": huff[x.path].bits_per_weight,
            }
        )
    n_w = sum(layer["n"] for layer in per_layer)
    w_bits = sum(x.total_bits for x in rep.leaves if x.path in kernels)
    return {
        "sparsity": float(sparsity(dense)),
        "params": rep.n,
        "storage_bytes": rep.nbytes,
        "storage_bytes_huffman": reph.nbytes,
        "fp32_bytes": 4 * rep.n,
        "weight_bits_per_weight": w_bits / n_w if n_w else 0.0,
        "per_layer": per_layer,
    }


def _where(rx: str | None):
    """Selection for a ``where`` regex: kernels (ndim >= 2) whose path matches; None = default."""
    if rx is None:
        return None
    import re

    pat = re.compile(rx)

    def sel(path, leaf) -> bool:
        return bool(pat.search(path)) and np.ndim(leaf) >= 2

    return sel


def _train_data(study):
    ds = study.data
    return (ds.x_train, ds.y_train)


def run_model_stage(study, recipe, name: str, prev: Any, teacher) -> tuple[Any, dict]:
    """Run one model stage; returns ``(params tree, metrics)``."""
    from jaxcompress.training import fit

    progress = study.progress
    key = study.key(name)
    data = _train_data(study)
    n = len(data[0])
    info: dict = {}
    if name in ("teacher", "student"):
        spec = recipe[name]
        apply_fn, params = study.model(name)
        res = fit(
            apply_fn,
            params,
            data,
            optimizer=_adam(spec["lr"], spec, spec["epochs"], n),
            epochs=spec["epochs"],
            batch_size=spec["batch_size"],
            key=key,
            progress=progress,
        )
        tree = res.params
        info = {"epochs": spec["epochs"], "lr": spec["lr"], "model": spec["model"]}
    else:
        apply_fn, _ = study.model("student")
    if name == "distill":
        from jaxcompress.distillation import distill

        d = recipe["distill"]
        _, fresh = study.model("student")  # distillation trains the student from its init
        t_apply, t_params = teacher
        res = distill(
            apply_fn,
            fresh,
            t_apply,
            t_params,
            data,
            optimizer=_adam(d["lr"], d, d["epochs"], n),
            epochs=d["epochs"],
            batch_size=d["batch_size"],
            key=key,
            temperature=d["temperature"],
            alpha=d["alpha"],
            progress=progress,
        )
        tree = res.params
        info = {k: d[k] for k in ("temperature", "alpha", "epochs", "lr")}
    elif name == "prune":
        tree, info = _prune(recipe["prune"], apply_fn, prev, data, key, progress)
    elif name == "quantize":
        tree, info = _quantize(recipe["quantize"], apply_fn, prev, data, key, progress)
    elif name == "cluster":
        tree, info = _cluster(recipe["cluster"], apply_fn, prev, data, key, progress)
    metrics = dict(study.evaluate(apply_fn, tree), **tree_metrics(tree))
    metrics["settings"] = info
    metrics["title"] = name
    if name == "teacher":
        metrics.pop("per_layer", None)
    return tree, metrics


def _prune(p: dict, apply_fn, params, data, key, progress):
    import jax
    import optax

    from jaxcompress import pruning
    from jaxcompress.training import fit

    method = p["method"]
    info = {"method": method, "rounds": p["rounds"], "epochs_per_round": p["epochs"], "lr": p["lr"]}
    if method == "magnitude":
        target = p["sparsity"]
        info["sparsity"] = target
        info["scope"] = p["scope"]
        res = pruning.iterative_pruning(
            apply_fn,
            params,
            data,
            target=target,
            rounds=p["rounds"],
            epochs_per_round=p["epochs"],
            optimizer=_adam(p["lr"], p, p["epochs"], len(data[0])),
            batch_size=p["batch_size"],
            key=key,
            scope=p["scope"],
            where=_where(p["where"]),
            progress=progress,
        )
        return res.params, info
    # threshold (Han et al. 2015: |w| < quality * std(layer)) and N:M: masks, then masked retrain
    info["quality" if method == "threshold" else "n:m"] = (
        p["quality"] if method == "threshold" else f"{p['n']}:{p['m']}"
    )
    for r in range(p["rounds"] if method == "threshold" else 1):
        if method == "threshold":
            masks = _threshold_masks(params, p["quality"], p["where"])
        else:
            masks = pruning.nm_masks(params, p["n"], p["m"], where=_where(p["where"]))
        params = pruning.apply_masks(params, masks)
        if p["epochs"]:
            opt = optax.chain(
                _adam(p["lr"], p, p["epochs"], len(data[0])), pruning.fixed_masks(masks)
            )
            params = fit(
                apply_fn,
                params,
                data,
                optimizer=opt,
                epochs=p["epochs"],
                batch_size=p["batch_size"],
                key=jax.random.fold_in(key, r),
                progress=progress,
            ).params
    return params, info


def _threshold_masks(params, quality, where_rx):
    """Han et al. 2015 masks ``|w| >= q * std(layer)``; a ``{regex: q}`` table prunes each matching
    kernel with its own quality (unmatched kernels are kept)."""
    import jax
    import jax.numpy as jnp

    from jaxcompress import pruning

    if not isinstance(quality, dict):
        return pruning.threshold_masks(params, quality=quality, where=_where(where_rx))
    masks = jax.tree.map(lambda w: jnp.ones(jnp.shape(w), bool), params)
    for pat, q in quality.items():
        m = pruning.threshold_masks(params, quality=q, where=_where(pat))
        masks = jax.tree.map(jnp.logical_and, masks, m)
    return masks


def _quantize(q: dict, apply_fn, params, data, key, progress):
    import optax

    from jaxcompress import pruning
    from jaxcompress.quantization import fake_quantize, quantize_params
    from jaxcompress.training import fit

    kw = {
        "bits": q["bits"],
        "scheme": q["scheme"],
        "axis": q["axis"],
        "group_size": q["group_size"] or None,
        "where": _where(q["where"]),
    }
    if q["qat_epochs"]:
        opt = optax.chain(
            _adam(q["lr"], q, q["qat_epochs"], len(data[0])),
            pruning.fixed_masks(_keep_masks(params)),
        )
        params = fit(
            apply_fn,
            params,
            data,
            optimizer=opt,
            epochs=q["qat_epochs"],
            batch_size=q["batch_size"],
            key=key,
            param_transform=fake_quantize(**kw),
            progress=progress,
        ).params
    tree = (
        quantize_params(params, group_fallback="per_channel", **kw)
        if kw["group_size"]
        else quantize_params(params, **kw)
    )
    return tree, dict(kw, where=q["where"], qat_epochs=q["qat_epochs"])


def _cluster(c: dict, apply_fn, params, data, key, progress):
    import optax

    from jaxcompress.clustering import (
        centroid_finetuning,
        cluster,
        shared_params,
        update_codebooks,
    )
    from jaxcompress.training import fit

    ct = cluster(params, bits=c["bits"], init=c["init"], key=key, where=_where(c["where"]))
    if c["finetune_epochs"]:
        opt = optax.chain(
            centroid_finetuning(ct), _adam(c["lr"], c, c["finetune_epochs"], len(data[0]))
        )
        res = fit(
            apply_fn,
            shared_params(ct),
            data,
            optimizer=opt,
            epochs=c["finetune_epochs"],
            batch_size=c["batch_size"],
            key=key,
            progress=progress,
        )
        ct = update_codebooks(ct, res.params)
    return ct, {
        "bits": c["bits"],
        "init": c["init"],
        "where": c["where"],
        "finetune_epochs": c["finetune_epochs"],
    }


# -- Deep Compression storage accounting ------------------------------------------------------------
def _relative_positions(flat_nz: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative sparse index: gaps stored in ``index_bits``; a gap larger than
    ``2**index_bits`` gets filler zeros. Returns (entry positions incl. fillers, gaps - 1)."""
    span = 1 << index_bits
    pos = np.flatnonzero(flat_nz)
    entries = []
    prev = -1
    for p in pos.tolist():
        while p - prev > span:  # filler zero
            prev += span
            entries.append(prev)
        entries.append(p)
        prev = p
    e = np.asarray(entries, np.int64)
    gaps = np.diff(np.concatenate([[-1], e])) - 1 if e.size else np.zeros(0, np.int64)
    return e, gaps


def deep_compression_sizes(study) -> dict:
    """Storage of the pruned, clustered and Huffman-coded model the way Deep Compression counts it.

    Pruned kernels are stored as a stream (output-channel major: ``W.T`` row-major) of entries
    with a relative index of ``cluster.index_bits`` bits (filler zeros when a gap exceeds
    ``2**index_bits``, Han et al. 2016 Fig. 2); after pruning each entry carries a float32 value,
    after clustering a ``bits``-bit codebook index (+ one float32 codebook per layer), after
    Huffman both the indices and the relative positions are Huffman coded (measured stream
    lengths plus an 8-bit code-length table per symbol). Biases stay float32 throughout.
    KB = 1000 bytes (the paper's 1070 KB is 266,610 float32 parameters).
    """
    from jaxcompress.clustering import huffman_bits
    from jaxcompress.quantization import dequantize_params

    pruned = study.state("prune")
    clustered = study.state("cluster")
    ib = study.recipe["cluster"]["index_bits"]
    cbits = study.recipe["cluster"]["bits"]
    dense_bits = pruned_bits = clustered_bits = huffman_total = 0
    layers = []
    cl_leaves = _clustered_by_path(clustered)
    deq = dict(named_leaves(dequantize_params(clustered)))
    for path, w in named_leaves(pruned):
        w = np.asarray(w)
        dense_bits += 32 * w.size
        if w.ndim < 2:
            pruned_bits += 32 * w.size
            clustered_bits += 32 * w.size
            huffman_total += 32 * w.size
            continue
        wc = np.asarray(deq[path])
        flat = wc.reshape(-1, wc.shape[-1]).T.reshape(-1)  # output-channel major
        entries, gaps = _relative_positions(flat != 0, ib)
        n_e = entries.size
        ca = cl_leaves.get(path)
        if ca is not None:
            idx = np.asarray(ca.indices).reshape(-1, wc.shape[-1]).T.reshape(-1)[entries]
            k = int(ca.n_clusters)
            codebook_bits = 32 * int(np.size(ca.codebook))
        else:  # a kernel the clusterer did not select: 32-bit values
            idx, k, codebook_bits = None, 0, 0
        p_bits = n_e * (32 + ib)
        c_bits = n_e * ((cbits if idx is not None else 32) + ib) + codebook_bits
        if idx is not None and n_e:
            h_idx = huffman_bits(idx, alphabet_size=k) + 8 * k
        else:
            h_idx = n_e * 32
        h_pos = (huffman_bits(gaps, alphabet_size=1 << ib) + 8 * (1 << ib)) if n_e else 0
        h_bits = h_idx + h_pos + codebook_bits
        pruned_bits += p_bits
        clustered_bits += c_bits
        huffman_total += h_bits
        layers.append(
            {
                "path": path,
                "weights": int(w.size),
                "nonzero": int(np.count_nonzero(flat)),
                "entries_with_fillers": int(n_e),
                "kept_pct": 100 * np.count_nonzero(flat) / w.size,
                "pruned_bytes": p_bits / 8,
                "clustered_bytes": c_bits / 8,
                "huffman_bytes": h_bits / 8,
            }
        )
    kb = 8 * 1000
    return {
        "index_bits": ib,
        "cluster_bits": cbits,
        "dense_kb": dense_bits / kb,
        "pruned_kb": pruned_bits / kb,
        "clustered_kb": clustered_bits / kb,
        "huffman_kb": huffman_total / kb,
        "ratio_pruned": dense_bits / pruned_bits,
        "ratio_clustered": dense_bits / clustered_bits,
        "ratio_huffman": dense_bits / huffman_total,
        "layers": layers,
    }


def _is_clustered(x) -> bool:
    from jaxcompress.clustering import ClusteredArray

    return isinstance(x, ClusteredArray)


def _clustered_by_path(tree) -> dict:
    import jax

    from jaxcompress._core import key_path_str

    out = {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_clustered)[0]:
        if _is_clustered(leaf):
            out[key_path_str(kp)] = leaf
    return out


# -- sweeps ------------------------------------------------------------------------------------------
def pareto_front(
    points: list[dict],
    *,
    maximize: str = "accuracy",
    minimize: tuple[str, ...] = ("artifact_bytes",),
) -> list[bool]:
    """For each point, whether no other point is at least as good on every objective and better
    on one (``maximize`` one key, ``minimize`` the others)."""
    flags = []
    for i, a in enumerate(points):
        dominated = False
        for j, b in enumerate(points):
            if i == j:
                continue
            ge = b[maximize] >= a[maximize] and all(b[k] <= a[k] for k in minimize)
            gt = b[maximize] > a[maximize] or any(b[k] < a[k] for k in minimize)
            if ge and gt:
                dominated = True
                break
        flags.append(not dominated)
    return flags


def run_sweep(study, apply_fn, teacher) -> list[dict]:
    """Run every sweep value from the first affected stage on; records the trade-off points."""
    from tqdm.auto import tqdm

    r = study.recipe
    sw = r["sweep"]
    sec = sw["key"].split(".", 1)[0]
    chain = model_stage_chain(r)
    start = chain.index(sec)
    base = chain[start - 1]
    points = []
    values = sw["values"]
    bar = tqdm(list(enumerate(values)), desc=f"sweep {sw['key']}", disable=not study.progress)
    for i, v in bar:
        name = f"sweep_{i:02d}"

        def one(v=v, name=name):
            rv = r.with_value(sw["key"], v)
            tree = study.state(base)
            m = {}
            for st in chain[start:]:
                tree, m = run_model_stage(study, rv, st, tree, teacher)
            point = {
                "value": v,
                "accuracy": m["accuracy"],
                "error_pct": m["error_pct"],
                "sparsity": m["sparsity"],
                "weight_bits_per_weight": m["weight_bits_per_weight"],
                "storage_bytes": m["storage_bytes"],
            }
            if r.get("export", {"enabled": True})["enabled"]:
                point.update(_export_and_time(study, apply_fn, tree, name))
            else:
                point["artifact_bytes"] = point["storage_bytes"]
            return None, point

        points.append(study.stage(name, one))
        points[-1] = study.stage_metrics[name]
    flags = pareto_front(points)
    lat_key = "latency_p50_ms" if all("latency_p50_ms" in p for p in points) else None
    flags3 = pareto_front(points, minimize=("artifact_bytes", lat_key)) if lat_key else flags
    for p, f, f3 in zip(points, flags, flags3, strict=True):
        p["pareto_size"] = f
        p["pareto_size_latency"] = f3
    study.sweep_points = points
    return points


def _export_and_time(study, apply_fn, tree, name) -> dict:
    from jaxcompress.edge import benchmark, get_profile
    from jaxcompress.export import save

    path = os.path.join(study.out, "artifacts", f"{name}.jcx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = save(path, apply_fn, tree, np.asarray(study.data.x_test[:1]))
    e = study.recipe.get("edge")
    out = {"artifact_bytes": info.file_bytes, "artifact_bits_per_weight": info.bits_per_weight}
    if e is not None and e["enabled"]:
        devices = [get_profile(d) for d in e["devices"][:1]]
        rep = benchmark(
            path,
            devices=devices,
            warmup=min(5, e["warmup"]),
            iters=max(10, e["iters"] // 4),
            num_threads=e["threads"],
        ).to_dict()
        out["latency_p50_ms"] = 1e3 * rep["latency_measured_host"]["p50"]
        out["latency_p90_ms"] = 1e3 * rep["latency_measured_host"]["p90"]
        dev = e["devices"][0] if e["devices"] else None
        if dev in rep["projected"]:
            out["projected_device"] = dev
            out["projected_ms"] = 1e3 * rep["projected"][dev]["total_s"]
    return out
