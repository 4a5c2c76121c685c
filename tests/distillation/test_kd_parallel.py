"""Data parallel on jax.sharding: 4 CPU devices and 2 jax.distributed processes match 1 device.

The device count is fixed when JAX starts, so the runs happen in child processes
(``_kd_children.py``): one with ``jax_num_cpu_devices=4``, and two processes joined by
``jax.distributed.initialize`` on 127.0.0.1 (one CPU device each). All three start together.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = Path(__file__).with_name("_kd_children.py")
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(path):
    z = np.load(path)
    facts = json.loads(str(z["facts"]))
    groups = {}
    for k in z.files:
        if k == "facts":
            continue
        name, i = k.rsplit("_", 1)
        groups.setdefault(name, {})[int(i)] = z[k]
    return facts, {k: [v[i] for i in sorted(v)] for k, v in groups.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kd_parallel")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    port = str(_free_port())
    cmds = {
        "devices": [sys.executable, str(CHILD), "devices", "4", str(tmp / "d4.npz")],
        "proc0": [sys.executable, str(CHILD), "process", "0", "2", port, str(tmp / "p0.npz")],
        "proc1": [sys.executable, str(CHILD), "process", "1", "2", port, str(tmp / "p1.npz")],
    }
    procs = {
        k: subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k, c in cmds.items()
    }
    logs = {}
    for k, p in procs.items():
        try:
            logs[k] = p.communicate(timeout=TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise
        assert p.returncode == 0, f"{k} failed:\n{logs[k][-3000:]}"
    return {
        "devices": _load(tmp / "d4.npz"),
        "proc0": _load(tmp / "p0.npz"),
        "proc1": _load(tmp / "p1.npz"),
    }


def _maxdiff(a, b):
    assert len(a) == len(b) and len(a) > 0
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


def test_sharded_step_on_4_devices_matches_single_device(runs):
    facts, params = runs["devices"]
    for name in ("jit", "shard_map"):
        # the batch really is split 4 ways and the params really are replicated on 4 devices
        assert facts[f"{name}_x_shards"] == 4 and facts[f"{name}_x_shard_rows"] == 4
        assert facts[f"{name}_params_replicated"] and facts[f"{name}_params_devices"] == 4
        assert _maxdiff(params["single"], params[name]) < 1e-6, name
        np.testing.assert_allclose(facts[f"{name}_losses"], facts["single_losses"], rtol=1e-6)
    # and training moved the params (the comparison is not trivially between two inits)
    assert _maxdiff(params["single"], params["jit"]) < _maxdiff(
        params["single"], [np.zeros_like(p) for p in params["single"]]
    )


def test_distill_with_dropout_on_4_devices_matches_single_device(runs):
    facts, params = runs["devices"]
    assert _maxdiff(params["distill_single"], params["distill_mesh"]) < 1e-6
    np.testing.assert_allclose(facts["distill_mesh_loss"], facts["distill_single_loss"], rtol=1e-6)
    assert facts["distill_single_loss"][1] < facts["distill_single_loss"][0]


def test_two_process_jax_distributed_matches_single_device(runs):
    _, ref = runs["devices"]
    for k in ("proc0", "proc1"):
        facts, params = runs[k]
        assert facts["process_count"] == 2
        assert facts["global_devices"] == 2 and facts["local_devices"] == 1
        assert _maxdiff(ref["distill_single"], params["p"]) < 1e-6
