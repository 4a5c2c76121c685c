"""Child processes for the data-parallel tests (the device count must be set before JAX starts).

    python _kd_children.py devices N OUT          # N CPU devices in one process
    python _kd_children.py process I P PORT OUT   # process I of P under jax.distributed
    python _kd_children.py single OUT             # the single-device reference of `process`

Each writes an .npz with the trained params (and a few facts about the shardings).
"""

import json
import sys


def problem():
    import jax
    import numpy as np
    from flax import nnx

    from jaxcompress.models import MLP, functional

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 5, size=96).astype(np.int32)
    t_apply, t_params = functional(MLP(36, (24,), 5, rngs=nnx.Rngs(0)))
    s_apply, s_params = functional(MLP(36, (12,), 5, dropout=0.2, rngs=nnx.Rngs(1)))
    s0_apply, s0_params = functional(MLP(36, (12,), 5, rngs=nnx.Rngs(1)))
    del jax
    return x, y, (t_apply, t_params), (s_apply, s_params), (s0_apply, s0_params)


def flat(tree):
    import jax
    import numpy as np

    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def run_distill(mesh):
    import jax
    import optax

    from jaxcompress.distillation import distill

    x, y, (t_apply, t_params), (s_apply, s_params), _ = problem()
    res = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        epochs=2,
        batch_size=24,
        key=jax.random.key(7),
        temperature=3.0,
        alpha=0.8,
        mesh=mesh,
        progress=False,
    )
    return res


def devices_mode(n, out):
    import jax

    jax.config.update("jax_num_cpu_devices", n)
    import numpy as np
    import optax

    from jaxcompress.distillation import (
        data_mesh,
        kd_loss,
        make_train_step,
        replicate,
        shard_batch,
    )

    assert len(jax.devices()) == n, jax.devices()
    mesh = data_mesh()
    x, y, (t_apply, t_params), _, (s_apply, s_params) = problem()

    def loss_fn(p, xb, yb, key, tp):
        del key
        return kd_loss(s_apply(p, xb), t_apply(tp, xb), temperature=2.0, alpha=0.7, labels=yb)

    opt = optax.adam(1e-2)
    facts = {}
    results = {}
    for name, kwargs in [
        ("single", {}),
        ("jit", {"mesh": mesh}),
        ("shard_map", {"mesh": mesh, "use_shard_map": True}),
    ]:
        step = make_train_step(loss_fn, opt, **kwargs)
        params, opt_state, teacher = s_params, opt.init(s_params), t_params
        if kwargs:
            params, opt_state, teacher = replicate((params, opt_state, teacher), mesh)
        losses = []
        for i in range(6):
            xb, yb = x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]
            if kwargs:
                xb, yb = shard_batch((xb, yb), mesh)
                if i == 0:
                    facts[f"{name}_x_shards"] = len(xb.addressable_shards)
                    facts[f"{name}_x_shard_rows"] = int(xb.addressable_shards[0].data.shape[0])
            params, opt_state, loss = step(params, opt_state, xb, yb, jax.random.key(i), teacher)
            losses.append(float(loss))
        if kwargs:
            leaf = jax.tree.leaves(params)[0]
            facts[f"{name}_params_replicated"] = bool(leaf.sharding.is_fully_replicated)
            facts[f"{name}_params_devices"] = len(leaf.sharding.device_set)
        results[name] = flat(params)
        facts[f"{name}_losses"] = losses

    d_single = run_distill(None)
    d_mesh = run_distill(mesh)
    results["distill_single"] = flat(d_single.params)
    results["distill_mesh"] = flat(d_mesh.params)
    facts["distill_single_loss"] = [h["loss"] for h in d_single.history]
    facts["distill_mesh_loss"] = [h["loss"] for h in d_mesh.history]
    arrays = {f"{k}_{i}": a for k, v in results.items() for i, a in enumerate(v)}
    np.savez(out, facts=json.dumps(facts), **arrays)


def process_mode(i, p, port, out):
    import jax

    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=p,
        process_id=i,
        initialization_timeout=60,
    )
    import numpy as np

    from jaxcompress.distillation import data_mesh

    mesh = data_mesh()
    res = run_distill(mesh)
    params = flat(res.params)  # fully replicated: every process can read them
    facts = {
        "process_count": jax.process_count(),
        "global_devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "loss": [h["loss"] for h in res.history],
    }
    np.savez(out, facts=json.dumps(facts), **{f"p_{k}": a for k, a in enumerate(params)})
    jax.distributed.shutdown()


def single_mode(out):
    import numpy as np

    res = run_distill(None)
    np.savez(
        out,
        facts=json.dumps({"loss": [h["loss"] for h in res.history]}),
        **{f"p_{k}": a for k, a in enumerate(flat(res.params))},
    )


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "devices":
        devices_mode(int(sys.argv[2]), sys.argv[3])
    elif mode == "process":
        process_mode(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif mode == "single":
        single_mode(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode}")
