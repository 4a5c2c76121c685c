"""The model stages of a study: teacher, student, distill, prune, quantize, cluster.

Each is a :class:`~jaxcompress.study._types.Stage` in :data:`MODEL_STAGES`: it reads its typed
config from the recipe (`TrainConfig`, `DistillConfig`, `PruneConfig`, `QuantizeConfig`,
`ClusterConfig`), takes the previous model stage's params (and the teacher's, for distillation
and distillation-loss fine-tuning) as declared inputs, and returns the new params with their
metrics. The algorithms are the capability packages' public API (`training.fit`,
`distillation.distill`, `pruning`, `quantization`, `clustering`); this module only wires them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxcompress._core import named_leaves
from jaxcompress.study._types import PREVIOUS, Stage, StageOutput

__all__ = [
    "MODEL_STAGES",
    "accuracy_noise",
    "model_stage_chain",
    "pareto_front",
    "tree_metrics",
]


def model_stage_chain(recipe) -> list[str]:
    """The student's model stages in order, e.g. ``["student", "distill", "prune", "cluster"]``."""
    return ["student"] + [s for s in ("distill", "prune", "quantize", "cluster") if s in recipe]


def _adam(lr: float, cfg: Any = None, epochs: int = 0, n_train: int = 0):
    """Adam at ``lr``; with ``cfg.schedule == "cosine"`` decayed over the section's steps."""
    import optax

    if cfg is not None and cfg.schedule == "cosine" and epochs:
        steps = max(1, epochs * (n_train // cfg.batch_size))
        return optax.adam(optax.cosine_decay_schedule(lr, steps))
    return optax.adam(lr)


def _plain(v: Any) -> Any:
    """A config value as JSON-able data (read-only tables -> dicts, tuples -> lists)."""
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


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


def _train_data(ctx) -> tuple:
    ds = ctx.data
    return (ds.x_train, ds.y_train)


def _evaluated(ctx, name: str, apply_fn, tree, settings: dict) -> StageOutput:
    """The stage's output: its params and their metrics (test accuracy, sizes, per layer)."""
    metrics = dict(ctx.evaluate(apply_fn, tree), **tree_metrics(tree))
    metrics["settings"] = settings
    metrics["title"] = name
    if name == "teacher":
        metrics.pop("per_layer", None)
    return StageOutput(tree, metrics)


def _teacher(ctx, inputs) -> tuple | None:
    """``(apply_fn, params)`` of the teacher when it is among the inputs."""
    out = inputs.get("teacher")
    return None if out is None else (ctx.model("teacher")[0], out.state)


def _run_train(name: str):
    """``[teacher]`` / ``[student]``: `training.fit` with Adam from the model's init."""

    def run(ctx, recipe, inputs) -> StageOutput:
        from jaxcompress.training import fit

        cfg = recipe.config(name)
        apply_fn, params = ctx.model(name)
        data = _train_data(ctx)
        res = fit(
            apply_fn,
            params,
            data,
            optimizer=_adam(cfg.lr, cfg, cfg.epochs, len(data[0])),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            key=ctx.key(name),
            augment=_jitter(cfg.jitter) if cfg.jitter else None,
            progress=ctx.progress,
        )
        info = {"epochs": cfg.epochs, "lr": cfg.lr, "model": cfg.model}
        return _evaluated(ctx, name, apply_fn, res.params, info)

    return run


def _run_distill(ctx, recipe, inputs) -> StageOutput:
    """``[distill]``: the student trained again from its init against the teacher."""
    from jaxcompress.distillation import distill

    d = recipe.config("distill")
    apply_fn, fresh = ctx.model("student")  # distillation trains the student from its init
    t_apply, t_params = _teacher(ctx, inputs)
    data = _train_data(ctx)
    res = distill(
        apply_fn,
        fresh,
        t_apply,
        t_params,
        data,
        optimizer=_adam(d.lr, d, d.epochs, len(data[0])),
        epochs=d.epochs,
        batch_size=d.batch_size,
        key=ctx.key("distill"),
        temperature=d.temperature,
        alpha=d.alpha,
        precompute_teacher=True,
        progress=ctx.progress,
    )
    info = {"temperature": d.temperature, "alpha": d.alpha, "epochs": d.epochs, "lr": d.lr}
    return _evaluated(ctx, "distill", apply_fn, res.params, info)


def _run_compress(name: str, compress):
    """``[prune]`` / ``[quantize]`` / ``[cluster]`` on the previous stage's params, fine-tuned
    with the distillation loss when ``distill.finetune`` (else cross-entropy)."""

    def run(ctx, recipe, inputs) -> StageOutput:
        apply_fn, _ = ctx.model("student")
        loss_fn = _finetune_loss(recipe, apply_fn, _teacher(ctx, inputs))
        tree, info = compress(
            recipe.config(name),
            apply_fn,
            inputs[PREVIOUS].state,
            _train_data(ctx),
            ctx.key(name),
            ctx.progress,
            loss_fn,
        )
        if loss_fn is None:
            info["finetune_loss"] = "cross-entropy"
        else:
            d = recipe.config("distill")
            info["finetune_loss"] = f"distillation (T = {d.temperature:g}, alpha = {d.alpha:g})"
        return _evaluated(ctx, name, apply_fn, tree, info)

    return run


def _finetune_loss(recipe, apply_fn, teacher):
    """The fine-tuning loss of the stages after distillation: with ``distill.finetune`` (default)
    the distillation loss against the same teacher, else ``None`` (cross-entropy)."""
    d = recipe.config("distill")
    if teacher is None or d is None or not d.finetune:
        return None
    from jaxcompress.distillation import kd_loss

    t_apply, t_params = teacher
    temperature, alpha = d.temperature, d.alpha

    def loss_fn(p, x, y, k):
        logits = apply_fn(p, x, train=True, key=k)
        t_logits = t_apply(t_params, x)
        return kd_loss(logits, t_logits, temperature=temperature, alpha=alpha, labels=y)

    return loss_fn


def _prune(p, apply_fn, params, data, key, progress, loss_fn=None):
    import jax
    import optax

    from jaxcompress import pruning
    from jaxcompress.training import fit

    method = p.method
    info = {"method": method, "rounds": p.rounds, "epochs_per_round": p.epochs, "lr": p.lr}
    if method == "magnitude":
        target = _plain(p.sparsity)
        info["sparsity"] = target
        info["scope"] = p.scope
        res = pruning.iterative_pruning(
            apply_fn,
            params,
            data,
            target=target,
            rounds=p.rounds,
            epochs_per_round=p.epochs,
            optimizer=_adam(p.lr, p, p.epochs, len(data[0])),
            batch_size=p.batch_size,
            key=key,
            scope=p.scope,
            where=_where(p.where),
            progress=progress,
            loss_fn=loss_fn,
        )
        return res.params, info
    # threshold (Han et al. 2015: |w| < quality * std(layer)) and N:M: masks, then masked retrain
    if method == "threshold":
        info["quality"] = _plain(p.quality)
    else:
        info["n:m"] = f"{p.n}:{p.m}"
    for r in range(p.rounds if method == "threshold" else 1):
        if method == "threshold":
            masks = _threshold_masks(params, _plain(p.quality), p.where)
        else:
            masks = pruning.nm_masks(params, p.n, p.m, where=_where(p.where))
        params = pruning.apply_masks(params, masks)
        if p.epochs:
            opt = optax.chain(_adam(p.lr, p, p.epochs, len(data[0])), pruning.fixed_masks(masks))
            params = fit(
                apply_fn,
                params,
                data,
                optimizer=opt,
                epochs=p.epochs,
                batch_size=p.batch_size,
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


def _quantize(q, apply_fn, params, data, key, progress, loss_fn=None):
    import optax

    from jaxcompress import pruning
    from jaxcompress.quantization import fake_quantize, quantize_params
    from jaxcompress.training import fit

    kw = {
        "bits": q.bits,
        "scheme": q.scheme,
        "axis": q.axis,
        "group_size": q.group_size or None,
        "where": _where(q.where),
    }
    if q.qat_epochs:
        opt = optax.chain(
            _adam(q.lr, q, q.qat_epochs, len(data[0])),
            pruning.fixed_masks(_keep_masks(params)),
        )
        params = fit(
            apply_fn,
            params,
            data,
            optimizer=opt,
            epochs=q.qat_epochs,
            batch_size=q.batch_size,
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
    return tree, dict(kw, where=q.where, qat_epochs=q.qat_epochs)


def _cluster(c, apply_fn, params, data, key, progress, loss_fn=None):
    import optax

    from jaxcompress.clustering import (
        centroid_finetuning,
        cluster,
        shared_params,
        update_codebooks,
    )
    from jaxcompress.training import fit

    ct = cluster(params, bits=c.bits, init=c.init, key=key, where=_where(c.where))
    if c.finetune_epochs:
        opt = optax.chain(centroid_finetuning(ct), _adam(c.lr, c, c.finetune_epochs, len(data[0])))
        res = fit(
            apply_fn,
            shared_params(ct),
            data,
            optimizer=opt,
            epochs=c.finetune_epochs,
            batch_size=c.batch_size,
            key=key,
            loss_fn=loss_fn,
            progress=progress,
        )
        ct = update_codebooks(ct, res.params)
    return ct, {
        "bits": c.bits,
        "init": c.init,
        "where": c.where,
        "finetune_epochs": c.finetune_epochs,
    }


def _has(section: str):
    return lambda recipe: section in recipe


# The model stages in chain order. Each compresses its PREVIOUS stage's params; "teacher" is an
# input of the stages that may learn from it (left out when the recipe has no teacher).
MODEL_STAGES: dict[str, Stage] = {
    "teacher": Stage("teacher", (), _run_train("teacher"), _has("teacher")),
    "student": Stage("student", (), _run_train("student"), _has("student")),
    "distill": Stage("distill", ("teacher",), _run_distill, _has("distill")),
    "prune": Stage("prune", (PREVIOUS, "teacher"), _run_compress("prune", _prune), _has("prune")),
    "quantize": Stage(
        "quantize", (PREVIOUS, "teacher"), _run_compress("quantize", _quantize), _has("quantize")
    ),
    "cluster": Stage(
        "cluster", (PREVIOUS, "teacher"), _run_compress("cluster", _cluster), _has("cluster")
    ),
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
