"""LeNet-5 and the tiny transformer, compressed three ways: our runtime and ONNX Runtime match the
JAX model run with the same dequantized (fake-quantized / masked) weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from jaxcompress.export import cross_check, onnx_session, reference_output, save, to_onnx
from jaxcompress_kernels import artifact, runtime
from tests.export._models import WAYS, compressed, inputs, rel_err

TOL = 1e-5
# the artifact encoding each compressed kernel must get, and the kernel it must run on
EXPECT = {
    "dense": ({"dense"}, ("matmul",)),
    "prune_int8": ({"csr"}, ("spmm_csr(int8", "spmm_csr_conv(planar, int8")),
    "nm_4bit": ({"nm", "packed"}, ("spmm_nm", "qmatmul(4-bit")),
    "clustered": (
        {"codebook"},
        ("codebook_matmul(", "lut_matmul(", "matmul(f32), decoded codebook"),
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name, way):
        if (name, way) not in cache:
            apply_fn, params, shape = compressed(name, way)
            path = tmp_path_factory.mktemp("art") / f"{name}-{way}.jcx"
            info = save(path, apply_fn, params, inputs(shape, 3, seed=1))
            cache[name, way] = (apply_fn, params, shape, path, info)
        return cache[name, way]

    return get


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", ["lenet5", "transformer"])
def test_runtime_and_onnxruntime_match_jax(exported, name, way):
    apply_fn, params, shape, path, info = exported(name, way)
    encodings, kernels = EXPECT[way]
    kern = {n: t["encoding"] for n, t in info.tensors.items() if n.endswith("kernel")}
    assert set(kern.values()) <= encodings | {"packed"}, kern
    assert encodings & set(kern.values())
    rt = runtime.load(path, num_threads=1, autotune=False)
    assert all(
        any(p.startswith(k) for k in kernels) or p.startswith("qmatmul") for p in rt.plan.values()
    ), rt.plan
    check = rt.self_check()
    assert check.ok and check.rel <= TOL and check.top1_agreement == 1.0
    for batch in (1, 4):  # the batch is symbolic in the artifact
        x = inputs(shape, batch, seed=batch)
        ref = reference_output(apply_fn, params, x)
        y = rt.run(x)
        assert y.shape == ref.shape
        assert rel_err(ref, y) <= TOL
    cc = cross_check(path, inputs(shape, 4, seed=7), model_or_apply=apply_fn, params=params)
    assert set(cc.pairs) == {("jax", "runtime"), ("jax", "onnxruntime"), ("runtime", "onnxruntime")}
    for p in cc.pairs.values():
        assert p["rel"] <= TOL and p["top1"] == 1.0, cc.table()
    if way != "dense":
        assert info.bits_per_weight < 10  # compressed: well under 32 bits per weight


def _op_types(model):
    return {n.op_type for n in model.graph.node}


def test_onnx_uses_the_librarys_codes(exported):
    _, params, _, path, _ = exported("lenet5", "nm_4bit")
    ops = _op_types(to_onnx(path))
    assert "MatMulNBits" in ops  # 4-bit kernels go to ONNX Runtime's packed 4-bit matmul
    _, _, _, path8, _ = exported("lenet5", "prune_int8")
    m8 = to_onnx(path8)
    assert "DequantizeLinear" in _op_types(m8)
    # the int8 codes in the ONNX file are exactly the artifact's codes
    art = artifact.load(path8)
    e = art.tensors["fc2/kernel"]
    k, n = e.kn
    init = {i.name: onnx.numpy_helper.to_array(i) for i in m8.graph.initializer}
    codes = [v for name, v in init.items() if name.startswith("fc2_kernel_codes")]
    assert len(codes) == 1 and codes[0].dtype == np.int8 and codes[0].shape == (k, n)
    dense = artifact.decode_dense(e)
    scales = e.parts["scales"]
    np.testing.assert_array_equal(codes[0].astype(np.float32) * scales, dense)


def test_pinned_session_options(exported):
    _, _, shape, path, _ = exported("lenet5", "prune_int8")
    sess = onnx_session(to_onnx(path, batch_size=2))
    opts = sess.get_session_options()
    import onnxruntime as ort

    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.get_session_config_entry("session.qdq_matmulnbits_accuracy_level") == "1"
    assert opts.intra_op_num_threads == 1
    y = sess.run(None, {"input": inputs(shape, 2)})[0]
    assert y.shape == (2, 10)


def test_per_op_timings_and_threads(exported):
    _, _, shape, path, info = exported("transformer", "nm_4bit")
    rt = runtime.load(path, num_threads=1)
    rt.run(inputs(shape, 2))
    plan = rt.plan_for(2)
    # one timing per execution step; every node not folded at load or viewed runs in a step
    assert len(rt.last_times) == len(plan.steps) <= sum(info.graph_ops.values())
    assert {n.step for n in plan.nodes if n.step is not None} == set(range(len(plan.steps)))
    assert all(n.kernel in ("view", "folded at load") for n in plan.nodes if n.step is None)
    assert all(t >= 0 for _, _, t in rt.last_times)
    node_t = rt.node_times()
    assert len(node_t) == len(rt.nodes)
    assert sum(node_t) == pytest.approx(sum(t for _, _, t in rt.last_times))
    from jaxcompress_kernels import get_num_threads

    assert get_num_threads() == 1


def test_bad_input_shape_is_refused(exported):
    from jaxcompress_kernels import JaxCompressValueError

    _, _, shape, path, _ = exported("lenet5", "dense")
    rt = runtime.load(path)
    with pytest.raises(JaxCompressValueError, match="inputs.shape"):
        rt.run(np.zeros((2, 27, 28, 1), np.float32))
