"""Every quantization layout the writer can meet round-trips through the artifact: the runtime and
ONNX Runtime match the JAX model with the dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from jaxcompress._core import named_leaves
from jaxcompress.export import cross_check, save
from jaxcompress.models import MLP, functional
from jaxcompress.quantization import dequantize_params, quantize_params
from jaxcompress_kernels import artifact, runtime

CASES = [
    # (quantize_params kwargs, expected encoding of hidden/0/kernel, kernel prefix)
    (dict(bits=8, axis=None), "packed", "qmatmul(8-bit"),  # per-tensor
    (dict(bits=4, scheme="affine"), "packed", "qmatmul(4-bit"),
    (dict(bits=3, group_size=8), "packed", "qmatmul(3-bit, g=8"),
    (dict(bits=2), "packed", "qmatmul(2-bit"),
    (dict(bits=6, scheme="affine", group_size=8), "packed", "matmul(f32), decoded packed"),
    (dict(bits=4, scheme="fixed_point"), "packed", "qmatmul(4-bit"),
    (dict(bits=5, axis=0), "dense", "matmul(f32)"),  # input-channel scales: stored dequantized
]


@pytest.fixture(scope="module")
def mlp():
    return functional(MLP(32, (24,), 5, rngs=nnx.Rngs(3)))


@pytest.mark.parametrize(("kwargs", "encoding", "kernel"), CASES)
def test_quantized_layouts(mlp, tmp_path, kwargs, encoding, kernel):
    apply_fn, params = mlp
    q = quantize_params(params, where=r"kernel", **kwargs)
    x = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    path = tmp_path / "q.jcx"
    info = save(path, apply_fn, q, x)
    assert info.tensors["hidden/0/kernel"]["encoding"] == encoding
    rt = runtime.load(path, autotune=False)  # each encoding's own kernel
    assert rt.plan["hidden/0/kernel"].startswith(kernel), rt.plan
    # the stored weights dequantize bit-exactly to what JAX dequantizes
    ref_w = {k: np.asarray(v) for k, v in named_leaves(dequantize_params(q))}
    art = artifact.load(path)
    np.testing.assert_array_equal(
        artifact.decode_dense(art.tensors["hidden/0/kernel"]), ref_w["hidden/0/kernel"]
    )
    cc = cross_check(path, x, model_or_apply=apply_fn, params=q)
    assert cc.max_rel <= 1e-5, cc.table()


def test_sparse_float_encodings(mlp, tmp_path):
    apply_fn, params = mlp
    rng = np.random.default_rng(1)

    def prune(path, leaf):
        a = np.asarray(leaf)
        if not path.endswith("kernel"):
            return a
        if path.startswith("hidden"):  # unstructured 80%
            return np.where(rng.random(a.shape) < 0.2, a, 0).astype(a.dtype)
        m = np.zeros(a.shape, bool)  # 1:4 along K
        m[::4] = True
        return np.where(m, a, 0).astype(a.dtype)

    import jax

    from jaxcompress._core import key_path_str

    p = jax.tree_util.tree_map_with_path(lambda k, v: prune(key_path_str(k), v), params)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    info = save(tmp_path / "s.jcx", apply_fn, p, x)
    assert info.tensors["hidden/0/kernel"]["encoding"] == "csr"
    assert info.tensors["out/kernel"]["encoding"] == "nm"
    rt = runtime.load(tmp_path / "s.jcx", autotune=False)
    assert rt.plan["out/kernel"].startswith("spmm_nm(1:4")
    cc = cross_check(tmp_path / "s.jcx", x, model_or_apply=apply_fn, params=p)
    assert cc.max_rel <= 1e-5, cc.table()


@pytest.mark.parametrize("axis", [None, -1])
def test_pruned_and_clustered_is_stored_sparse(mlp, tmp_path, axis):
    """Deep Compression storage: CSR positions + 3-bit codebook indices of the nonzeros."""
    import jax

    from jaxcompress._core import key_path_str
    from jaxcompress.clustering import cluster

    apply_fn, params = mlp
    rng = np.random.default_rng(2)

    def prune(k, v):
        a = np.asarray(v)
        keep = rng.random(a.shape) < 0.05
        return np.where(keep, a, 0).astype(a.dtype) if key_path_str(k).endswith("kernel") else a

    p = jax.tree_util.tree_map_with_path(prune, params)
    c = cluster(p, bits=3, where=r"kernel", axis=axis)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    info = save(tmp_path / "dc.jcx", apply_fn, c, x)
    t = info.tensors["hidden/0/kernel"]
    assert t["encoding"] == "csr_codebook"
    codebook_bytes = 4 * 8 * (1 if axis is None else 24)
    assert t["stored_bytes"] < 32 * 24 * 3 // 8 + codebook_bytes  # < the dense index stream
    rt = runtime.load(tmp_path / "dc.jcx", autotune=False)
    assert rt.plan["hidden/0/kernel"].startswith("spmm_csr(f32 from codebook")
    ref_w = dict(named_leaves(dequantize_params(c)))
    art = artifact.load(tmp_path / "dc.jcx")
    np.testing.assert_array_equal(
        artifact.decode_dense(art.tensors["hidden/0/kernel"]), np.asarray(ref_w["hidden/0/kernel"])
    )
    cc = cross_check(tmp_path / "dc.jcx", x, model_or_apply=apply_fn, params=c)
    assert cc.max_rel <= 1e-5, cc.table()
