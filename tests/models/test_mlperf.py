"""The MLPerf Tiny reference models: shapes, Keras parameter counts, MACs, jit, export."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcompress import export, models
from jaxcompress._core import JaxCompressValueError
from jaxcompress_kernels import runtime

# -- the reference counts, derived by hand from the Keras layers -------------------------------
# Keras conv/dense: kh*kw*c_in*c_out + c_out (bias on by default); DepthwiseConv2D (multiplier 1):
# kh*kw*c + c; BatchNormalization: 4c (gamma, beta trainable; moving mean/var not).
#
# DS-CNN (keyword_spotting/keras_model.py, ds_cnn, 64 filters, 12 classes):
#   conv 10x4x1x64 + 64 = 2,624; BN 256
#   4 x [dw 9*64 + 64 = 640; BN 256; pw 64*64 + 64 = 4,160; BN 256] = 4 x 5,312 = 21,248
#   dense 64*12 + 12 = 780
#   total 2,624 + 256 + 21,248 + 780 = 24,908; 9 BN layers x 128 non-trainable -> 23,756 trainable
_DSCNN = (23_756, 24_908)


def _mobilenet_counts():
    # MobileNetV1 0.25 (visual_wake_words/vww_model.py): conv 3x3x3x8 + 8 = 224, BN 32, then per
    # layer (dw 9c + c, BN 4c, pw c*c' + c', BN 4c'), dense 256*2 + 2 = 514. Non-trainable: 2c per BN.
    c, total, frozen = 8, 224 + 32, 16
    for c_out in (16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256):
        total += (9 * c + c) + 4 * c + (c * c_out + c_out) + 4 * c_out
        frozen += 2 * c + 2 * c_out
        c = c_out
    total += 514
    return total - frozen, total  # 216,322 trainable / 221,794 total


# ResNet-8 (image_classification/keras_model.py, 16 filters):
#   conv 3x3x3x16 + 16 = 448; BN 64
#   stack 1: 2 x (3x3x16x16 + 16 = 2,320; BN 64)                                 = 4,768
#   stack 2: 3x3x16x32 + 32 = 4,640; BN 128; 3x3x32x32 + 32 = 9,248; BN 128; 1x1 16x32 + 32 = 544
#                                                                                = 14,688
#   stack 3: 3x3x32x64 + 64 = 18,496; BN 256; 3x3x64x64 + 64 = 36,928; BN 256; 1x1 32x64 + 64
#            = 2,112                                                             = 58,048
#   dense 64*10 + 10 = 650
#   total 448 + 64 + 4,768 + 14,688 + 58,048 + 650 = 78,666; BN non-trainable (64*3 + 128*2 +
#   256*2) / 2 = 480 -> 78,186 trainable
_RESNET8 = (78_186, 78_666)

# FC AutoEncoder (anomaly_detection/keras_model.py):
#   dense 640x128 + 128 = 82,048; 3 x (128x128 + 128 = 16,512); 128x8 + 8 = 1,032;
#   8x128 + 128 = 1,152; 3 x 16,512; 128x640 + 640 = 82,560              -> 265,864
#   BN: 8 x 4*128 + 4*8 = 4,128                                          -> total 269,992
#   non-trainable: half the BN, 2,064                                    -> 267,928 trainable
_AUTOENCODER = (267_928, 269_992)


def _mobilenet_macs():
    # 48x48 after the stride-2 stem; per layer dw = H*W*c*9 at the output size, pw = H*W*c*c'.
    h, c = 48, 8
    macs = 48 * 48 * 8 * 27
    for stride, c_out in (
        ((1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128))
        + ((1, 128),) * 5
        + ((2, 256), (1, 256))
    ):
        h //= stride
        macs += h * h * c * 9 + h * h * c * c_out
        c = c_out
    return macs + 256 * 2


MODELS = {
    # name: (constructor, input shape, output width, (trainable, total), MACs at batch 1)
    # DS-CNN MACs: conv 25*5*64*40 = 320,000; 4 x (dw 25*5*64*9 + pw 25*5*64*64) = 2,336,000;
    # dense 768 -> 2,656,768.
    "ds_cnn": (models.DSCNN, (49, 10, 1), 12, _DSCNN, 2_656_768),
    "mobilenet_v1_025": (
        models.MobileNetV1VWW,
        (96, 96, 3),
        2,
        _mobilenet_counts(),
        _mobilenet_macs(),
    ),
    # ResNet-8 MACs: stem 32*32*16*27 = 442,368; stack 1: 2 * 32*32*16*144 = 4,718,592;
    # stack 2: 16*16*32*(144 + 288 + 16) = 3,670,016; stack 3: 8*8*64*(288 + 576 + 32)
    # = 3,670,016; dense 640 -> 12,501,632.
    "resnet8": (models.ResNet8, (32, 32, 3), 10, _RESNET8, 12_501_632),
    # AutoEncoder MACs: 640*128 + 3*128*128 + 128*8 + 8*128 + 3*128*128 + 128*640 = 264,192.
    "fc_autoencoder": (models.FCAutoEncoder, (640,), 640, _AUTOENCODER, 264_192),
}


def _abstract(ctor):
    return nnx.eval_shape(lambda: ctor(rngs=nnx.Rngs(0)))


@functools.cache
def _model(name, seed=0):
    """A concrete model without running its initializers (eager init compiles one program per
    parameter shape: tens of seconds for MobileNet). Kernels ~ N(0, 2 / fan_in), biases 0, batch
    norm statistics perturbed around (0, 1) so that folding them is not an identity."""
    graphdef, state = nnx.split(_abstract(MODELS[name][0]))
    rng = np.random.default_rng(seed)

    def fill(path, v):
        last = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        if last == "kernel":
            std = np.sqrt(2.0 / np.prod(v.shape[:-1]))
            return jnp.asarray(rng.normal(0, std, v.shape), jnp.float32)
        if last in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, v.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, v.shape), jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


@pytest.mark.parametrize("name", list(MODELS))
def test_counts_match_the_keras_reference(name):
    ctor, shape, _, (trainable, total), macs = MODELS[name]
    model = _abstract(ctor)
    assert tuple(model.input_shape) == shape
    assert models.count_params(model) == (trainable, total)
    assert models.MLPERF_TINY[name]["keras_trainable"] == trainable
    assert models.MLPERF_TINY[name]["keras_total"] == total
    assert models.count_macs(model) == macs
    _, params = models.functional(model)
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(params)) == trainable


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes_under_jit(name):
    _, shape, n_out, _, _ = MODELS[name]
    apply_fn, params = models.functional(_model(name))
    fwd = jax.jit(apply_fn)
    x = jax.random.normal(jax.random.key(1), (2, *shape))
    y = fwd(params, x)
    assert y.shape == (2, n_out)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.max(jnp.abs(y[0] - y[1]))) > 0  # the output depends on the input
    # examples are independent in inference mode (batch norm uses its running statistics)
    x2 = x.at[1].set(-x[1])
    np.testing.assert_allclose(np.asarray(fwd(params, x2))[0], np.asarray(y)[0], 1e-5, 1e-5)


def test_real_initialization_is_finite():
    model = models.FCAutoEncoder(rngs=nnx.Rngs(0))  # the cheapest model to initialize eagerly
    assert models.count_params(model) == _AUTOENCODER
    apply_fn, params = models.functional(model)
    y = jax.jit(apply_fn)(params, jnp.ones((2, 640)))
    assert y.shape == (2, 640) and bool(jnp.all(jnp.isfinite(y)))


def test_train_mode_uses_batch_statistics_and_dropout():
    apply_fn, params = models.functional(_model("ds_cnn"))
    x = jax.random.normal(jax.random.key(2), (4, 49, 10, 1)) * 3.0 + 1.0
    infer = jax.jit(apply_fn)(params, x)
    train = jax.jit(lambda p, x, k: apply_fn(p, x, train=True, key=k))
    a = train(params, x, jax.random.key(1))
    b = train(params, x, jax.random.key(2))
    assert a.shape == infer.shape
    assert not jnp.allclose(a, infer)
    assert not jnp.array_equal(a, b)  # dropout 0.2 / 0.4 differs per key


def test_count_macs_needs_an_input_shape():
    with pytest.raises(JaxCompressValueError, match="input_shape"):
        models.count_macs(_abstract(models.LeNet5))
    assert models.count_macs(_abstract(models.LeNet300100), (28, 28, 1)) == 266_200


def test_summary_lists_every_model():
    rows = models.mlperf_tiny_summary(file=False)
    assert [r["name"] for r in rows] == list(MODELS)
    for r in rows:
        assert (r["trainable"], r["total"]) == (r["keras_trainable"], r["keras_total"])


# Every model exports (DS-CNN and MobileNetV1 through grouped/depthwise conv nodes).
EXPORTABLE = list(MODELS)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_folds_batch_norm_and_runtime_matches(name, tmp_path):
    shape = MODELS[name][1]
    model = _model(name, seed=3)
    _, params = models.functional(model)
    x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
    info = export.save(tmp_path / f"{name}.jcx", model, params, x)
    n_bn = sum(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
    assert len(info.folded) == n_bn  # every batch norm folded into its kernel
    assert "mul" not in info.graph_ops and "sub" not in info.graph_ops
    rt = runtime.load(tmp_path / f"{name}.jcx", num_threads=1)
    y = np.asarray(rt.run(x))
    ref = export.reference_output(model, params, x)
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))
    y1 = np.asarray(rt.run(x[:1]))  # batch 1: the plan made at load (kernels chosen by timing)
    # same tolerance definition as above: max |diff| / max |ref| over the sample batch
    assert np.max(np.abs(y1 - ref[:1])) <= 1e-5 * np.max(np.abs(ref))
    kernels = {n.kernel.split("(")[0] for n in rt.plan.nodes}
    if name != "fc_autoencoder":
        assert "conv" in kernels  # the direct NHWC kernels, bias and ReLU fused
    if name in ("ds_cnn", "mobilenet_v1_025"):
        assert any(n.op == "conv" and n.kernel.startswith("conv(") for n in rt.plan.nodes)
