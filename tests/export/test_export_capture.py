"""Graph capture: op coverage (MLP, 1-D/2-D CNNs, pooling, where/select, linen), symbolic batch,
and unsupported primitives failing with a message that names them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcompress import JaxCompressValueError
from jaxcompress.export import capture, cross_check, save
from jaxcompress.models import CNN1D, MLP, functional
from jaxcompress_kernels import runtime


def _roundtrip(tmp_path, apply_fn, params, x, batches=(1, 5)):
    """Runtime and ONNX Runtime vs JAX at several batch sizes (the artifact's batch is symbolic)."""
    path = tmp_path / "m.jcx"
    save(path, apply_fn, params, x)
    rt = runtime.load(path)
    assert rt.self_check().ok and rt.graph["batch"] == "symbolic"
    for b in batches:
        xb = np.random.default_rng(b).standard_normal((b, *x.shape[1:])).astype(np.float32)
        cc = cross_check(path, xb, model_or_apply=apply_fn, params=params)
        assert cc.max_rel <= 1e-5, cc.table()
    return rt


def test_mlp_graph_names_parameters_by_key_path():
    apply_fn, params = functional(MLP(6, (5,), 3, rngs=nnx.Rngs(0)))
    cap = capture(apply_fn, params, np.ones((2, 3, 2), np.float32))
    assert set(cap.params) == {"hidden/0/kernel", "hidden/0/bias", "out/kernel", "out/bias"}
    ops = [n["op"] for n in cap.graph["nodes"]]
    assert ops.count("linear") == 2 and "max" in ops  # relu = max(x, 0)
    assert cap.weight_uses == {"hidden/0/kernel", "out/kernel"}
    assert cap.graph["batch"] == "symbolic"
    flatten = cap.graph["nodes"][0]
    assert flatten["op"] == "reshape" and flatten["shape"] == [[1, 0], 6]  # (1 * batch + 0, 6)


def test_cnn1d_strided_padded_conv(tmp_path):
    apply_fn, params = functional(CNN1D(rngs=nnx.Rngs(0)))
    rt = _roundtrip(tmp_path, apply_fn, params, np.ones((2, 40, 1), np.float32))
    assert sum(n["op"] == "conv" for n in rt.nodes) == 3


class _Zoo(nnx.Module):
    """Dilated conv, avg + max pooling with padding, where/select, sigmoid, a matmul with a
    transposed parameter, concatenation, integer_pow and exp."""

    def __init__(self, rngs):
        self.c = nnx.Conv(2, 4, (3, 3), kernel_dilation=(2, 1), padding="SAME", rngs=rngs)
        self.w = nnx.Param(jax.random.normal(rngs.params(), (3, 8)))

    def __call__(self, x):
        y = self.c(x)
        y = nnx.avg_pool(y, (2, 2), strides=(2, 2), padding="SAME")
        m = nnx.max_pool(y, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        y = jnp.where(m > 0, jax.nn.sigmoid(m), m**3)
        f = y.reshape(y.shape[0], -1)[:, :8]
        z = f @ self.w[...].T
        return jnp.concatenate([z, jnp.exp(-(z**2))], axis=-1)


def test_op_zoo(tmp_path):
    model = _Zoo(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    rt = _roundtrip(tmp_path, apply_fn, params, np.ones((2, 6, 5, 2), np.float32))
    ops = {n["op"] for n in rt.nodes}
    assert {
        "conv",
        "reduce_window_sum",
        "reduce_window_max",
        "select_n",
        "logistic",
        "dot_general",
        "concatenate",
        "slice",
    } <= ops


def test_linen_model(tmp_path):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (3,), padding="VALID")(x)
            x = nn.gelu(x, approximate=True)
            x = nn.LayerNorm()(x)
            return nn.Dense(4)(x.reshape(x.shape[0], -1))

    net = Net()
    x = np.ones((2, 7, 1), np.float32)
    variables = net.init(jax.random.key(0), x)
    rt = _roundtrip(tmp_path, net, variables, x)
    assert "params/Dense_0/kernel" in rt.weights


def test_unsupported_primitive_is_named():
    def apply_fn(p, x):
        return jnp.sort(x @ p["w"], axis=-1)

    params = {"w": jnp.ones((3, 4))}
    with pytest.raises(JaxCompressValueError, match="primitive 'sort'"):
        capture(apply_fn, params, np.ones((2, 3), np.float32))
    with pytest.raises(JaxCompressValueError, match="'cumsum'"):
        capture(lambda p, x: jnp.cumsum(x, axis=1) @ p["w"], params, np.ones((2, 3), np.float32))


def test_unsupported_conv_layout_is_named():
    def apply_fn(p, x):  # NCHW input, OIHW kernel
        return jax.lax.conv(x, p["w"], (1, 1), "VALID")

    params = {"w": jnp.ones((4, 1, 3, 3))}
    with pytest.raises(JaxCompressValueError, match="conv_general_dilated with dimension_numbers"):
        capture(apply_fn, params, np.ones((2, 1, 8, 8), np.float32))


def test_batch_dependent_model_falls_back_to_static(tmp_path):
    def apply_fn(p, x):  # mixes information across the batch in a shape-dependent way
        return (x @ p["w"]).reshape(-1)[:6].reshape(2, 3)

    params = {"w": jnp.ones((4, 3))}
    x = np.ones((2, 4), np.float32)
    path = tmp_path / "s.jcx"
    save(path, apply_fn, params, x)
    rt = runtime.load(path)
    assert rt.graph["batch"] == "static" and rt.self_check().ok
    from jaxcompress_kernels import JaxCompressValueError as KErr

    with pytest.raises(KErr, match="exported for batch 2"):
        rt.run(np.ones((3, 4), np.float32))


class _ConvBN(nnx.Module):
    def __init__(self, rngs):
        self.c = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.d = nnx.Linear(4 * 8 * 8, 8, rngs=rngs)
        self.bn2 = nnx.BatchNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        y = jax.nn.relu(self.bn(self.c(x), use_running_average=not train))
        y = jax.nn.relu(self.bn2(self.d(y.reshape(y.shape[0], -1)), use_running_average=not train))
        return self.out(y)


def test_batch_norm_is_folded(tmp_path):
    model = _ConvBN(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    for bn in (model.bn, model.bn2):  # non-trivial running statistics and affine parameters
        n = bn.mean.shape[0]
        bn.mean[...] = jnp.asarray(rng.standard_normal(n), jnp.float32)
        bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, n), jnp.float32)
        bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
        bn.bias[...] = jnp.asarray(rng.standard_normal(n), jnp.float32)
    apply_fn, params = functional(model)
    x = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    rt = _roundtrip(tmp_path, apply_fn, params, x)
    ops = [n["op"] for n in rt.nodes]
    # conv/linear + one bias add each; no sub/mul/rsqrt left from the batch norms
    assert ops.count("mul") == 0 and "sub" not in ops and "rsqrt" not in ops, ops
    info = save(tmp_path / "bn.jcx", apply_fn, params, x)
    assert set(info.folded) == {"c/kernel", "d/kernel"}
    assert not any(n.startswith("bn") for n in info.tensors)  # statistics folded away
    unfolded = save(tmp_path / "nofold.jcx", apply_fn, params, x, fold=False)
    assert unfolded.folded == {} and unfolded.graph_ops.get("rsqrt", 0) == 0  # const-folded
    assert unfolded.graph_ops["mul"] >= 2


def test_one_table_per_consumer_covers_every_op():
    """The format's op specs are the only op list: the ONNX emitter's table and export's
    capture map onto exactly that set."""
    from jaxcompress.export._capture import ALIASES, CALLS, SUPPORTED_PRIMITIVES
    from jaxcompress.export._onnx import EMITTERS
    from jaxcompress_kernels.format import ops

    assert set(EMITTERS) == set(ops.OPS)
    captured = {"convert_element_type": "convert", "conv_general_dilated": "conv"}
    for prim in SUPPORTED_PRIMITIVES:
        name = captured.get(prim, prim)
        # calls are inlined and aliases dropped at capture: no node of their own
        assert name in ops.OPS or prim in ALIASES | CALLS, prim
