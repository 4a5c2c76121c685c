"""Full-integer export (`save(..., integer=True)`): the JAX integer reference, the NumPy reference,
the edge runtime (exactly equal) and ONNX Runtime (within one output step), the gap to the
fake-quant model within its derived bound, and the bad-input errors."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcompress import export, quantization
from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.models import functional
from jaxcompress_kernels import artifact
from tests.export._int_models import MODELS, make
from tests.kernels._qgraphs import reference_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            apply_fn, r, cal, xt = make(name)
            path = str(tmp_path_factory.mktemp("int") / f"{name}.jcx")
            info = export.save(
                path, r.apply_fn, r.params, xt[:7], integer=True, calibration_batches=cal
            )
            cache[name] = (path, info, r, cal, xt, quantization.integer_reference(path))
        return cache[name]

    return get


def _numpy_run(art, x):
    manifest = {"graph": art.graph, "tensors": {k: {"parts": {"value": k}} for k in art.tensors}}
    parts = {k: np.asarray(artifact.decode_dense(e)) for k, e in art.tensors.items()}
    return reference_run(manifest, parts, x)[0]


def _out_scale(art):
    deq = [n for n in art.graph["nodes"] if n["op"] == "dequantize"][-1]
    return art.graph["quant"][deq["in"][0]]["scale"]


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_is_full_integer(exported, name):
    path, info, *_ = exported(name)
    art = artifact.load(path)
    ops = [n["op"] for n in art.graph["nodes"]]
    assert ops.count("quantize") == 1 and ops.count("dequantize") == 1
    assert set(ops) <= {"quantize", "dequantize", "reshape"} | {o for o in ops if o.startswith("q")}
    for n in art.graph["nodes"]:
        if n["op"] in ("qlinear", "qconv2d"):
            w = artifact.decode_dense(art.tensors[n["weight"]])
            assert w.dtype == np.int8 and w.min() >= -127
            assert artifact.decode_dense(art.tensors[n["bias"]]).dtype == np.int32
    want = {"mlp": "qlinear", "pool_cnn": "qavg_pool2d", "residual": "qadd", "depthwise": "qconv2d"}
    assert want[name] in info.graph_ops


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("name", list(MODELS))
def test_jax_numpy_runtime_onnx_agree(exported, name, batch):
    from jaxcompress_kernels.runtime import Runtime

    path, _, r, cal, xt, ref = exported(name)
    art = artifact.load(path)
    x = xt[:batch]
    y_jax = ref(x)
    np.testing.assert_array_equal(y_jax, _numpy_run(art, x))
    np.testing.assert_array_equal(np.asarray(Runtime(art).run(x)), y_jax)
    if batch == 7:
        np.testing.assert_array_equal(art.sample_output.reshape(y_jax.shape), y_jax)
    sess = export.onnx_session(export.to_onnx(art, batch_size=batch))
    y_ort = sess.run(None, {"input": x})[0]
    assert np.max(np.abs(y_ort - y_jax)) <= 1.0001 * _out_scale(art)


@pytest.mark.parametrize("name", list(MODELS))
def test_gap_to_fake_quant_within_bound(exported, name):
    path, _, r, cal, xt, ref = exported(name)
    art = artifact.load(path)
    x = np.concatenate(cal)  # inside the calibrated ranges, where the bound holds
    gap = np.max(np.abs(ref(x) - np.asarray(r.apply_fn(r.params, x)))) / _out_scale(art)
    bound = quantization.fake_quant_gap_bound(ref)
    assert gap <= bound
    assert gap <= 2.0  # measured: about one step (docs/integer.md)


def test_reference_is_jittable_and_has_no_x64(exported):
    *_, ref = exported("mlp")
    assert not jax.config.jax_enable_x64
    x = np.zeros((3, 3, 4), np.float32)
    jaxpr = jax.make_jaxpr(lambda t, xx: ref._forward(t, xx))(ref.tensors, x)
    assert "int64" not in str(jaxpr)
    assert "dot_general" in str(jaxpr) and "preferred_element_type=int32" in str(jaxpr)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.fixture(scope="module")
def mlp_parts():
    apply_fn, r, cal, xt = make("mlp")
    return apply_fn, r, cal, xt


def test_float_model_without_ranges(tmp_path, mlp_parts):
    apply_fn, r, cal, xt = mlp_parts
    with pytest.raises(JaxCompressValueError, match="static activation ranges"):
        export.save(tmp_path / "a.jcx", apply_fn, r.params, xt[:2], integer=True)
    dyn = quantization.quantize_activations(apply_fn)  # dynamic ranges
    with pytest.raises(JaxCompressValueError, match="dynamic"):
        export.save(tmp_path / "a.jcx", dyn, r.params, xt[:2], integer=True)
    with pytest.raises(JaxCompressTypeError, match="ActivationRanges"):
        export.save(
            tmp_path / "a.jcx",
            apply_fn,
            r.params,
            xt[:2],
            integer=True,
            activation_ranges={"dot_general_0": (0.0, 1.0)},
        )
    with pytest.raises(JaxCompressValueError, match="integer=True exports only"):
        export.save(tmp_path / "a.jcx", apply_fn, r.params, xt[:2], calibration_batches=cal)


@pytest.mark.parametrize(
    "bad, match",
    [((float("nan"), 1.0), "NaN"), ((0.0, float("inf")), "NaN/Inf"), ((0.0, 0.0), "zero-width")],
)
def test_bad_range_names_the_layer(tmp_path, mlp_parts, bad, match):
    apply_fn, r, cal, xt = mlp_parts
    rng = dict(r.ranges.ranges)
    rng["dot_general_1"] = bad
    ranges = dataclasses.replace(r.ranges, ranges=rng)
    with pytest.raises(JaxCompressValueError, match=match) as e:
        export.save(
            tmp_path / "b.jcx",
            r.apply_fn,
            r.params,
            xt[:2],
            integer=True,
            activation_ranges=ranges,
            calibration_batches=cal,
        )
    assert "fc2/kernel" in str(e.value)


def test_missing_calibration_names_the_value(tmp_path, mlp_parts):
    apply_fn, r, cal, xt = mlp_parts
    with pytest.raises(JaxCompressValueError, match="calibration_batches") as e:
        export.save(tmp_path / "c.jcx", r.apply_fn, r.params, xt[:2], integer=True)
    assert "out/kernel" in str(e.value)


class _Tanh(nnx.Module):
    def __init__(self, *, rngs):
        self.fc1 = nnx.Linear(6, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        return self.fc2(jax.numpy.tanh(self.fc1(x)))


def test_op_without_integer_form_names_the_layer(tmp_path):
    apply_fn, params = functional(_Tanh(rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    r = quantization.ptq(apply_fn, params, [x], activation_bits=8)
    with pytest.raises(JaxCompressValueError, match="no integer form") as e:
        export.save(
            tmp_path / "d.jcx", r.apply_fn, r.params, x[:2], integer=True, calibration_batches=[x]
        )
    assert "tanh" in str(e.value) and "fc1/kernel" in str(e.value)


def test_float_weights_name_the_layer(tmp_path, mlp_parts):
    apply_fn, r, cal, xt = mlp_parts
    params = quantization.dequantize_params(r.params)
    with pytest.raises(JaxCompressValueError, match="float weights") as e:
        export.save(
            tmp_path / "e.jcx", r.apply_fn, params, xt[:2], integer=True, calibration_batches=cal
        )
    assert "fc1/kernel" in str(e.value)
