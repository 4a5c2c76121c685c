"""The model stages of a study (train, distill, prune, quantize, cluster) and sweeps. Every function here calls only the public API of the other subpackages."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxcompress._core import named_leaves

__all__ = [
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


def _jitter(pixels: int):
    """``augment(x, key)``: shift each image ``(B, H, W, C)`` by its own random offset in
    ``[-pixels, pixels]^2`` (zero padding), the input jitter of Hinton et al. 2015."""
    import jax
    import jax.numpy as jnp

    def augment(x, key):
        b, h, w, _ = x.shape
        padded = jnp.pad(x, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
        offsets = jax.random.randint(key, (b, 2), 0, 2 * pixels + 1)

        def crop(img, off):
            return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

        return jax.vmap(crop)(padded, offsets)

    return augment


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
            augment=_jitter(spec["jitter"]) if spec.get("jitter") else None,
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
            precompute_teacher=True,
            progress=progress,
        )
        tree = res.params
        info = {k: d[k] for k in ("temperature", "alpha", "epochs", "lr")}
    elif name in ("prune", "quantize", "cluster"):
        loss_fn = _finetune_loss(recipe, apply_fn, teacher)
        run = {"prune": _prune, "quantize": _quantize, "cluster": _cluster}[name]
        tree, info = run(recipe[name], apply_fn, prev, data, key, progress, loss_fn)
        info["finetune_loss"] = (
            "cross-entropy"
            if loss_fn is None
            else f"distillation (T = {recipe['distill']['temperature']:g}, "
            f"alpha = {recipe['distill']['alpha']:g})"
        )
    metrics = dict(study.evaluate(apply_fn, tree), **tree_metrics(tree))
    metrics["settings"] = info
    metrics["title"] = name
    if name == "teacher":
        metrics.pop("per_layer", None)
    return tree, metrics


def _finetune_loss(recipe, apply_fn, teacher):
    """The fine-tuning loss of the stages after distillation: with ``distill.finetune`` (default)
    the distillation loss against the same teacher, else ``None`` (cross-entropy)."""
    d = recipe.get("distill")
    if teacher is None or d is None or not d.get("finetune", True):
        return None
    from jaxcompress.distillation import kd_loss

    t_apply, t_params = teacher
    temperature, alpha = d["temperature"], d["alpha"]

    def loss_fn(p, x, y, k):
        logits = apply_fn(p, x, train=True, key=k)
        t_logits = t_apply(t_params, x)
        return kd_loss(logits, t_logits, temperature=temperature, alpha=alpha, labels=y)

    return loss_fn


def _prune(p: dict, apply_fn, params, data, key, progress, loss_fn=None):
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
            loss_fn=loss_fn,
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
                loss_fn=loss_fn,
                progress=progress,
            ).params
    return params, info


def _threshold_masks(params, quality, where_rx):
    """Han et al. 2015 masks ``|w| >= q * std(layer)``; a ``{regex: q}`` table gives each
    matching kernel its own quality (`pruning.per_layer_threshold_masks`)."""
    from jaxcompress import pruning

    if isinstance(quality, dict):
        return pruning.per_layer_threshold_masks(params, quality)
    return pruning.threshold_masks(params, quality=quality, where=_where(where_rx))


def _quantize(q: dict, apply_fn, params, data, key, progress, loss_fn=None):
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
            loss_fn=loss_fn,
            progress=progress,
        ).params
    tree = (
        quantize_params(params, group_fallback="per_channel", **kw)
        if kw["group_size"]
        else quantize_params(params, **kw)
    )
    return tree, dict(kw, where=q["where"], qat_epochs=q["qat_epochs"])


def _cluster(c: dict, apply_fn, params, data, key, progress, loss_fn=None):
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
            loss_fn=loss_fn,
            progress=progress,
        )
        ct = update_codebooks(ct, res.params)
    return ct, {
        "bits": c["bits"],
        "init": c["init"],
        "where": c["where"],
        "finetune_epochs": c["finetune_epochs"],
    }


# -- sweeps ------------------------------------------------------------------------------------------
def pareto_front(
    points: list[dict],
    *,
    maximize: str = "accuracy",
    minimize: tuple[str, ...] = ("artifact_bytes",),
    ties: dict[str, float] | None = None,
) -> list[bool]:
    """For each point, whether no other point beats it.

    ``b`` beats ``a`` when ``b`` is at least as good on every objective and better on one
    (``maximize`` one key, ``minimize`` the others), where a difference of at most
    ``ties[key]`` (the measured noise of that key, e.g. the latency's p10-p90 spread) counts as
    a tie, never as better or worse.

    Args:
      points: dicts holding the objective keys.
      maximize: the key to maximize.
      minimize: the keys to minimize.
      ties: ``{key: tolerance}``; missing keys compare exactly.

    Returns:
      One bool per point: on the front.
    """
    ties = ties or {}

    def better(b, a, k, sign):  # b better than a on k, beyond the tie tolerance
        return sign * (b[k] - a[k]) > ties.get(k, 0.0)

    flags = []
    keys = [(maximize, 1.0)] + [(k, -1.0) for k in minimize]
    for i, a in enumerate(points):
        dominated = False
        for j, b in enumerate(points):
            if i == j:
                continue
            no_worse = all(not better(a, b, k, sg) for k, sg in keys)
            strictly = any(better(b, a, k, sg) for k, sg in keys)
            if no_worse and strictly:
                dominated = True
                break
        flags.append(not dominated)
    return flags


def accuracy_noise(acc: float, n: int) -> float:
    """One binomial standard error of a test accuracy ``acc`` measured on ``n`` examples."""
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1)))


def run_sweep(study, apply_fn, teacher) -> list[dict]:
    """Run every sweep value from the first affected stage on; returns the trade-off points.

    Each point carries ``pareto_size`` (on the accuracy / artifact-size front) and
    ``pareto_size_latency`` (on the accuracy / size / latency front); accuracy differences within
    one standard error and latency differences within the points' p10-p90 spread are ties.
    """
    r = study.recipe
    sw = r["sweep"]
    sec = sw["key"].split(".", 1)[0]
    chain = model_stage_chain(r)
    start = chain.index(sec)
    base = chain[start - 1]
    points = []
    for i, v in enumerate(sw["values"]):
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
                "n_test": m["n_test"],
                "sparsity": m["sparsity"],
                "weight_bits_per_weight": m["weight_bits_per_weight"],
                "storage_bytes": m["storage_bytes"],
            }
            if r.get("export", {"enabled": True})["enabled"]:
                point.update(_export_and_time(study, apply_fn, tree, name))
            else:
                point["artifact_bytes"] = point["storage_bytes"]
            return None, point

        study.stage(name, one)
        points.append(dict(study.stage_metrics[name]))
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
    return points


def _export_and_time(study, apply_fn, tree, name) -> dict:
    from jaxcompress.edge import benchmark, get_profile
    from jaxcompress.export import save
    from jaxcompress.study._util import latency_percentiles
    from jaxcompress_kernels import artifact as _artifact
    from jaxcompress_kernels import runtime as _runtime

    path = os.path.join(study.out, "artifacts", f"{name}.jcx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = save(path, apply_fn, tree, np.asarray(study.data.x_test[:1]))
    e = study.recipe.get("edge")
    out = {"artifact_bytes": info.file_bytes, "artifact_bits_per_weight": info.bits_per_weight}
    if e is not None and e["enabled"]:
        rt = _runtime.Runtime(_artifact.load(path), num_threads=e["threads"])
        x1 = np.asarray(study.data.x_test[:1], np.float32)
        lat = latency_percentiles(
            {name: lambda: rt.run(x1)}, iters=max(10, e["iters"]), warmup=min(5, e["warmup"])
        )[name]
        out["latency_p10_ms"] = lat["p10"]
        out["latency_p50_ms"] = lat["p50"]
        out["latency_p90_ms"] = lat["p90"]
        dev = e["devices"][0] if e["devices"] else None
        if dev is not None:
            rep = benchmark(rt, devices=[get_profile(dev)], warmup=1, iters=3).to_dict()
            if dev in rep["projected"]:
                out["projected_device"] = dev
                out["projected_ms"] = 1e3 * rep["projected"][dev]["total_s"]
    return out
