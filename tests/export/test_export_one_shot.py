"""GPTQ-quantized and SparseGPT-pruned MLPs go through the artifact and run on the edge runtime
with outputs matching JAX (same dequantized / pruned weights)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcompress.export import reference_output, save
from jaxcompress.models import MLP, functional
from jaxcompress.pruning import sparsegpt_params
from jaxcompress.quantization import QuantizedArray, capture_stats, gptq_params
from jaxcompress_kernels import runtime

TOL = 1e-5


@pytest.fixture(scope="module")
def mlp():
    apply_fn, params = functional(MLP(32, (64,), 10, rngs=nnx.Rngs(0)))
    x = np.asarray(jax.random.normal(jax.random.key(0), (96, 32)), np.float32)
    return apply_fn, params, x, capture_stats(apply_fn, params, np.array_split(x, 3))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def _run_both(tmp_path, apply_fn, params, x):
    path = tmp_path / "model.jcx"
    info = save(path, apply_fn, params, x[:3])
    rt = runtime.load(path, num_threads=1)
    assert rt.self_check().ok
    y = rt.run(x[:8])
    ref = np.asarray(reference_output(apply_fn, params, x[:8]))
    assert _rel(ref, y) <= TOL
    return info


def test_gptq_mlp_runs_on_the_edge_runtime(tmp_path, mlp):
    apply_fn, params, x, stats = mlp
    qp = gptq_params(params, stats, bits=4, scheme="affine", group_size=16)
    leaves = jax.tree.leaves(qp, is_leaf=lambda v: isinstance(v, QuantizedArray))
    assert sum(isinstance(v, QuantizedArray) for v in leaves) == 2
    info = _run_both(tmp_path, apply_fn, qp, x)
    enc = {n: t["encoding"] for n, t in info.tensors.items() if n.endswith("kernel")}
    assert set(enc.values()) == {"packed"}, enc


def test_sparsegpt_mlp_runs_on_the_edge_runtime(tmp_path, mlp):
    apply_fn, params, x, stats = mlp
    res = sparsegpt_params(params, stats, n=2, m=4)
    info = _run_both(tmp_path, apply_fn, res.params, x)
    enc = {n: t["encoding"] for n, t in info.tensors.items() if n.endswith("kernel")}
    assert set(enc.values()) == {"nm"}, enc  # 2:4 masks reach the N:M kernels unchanged
