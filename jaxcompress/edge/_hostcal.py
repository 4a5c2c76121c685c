"""The host's cost parameters, measured: per-step overheads and per-op-class throughput.

A projection of this machine must agree with what the edge runtime measures on it, so the host's
`CostParams` are not derived from peaks: they are measured on the runtime itself. Seven small
calibration graphs (none of them a model the reports validate on) are exported once and run:
a chain of tiny elementwise ops (the per-step dispatch overhead), stacks of 3x3 / 1x1 convs at
two sizes (the conv kernels' set-up cost and throughput), a thin conv / depthwise / pointwise
stack on a large image (the per-output cost), stacks of depthwise convs at two sizes
(one with an average pool), and an MLP. Each graph runs ``warmup`` times, then
``iters`` times; the median time of every execution step of the runtime's plan and of the whole
``run`` are kept. The fit is linear least squares with non-negative coefficients::

    t_step  = o + o_mac * [conv/linear step] + p * conv outputs(step) + sum_c k_c * F_c(step)
              (o: per-step overhead, o_mac: conv/linear set-up, p: per output pixel-channel of a
               conv, k_c: s/FLOP of class c)
    t_run   = g + sum_steps t_step               (g: per-run overhead: input check, output copy)

The result is cached in ``$XDG_CACHE_HOME/jaxcompress/host_cost.json`` (default
``~/.cache/...``), keyed by the CPU model, CPU count, kernel threads and library versions, so
the ~10 s measurement runs once per machine; ``JAXCOMPRESS_HOST_CACHE=0`` disables the cache.
The host's rates already include its caches and memory system for models of this size, so the
host's cost model has no separate bandwidth ceiling (``memory_ceiling=False``).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from jaxcompress.edge._costmodel import CostParams
from jaxcompress_kernels.machine import cpu_model

__all__ = ["measure_host_cost", "host_cost"]

_CLASSES = ("conv", "dwconv", "linear", "pool", "elementwise")


def _calibration_graphs(folder: str) -> list[str]:
    """Exports the four calibration graphs; returns their paths."""
    import jax
    import jax.numpy as jnp

    from jaxcompress.export import save

    rng = np.random.default_rng(0)

    def w(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * 0.1)

    def conv(x, k, groups=1):
        return jax.lax.conv_general_dilated(
            x,
            k,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    def chain(p, x):
        for _ in range(24):
            x = jnp.tanh(x)
        return x

    def convnet(p, x):
        x = jax.nn.relu(conv(x, p["c1"]) + p["b1"])
        x = jax.nn.relu(conv(x, p["c2"]) + p["b2"])
        return conv(x, p["c3"]) + p["b3"]

    def dwnet(p, x):
        x = jax.nn.relu(conv(x, p["d1"], 24) + p["e1"])
        x = jax.nn.relu(conv(x, p["d2"], 24) + p["e2"])
        return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 4, 4, 1), (1, 4, 4, 1), "VALID") / 16

    def mlp(p, x):
        x = jax.nn.relu(x @ p["l1"] + p["m1"])
        x = jax.nn.relu(x @ p["l2"] + p["m2"])
        return x @ p["l3"] + p["m3"]

    def smallconv(p, x):
        for i in range(3):
            x = jax.nn.relu(conv(x, p[f"k{i}"]) + p[f"b{i}"])
        return conv(x, p["k3"]) + p["b3"]

    def smalldw(p, x):
        for i in range(3):
            x = jax.nn.relu(conv(x, p[f"d{i}"], 48) + p[f"e{i}"])
            x = jax.nn.relu(conv(x, p[f"q{i}"]) + p[f"r{i}"])
        return x

    def thinnet(p, x):
        x = jax.nn.relu(conv(x, p["t0"]) + p["u0"])
        x = jax.nn.relu(conv(x, p["t1"], 8) + p["u1"])
        return jax.nn.relu(conv(x, p["t2"]) + p["u2"])

    specs = [
        ("chain", chain, {"unused": w(2, 2)}, (1, 64)),
        (
            "thinnet",
            thinnet,
            {
                "t0": w(3, 3, 3, 8),
                "u0": w(8),
                "t1": w(3, 3, 1, 8),
                "u1": w(8),
                "t2": w(1, 1, 8, 12),
                "u2": w(12),
            },
            (1, 36, 36, 3),
        ),
        (
            "smallconv",
            smallconv,
            {
                **{f"k{i}": w(3, 3, 12, 12) for i in range(3)},
                **{f"b{i}": w(12) for i in range(3)},
                "k3": w(1, 1, 12, 24),
                "b3": w(24),
            },
            (1, 5, 5, 12),
        ),
        (
            "smalldw",
            smalldw,
            {
                **{f"d{i}": w(3, 3, 1, 48) for i in range(3)},
                **{f"e{i}": w(48) for i in range(3)},
                **{f"q{i}": w(1, 1, 48, 48) for i in range(3)},
                **{f"r{i}": w(48) for i in range(3)},
            },
            (1, 6, 6, 48),
        ),
        (
            "convnet",
            convnet,
            {
                "c1": w(3, 3, 8, 24),
                "b1": w(24),
                "c2": w(3, 3, 24, 24),
                "b2": w(24),
                "c3": w(1, 1, 24, 48),
                "b3": w(48),
            },
            (1, 20, 20, 8),
        ),
        (
            "dwnet",
            dwnet,
            {"d1": w(3, 3, 1, 24), "e1": w(24), "d2": w(3, 3, 1, 24), "e2": w(24)},
            (1, 40, 40, 24),
        ),
        (
            "mlp",
            mlp,
            {
                "l1": w(400, 200),
                "m1": w(200),
                "l2": w(200, 200),
                "m2": w(200),
                "l3": w(200, 20),
                "m3": w(20),
            },
            (1, 400),
        ),
    ]
    paths = []
    for name, fn, params, shape in specs:
        path = os.path.join(folder, f"{name}.jcx")
        x = rng.standard_normal(shape).astype(np.float32)
        save(path, fn, params, x)
        paths.append(path)
    return paths


def _class_flops(graph, members) -> dict:
    from jaxcompress.edge._costmodel import op_class

    out = dict.fromkeys(_CLASSES, 0.0)
    for j in members:
        o = graph.ops[j]
        c = op_class(o)
        # a fused epilogue (bias, ReLU) is priced per conv output (as the cost model does)
        if c in out and not (
            o.kernel.startswith("fused into") and c not in ("conv", "dwconv", "linear")
        ):
            out[c] += float(o.flops)
    return out


def _conv_outputs(graph, members) -> float:
    from jaxcompress.edge._costmodel import op_class

    return float(
        sum(
            graph.ops[j].out_elements
            for j in members
            if op_class(graph.ops[j]) in ("conv", "dwconv")
        )
    )


def measure_host_cost(*, num_threads: int | None = None, warmup: int = 20, iters: int = 200):
    """Measures this host's `CostParams` on the edge runtime (see the module docstring).

    Returns:
      ``(CostParams, info)`` with ``info`` a dict of the fit (per-class s/FLOP, overheads, the
      fit's median relative error over the calibration steps).
    """
    from scipy.optimize import nnls

    from jaxcompress.edge._graph import graph_from_artifact
    from jaxcompress_kernels import runtime as _runtime

    rows, targets, run_rest = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for path in _calibration_graphs(d):
            rt = _runtime.load(path, num_threads=num_threads)
            g = graph_from_artifact(rt)
            x = np.asarray(rt.artifact.sample_input[:1], np.float32)
            for _ in range(warmup):
                rt.run(x)
            steps, totals = [], []
            import time

            for _ in range(iters):
                t0 = time.perf_counter()
                rt.run(x)
                totals.append(time.perf_counter() - t0)
                steps.append([t for _, _, t in rt.last_times])
            med = np.median(np.asarray(steps), axis=0)
            ex = rt._exec(1)
            for t, members in zip(med, ex.step_members, strict=True):
                fl = _class_flops(g, members)
                mac = float(any(fl[c] > 0 for c in ("conv", "dwconv", "linear")))
                outs = _conv_outputs(g, members)
                rows.append([1.0, mac, outs] + [fl[c] for c in _CLASSES])
                targets.append(float(t))
            run_rest.append(float(np.median(totals)) - float(med.sum()))
    a, b = np.asarray(rows), np.asarray(targets)
    # scale columns so nnls is well conditioned
    scale = np.maximum(a.max(axis=0), 1e-30)
    coef, _ = nnls(a / scale, b)
    coef = coef / scale
    overhead, mac_overhead, per_out = float(coef[0]), float(coef[1]), float(coef[2])
    k = {c: float(v) for c, v in zip(_CLASSES, coef[3:], strict=True)}
    # a class the calibration could not separate from the overhead keeps the linear rate
    fallback = k["linear"] or max(k.values()) or 1e-10
    for c in _CLASSES:
        if k[c] <= 0:
            k[c] = fallback
    pred = a @ np.asarray([overhead, mac_overhead, per_out, *[k[c] for c in _CLASSES]])
    rel = np.abs(pred - b) / b
    info = {
        "op_overhead_s": overhead,
        "mac_op_overhead_s": mac_overhead,
        "seconds_per_output": per_out,
        "run_overhead_s": float(max(np.median(run_rest), 0.0)),
        "seconds_per_flop": k,
        "steps": len(b),
        "fit_median_rel_error": float(np.median(rel)),
    }
    return _params_from(info), info


def _params_from(info: dict, peak_flops: float | None = None) -> CostParams:
    k = info["seconds_per_flop"]
    peak = peak_flops or 1.0
    eff = {c: 1.0 / (k[c] * peak) for c in _CLASSES}
    eff["move"] = eff["elementwise"]
    return CostParams(
        efficiency=eff,
        op_overhead_s=info["op_overhead_s"],
        mac_op_overhead_s=info.get("mac_op_overhead_s", 0.0),
        seconds_per_output=info.get("seconds_per_output", 0.0),
        graph_overhead_s=info["run_overhead_s"],
        memory_ceiling=False,
        engine="jaxcompress_kernels.runtime",
    )


def _cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcompress", "host_cost.json")


def _key(num_threads) -> str:
    from importlib.metadata import version

    parts = [cpu_model(), str(os.cpu_count()), str(num_threads)]
    for pkg in ("numpy", "numba", "jaxcompress"):
        try:
            parts.append(f"{pkg}={version(pkg)}")
        except Exception:  # noqa: BLE001 - a missing distribution only changes the key
            parts.append(f"{pkg}=?")
    return " | ".join(parts)


def host_cost(peak_flops: float, *, num_threads: int | None = None) -> tuple[CostParams, dict]:
    """The host's measured `CostParams` (efficiencies relative to `peak_flops`), cached on disk."""
    use_cache = os.environ.get("JAXCOMPRESS_HOST_CACHE", "1") != "0"
    key = _key(num_threads)
    path = _cache_path()
    info = None
    if use_cache and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            info = data.get(key)
        except (OSError, json.JSONDecodeError):
            info = None
    if info is None:
        _, info = measure_host_cost(num_threads=num_threads)
        if info["fit_median_rel_error"] > 0.25:  # a disturbed measurement: measure once more
            _, again = measure_host_cost(num_threads=num_threads)
            if again["fit_median_rel_error"] < info["fit_median_rel_error"]:
                info = again
        if use_cache and info["fit_median_rel_error"] <= 0.25:
            from jaxcompress_kernels.format.container import atomic_write

            try:
                data = {}
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as f:
                        data = json.load(f)
            except (OSError, json.JSONDecodeError):
                data = {}
            data[key] = info
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())
            except OSError:
                pass  # a read-only home only costs a re-measurement next time
    return _params_from(info, peak_flops), info
