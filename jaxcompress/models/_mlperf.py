"""The four MLPerf Tiny reference models in Flax nnx, layer for layer as the benchmark defines them.

MLPerf Tiny (Banbury et al. 2021) fixes one reference model per task; their Keras definitions live in
the ``mlcommons/tiny`` repository under ``benchmark/training/<task>/``:

| model                      | task                 | input       | Keras source                                    |
|----------------------------|----------------------|-------------|-------------------------------------------------|
| :class:`DSCNN`             | keyword spotting     | 49x10x1     | ``keyword_spotting/keras_model.py`` (``ds_cnn``) |
| :class:`MobileNetV1VWW`    | visual wake words    | 96x96x3     | ``visual_wake_words/vww_model.py``              |
| :class:`ResNet8`           | CIFAR-10             | 32x32x3     | ``image_classification/keras_model.py``         |
| :class:`FCAutoEncoder`     | anomaly detection    | 640         | ``anomaly_detection/keras_model.py``            |

Departures from the Keras files, all deliberate:

- Every classifier returns logits: the Keras models end in ``Dense(..., activation="softmax")``,
  this library's models map to logits (apply ``jax.nn.softmax`` for probabilities).
- Initializers follow the Keras file (``he_normal`` where it says so, else Keras' default
  ``glorot_uniform``), but fans are Flax's: a depthwise kernel ``(kh, kw, 1, C)`` has fan-in ``kh*kw``
  where Keras counts ``kh*kw*C``. Weight decay (``l2(1e-4)``) is a training choice and left to the
  optimizer.
- Batch norm uses Keras' defaults (``epsilon=1e-3``, ``momentum=0.99``). Called with ``train=False``
  it is the affine map ``(h - mean) * scale / sqrt(var + eps) + bias`` over the channel axis, which
  ``jaxcompress.export`` folds into the preceding conv/dense kernel. Through
  ``jaxcompress.models.functional`` the running statistics (``nnx.BatchStat``) are frozen into the
  closure: ``params`` holds the ``nnx.Param`` leaves only.

Parameter counts in :data:`MLPERF_TINY` (``keras_total`` = Keras ``model.count_params()``, which
includes the moving mean and variance of each batch norm; ``keras_trainable`` excludes them) are
derived by hand from the Keras layers in ``tests/models/test_mlperf.py``.

References:
  Banbury et al., "MLPerf Tiny Benchmark", NeurIPS Datasets and Benchmarks 2021.
  Zhang et al., "Hello Edge: Keyword Spotting on Microcontrollers", 2017 (DS-CNN).
  Howard et al., "MobileNets", 2017. He et al., "Deep Residual Learning", 2016.
  Koizumi et al., "ToyADMOS", 2019 / DCASE 2020 task 2 baseline (the FC autoencoder).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcompress._core import JaxCompressValueError

__all__ = [
    "DSCNN",
    "MobileNetV1VWW",
    "ResNet8",
    "FCAutoEncoder",
    "MLPERF_TINY",
    "count_macs",
    "count_params",
    "mlperf_tiny_summary",
]

_HE = jax.nn.initializers.he_normal()  # Keras "he_normal": truncated normal, 2 / fan_in
_GLOROT = jax.nn.initializers.glorot_uniform()  # Keras' default kernel initializer
_BN_EPS = 1e-3  # Keras BatchNormalization defaults
_BN_MOMENTUM = 0.99


def _bn(c: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, epsilon=_BN_EPS, momentum=_BN_MOMENTUM, rngs=rngs)


def _avg_pool(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """Keras ``AveragePooling2D(pool_size=window)``: stride = window, VALID, NHWC."""
    dims = (1, *window, 1)
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, dims, "VALID")
    return s / math.prod(window)


class _ConvBN(nnx.Module):
    """Conv2D (bias on, as Keras' default) -> BatchNormalization [-> ReLU]; ``groups=c_in`` makes
    it a depthwise conv (Keras ``DepthwiseConv2D``, depth multiplier 1)."""

    def __init__(self, c_in, c_out, kernel, stride, *, groups=1, relu=True, init, rngs):
        self.conv = nnx.Conv(
            c_in,
            c_out,
            kernel,
            strides=stride,
            padding="SAME",  # Keras padding="same": pad_before = total // 2, as lax
            feature_group_count=groups,
            kernel_init=init,
            rngs=rngs,
        )
        self.bn = _bn(c_out, rngs)
        self.relu = relu

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.bn(self.conv(x), use_running_average=not train)
        return jax.nn.relu(y) if self.relu else y


class DSCNN(nnx.Module):
    """MLPerf Tiny keyword spotting: the DS-CNN (Zhang et al. 2017) of ``keras_model.py::ds_cnn``.

    conv 64@10x4 stride 2 "same" -> BN -> ReLU -> dropout 0.2 -> 4 x [depthwise 3x3 "same" -> BN ->
    ReLU -> conv 64@1x1 -> BN -> ReLU] -> dropout 0.4 -> average pool (24, 5) -> flatten -> dense 12.

    The 49x10 MFCC input becomes 25x5 after the strided conv; the final pool window is
    ``(49 // 2, 10 // 2) = (24, 5)`` with stride = window, exactly as in Keras, so it averages rows
    0..23 and drops row 24 of the 25.

    Args:
      num_classes: logits (12: ten words, silence, unknown).
      filters: channels of every conv (64).
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, 49, 10, 1)``; output ``(batch, num_classes)``. 24,908 Keras parameters
    (23,756 trainable); 2.66 M multiply-accumulates.
    """

    input_shape = (49, 10, 1)

    def __init__(self, *, num_classes: int = 12, filters: int = 64, rngs: nnx.Rngs):
        f = filters
        self.conv1 = _ConvBN(1, f, (10, 4), 2, init=_GLOROT, rngs=rngs)
        self.blocks = nnx.List(
            [
                nnx.List(
                    [
                        _ConvBN(f, f, (3, 3), 1, groups=f, init=_GLOROT, rngs=rngs),
                        _ConvBN(f, f, (1, 1), 1, init=_GLOROT, rngs=rngs),
                    ]
                )
                for _ in range(4)
            ]
        )
        self.drop1 = nnx.Dropout(0.2)
        self.drop2 = nnx.Dropout(0.4)
        self.out = nnx.Linear(f, num_classes, kernel_init=_GLOROT, rngs=rngs)
        self.pool = (self.input_shape[0] // 2, self.input_shape[1] // 2)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        x = self.drop1(self.conv1(x, train), deterministic=not train, rngs=rngs)
        for dw, pw in self.blocks:
            x = pw(dw(x, train), train)
        x = self.drop2(x, deterministic=not train, rngs=rngs)
        x = _avg_pool(x, self.pool)
        return self.out(x.reshape(x.shape[0], -1))


# (stride of the depthwise conv, channels after the pointwise conv) for layers 2..14 at alpha=0.25
_MOBILENET_V1_025 = (
    (1, 16),
    (2, 32),
    (1, 32),
    (2, 64),
    (1, 64),
    (2, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (2, 256),
    (1, 256),
)


class MobileNetV1VWW(nnx.Module):
    """MLPerf Tiny visual wake words: MobileNetV1 with width 0.25 (``vww_model.py::mobilenet_v1``).

    conv 8@3x3 stride 2 -> BN -> ReLU, then 13 depthwise-separable layers [depthwise 3x3 (stride 1
    or 2) -> BN -> ReLU -> conv 1x1 -> BN -> ReLU] with pointwise widths 16, 32, 32, 64, 64, 128,
    128 x 5, 256, 256 and stride 2 at layers 3, 5, 7 and 13; every conv "same", He-normal kernels;
    then average pool over the final 3x3 map -> flatten -> dense 2. ReLU, not ReLU6, and no dropout
    before the classifier, as in the MLPerf file (it keeps "the paper base structure").

    Args:
      num_classes: logits (2: person / no person).
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, 96, 96, 3)``; output ``(batch, num_classes)``. 221,794 Keras parameters
    (216,322 trainable); 7.49 M multiply-accumulates.
    """

    input_shape = (96, 96, 3)

    def __init__(self, *, num_classes: int = 2, rngs: nnx.Rngs):
        c = 8  # 32 * alpha, alpha = 0.25
        self.conv1 = _ConvBN(3, c, (3, 3), 2, init=_HE, rngs=rngs)
        layers = []
        for stride, c_out in _MOBILENET_V1_025:
            layers.append(
                nnx.List(
                    [
                        _ConvBN(c, c, (3, 3), stride, groups=c, init=_HE, rngs=rngs),
                        _ConvBN(c, c_out, (1, 1), 1, init=_HE, rngs=rngs),
                    ]
                )
            )
            c = c_out
        self.blocks = nnx.List(layers)
        self.out = nnx.Linear(c, num_classes, kernel_init=_GLOROT, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del rngs
        x = self.conv1(x, train)
        for dw, pw in self.blocks:
            x = pw(dw(x, train), train)
        x = _avg_pool(x, x.shape[1:3])
        return self.out(x.reshape(x.shape[0], -1))


class _ResidualStack(nnx.Module):
    """ResNet v1 stack: y = BN(conv3x3(ReLU(BN(conv3x3 stride s (x))))); shortcut = x, or a 1x1
    stride-s conv (no batch norm, as in the MLPerf file) when the shape changes; ReLU(shortcut + y)."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        self.a = _ConvBN(c_in, c_out, (3, 3), stride, init=_HE, rngs=rngs)
        self.b = _ConvBN(c_out, c_out, (3, 3), 1, relu=False, init=_HE, rngs=rngs)
        self.shortcut = (
            nnx.Conv(
                c_in, c_out, (1, 1), strides=stride, padding="SAME", kernel_init=_HE, rngs=rngs
            )
            if (stride != 1 or c_in != c_out)
            else None
        )

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.b(self.a(x, train), train)
        s = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(s + y)


class ResNet8(nnx.Module):
    """MLPerf Tiny image classification: ResNet-8 for CIFAR-10 (``keras_model.py::resnet_v1_eembc``).

    conv 16@3x3 -> BN -> ReLU -> stack(16, stride 1) -> stack(32, stride 2) -> stack(64, stride 2)
    -> average pool 8x8 -> flatten -> dense 10; every conv "same" with He-normal kernels (see
    ``_ResidualStack``). ``filters=16`` is the v0.5-v1.0 reference; later revisions of the Keras
    file default to 26.

    Args:
      num_classes: logits (10).
      filters: width of the first stack (doubled per stack).
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, 32, 32, 3)``; output ``(batch, num_classes)``. 78,666 Keras parameters (78,186
    trainable); 12.5 M multiply-accumulates.
    """

    input_shape = (32, 32, 3)

    def __init__(self, *, num_classes: int = 10, filters: int = 16, rngs: nnx.Rngs):
        f = filters
        self.conv1 = _ConvBN(3, f, (3, 3), 1, init=_HE, rngs=rngs)
        self.stacks = nnx.List(
            [
                _ResidualStack(f, f, 1, rngs=rngs),
                _ResidualStack(f, 2 * f, 2, rngs=rngs),
                _ResidualStack(2 * f, 4 * f, 2, rngs=rngs),
            ]
        )
        self.out = nnx.Linear(4 * f, num_classes, kernel_init=_HE, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del rngs
        x = self.conv1(x, train)
        for stack in self.stacks:
            x = stack(x, train)
        x = _avg_pool(x, (min(x.shape[1:3]),) * 2)
        return self.out(x.reshape(x.shape[0], -1))


class FCAutoEncoder(nnx.Module):
    """MLPerf Tiny anomaly detection: the dense autoencoder of ``keras_model.py::get_model``
    (the DCASE 2020 task 2 baseline).

    640 -> 4 x [dense 128 -> BN -> ReLU] -> dense 8 -> BN -> ReLU -> 4 x [dense 128 -> BN -> ReLU]
    -> dense 640 (linear). The input is 5 frames x 128 log-mel bins, flattened; the anomaly score is
    the reconstruction error.

    Args:
      features: input (and output) width (640).
      hidden: width of the eight hidden layers (128).
      bottleneck: width of the code layer (8).
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, 640)``; output ``(batch, 640)``. 269,992 Keras parameters (267,928 trainable);
    264,192 multiply-accumulates.
    """

    input_shape = (640,)

    def __init__(
        self, *, features: int = 640, hidden: int = 128, bottleneck: int = 8, rngs: nnx.Rngs
    ):
        widths = (hidden,) * 4 + (bottleneck,) + (hidden,) * 4
        sizes = (features, *widths)
        self.dense = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=_GLOROT, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.bn = nnx.List([_bn(b, rngs) for b in widths])
        self.out = nnx.Linear(hidden, features, kernel_init=_GLOROT, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del rngs
        x = x.reshape(x.shape[0], -1)
        for dense, bn in zip(self.dense, self.bn, strict=True):
            x = jax.nn.relu(bn(dense(x), use_running_average=not train))
        return self.out(x)


# ---------------------------------------------------------------------------------------------
# counts


def count_params(model: nnx.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, the two numbers Keras' ``model.summary()`` prints.

    ``trainable`` counts ``nnx.Param`` leaves (kernels, biases, batch-norm scale and offset);
    ``total`` adds every other array state (batch-norm moving mean and variance).

    Args:
      model: an nnx module (or an abstract one from ``nnx.eval_shape``).

    Returns:
      ``(trainable, total)`` as ints.
    """
    params = nnx.state(model, nnx.Param)
    rest = nnx.state(model, nnx.Not(nnx.Param))
    trainable = sum(math.prod(v.shape) for v in jax.tree.leaves(params))
    other = sum(
        math.prod(v.shape)
        for v in jax.tree.leaves(rest)
        if hasattr(v, "shape") and jnp.issubdtype(v.dtype, jnp.floating)
    )
    return trainable, trainable + other


def _jaxprs(params: dict):
    for v in params.values():
        if isinstance(v, jax.extend.core.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jax.extend.core.Jaxpr):
            yield v
        elif isinstance(v, (tuple, list)):
            for u in v:
                if isinstance(u, jax.extend.core.ClosedJaxpr):
                    yield u.jaxpr
                elif isinstance(u, jax.extend.core.Jaxpr):
                    yield u


def _macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            w = eqn.invars[1].aval.shape
            rhs = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            per_output = w[rhs[1]] * math.prod(w[d] for d in rhs[2:])
            total += math.prod(out) * per_output
        elif name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lc)
        for sub in _jaxprs(eqn.params):
            total += _macs(sub)
    return total


def count_macs(model: Any, input_shape: Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (inference mode).

    Counts ``conv_general_dilated`` (``prod(output) * in_channels_per_group * prod(kernel)``) and
    ``dot_general`` (``prod(output) * prod(contracted)``), the convention of the MLPerf Tiny and
    MobileNet papers; bias adds, batch norm, pooling and activations are not counted.

    Args:
      model: an nnx module called as ``model(x, train=False)``; an abstract one
        (``nnx.eval_shape(lambda: DSCNN(rngs=nnx.Rngs(0)))``) works too and skips initialization.
      input_shape: one example's shape, e.g. ``(49, 10, 1)``; defaults to ``model.input_shape``.

    Returns:
      The MAC count as an int.

    Raises:
      JaxCompressValueError: no `input_shape` given and the model has no ``input_shape``.
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise JaxCompressValueError("input_shape is required for a model without .input_shape")
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, x)
    return _macs(closed.jaxpr)


# name -> what the test and the summary compare against. keras_*: counted by hand from the Keras
# source (tests/models/test_mlperf.py shows the sums; tf-keras 2.21 `count_params()` of the mirror in
# benchmarks/bench_runtime.py agrees). published: int8 TFLite model size of the v0.5 suite as
# reported by L. Gwennap, "MLPerf Gets Tiny", Linley Newsletter, 2021-08-03 (Banbury et al. 2021
# itself was not available offline). No published MAC counts were found in the sources read; NXP's
# eIQ model zoo lists 23,756 parameters for the MLPerf DS-CNN, our trainable count.
MLPERF_TINY: dict[str, dict] = {
    "ds_cnn": {
        "model": DSCNN,
        "task": "keyword spotting",
        "keras_total": 24_908,
        "keras_trainable": 23_756,
        "published": "53 KB int8 TFLite",
    },
    "mobilenet_v1_025": {
        "model": MobileNetV1VWW,
        "task": "visual wake words",
        "keras_total": 221_794,
        "keras_trainable": 216_322,
        "published": "325 KB int8 TFLite",
    },
    "resnet8": {
        "model": ResNet8,
        "task": "image classification",
        "keras_total": 78_666,
        "keras_trainable": 78_186,
        "published": "96 KB int8 TFLite",
    },
    "fc_autoencoder": {
        "model": FCAutoEncoder,
        "task": "anomaly detection",
        "keras_total": 269_992,
        "keras_trainable": 267_928,
        "published": "270 KB int8 TFLite",
    },
}


def mlperf_tiny_summary(*, file=None) -> list[dict]:
    """Prints a Markdown table of the four models' parameters and MACs beside the reference ones.

    Args:
      file: where to print (default ``sys.stdout``); ``False`` prints nothing.

    Returns:
      One dict per model: ``name, task, input, trainable, total, keras_trainable, keras_total,
      macs, published``.
    """
    rows = []
    for name, spec in MLPERF_TINY.items():
        model = nnx.eval_shape(lambda ctor=spec["model"]: ctor(rngs=nnx.Rngs(0)))
        trainable, total = count_params(model)
        rows.append(
            {
                "name": name,
                "task": spec["task"],
                "input": "x".join(map(str, model.input_shape)),
                "trainable": trainable,
                "total": total,
                "keras_trainable": spec["keras_trainable"],
                "keras_total": spec["keras_total"],
                "macs": count_macs(model),
                "published": spec["published"],
            }
        )
    if file is not False:
        out = sys.stdout if file is None else file
        print(
            "| model | task | input | params (ours: trainable / total) | Keras reference "
            "(trainable / total) | MACs (ours) | published |",
            file=out,
        )
        print("|---|---|---|---:|---:|---:|---|", file=out)
        for r in rows:
            print(
                f"| {r['name']} | {r['task']} | {r['input']} | {r['trainable']:,} / "
                f"{r['total']:,} | {r['keras_trainable']:,} / {r['keras_total']:,} | "
                f"{r['macs'] / 1e6:.2f} M | {r['published']} |",
                file=out,
            )
    return rows
