"""Reference models in Flax nnx.

Every model maps a batch ``x`` to logits ``(batch, num_classes)`` and is called as
``model(x, *, train=False, rngs=None)``; ``rngs`` (a key or ``nnx.Rngs``) only feeds dropout when
``train=True``. Images are ``(batch, 28, 28, 1)`` (NHWC), MNIST-1D sequences ``(batch, 40, 1)`` (NLC).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcompress._core import JaxCompressValueError

__all__ = ["MLP", "LeNet300100", "LeNet5", "MLP1D", "CNN1D", "TinyTransformer"]


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _max_pool(x: jax.Array, window: int) -> jax.Array:
    # Non-overlapping max pooling over the spatial axes of an N...C array.
    nspatial = x.ndim - 2
    dims = (1,) + (window,) * nspatial + (1,)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, dims, "VALID")


class MLP(nnx.Module):
    """A ReLU multilayer perceptron ``in_features -> features... -> num_classes``.

    The input is flattened, so images work as they are. Dropout (rate ``dropout``) follows every
    hidden layer when called with ``train=True`` (Hinton et al. 2015 teacher: ``features=(1200,
    1200), dropout=0.5``); ``input_dropout`` drops input pixels.

    Args:
      in_features: size of the flattened input (784 for MNIST, 40 for MNIST-1D).
      features: hidden widths, e.g. ``(300, 100)`` for LeNet-300-100.
      num_classes: number of logits.
      dropout: dropout rate after each hidden ReLU (0 disables it).
      input_dropout: dropout rate on the input (0 disables it).
      rngs: ``nnx.Rngs`` for initialization.
    """

    def __init__(
        self,
        in_features: int = 784,
        features: Sequence[int] = (300, 100),
        num_classes: int = 10,
        *,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        sizes = (in_features, *features)
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.out = nnx.Linear(sizes[-1], num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout) if dropout > 0 else None
        self.input_dropout = nnx.Dropout(input_dropout) if input_dropout > 0 else None

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        x = _flatten(x)
        if self.input_dropout is not None:
            x = self.input_dropout(x, deterministic=not train, rngs=rngs)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
            if self.dropout is not None:
                x = self.dropout(x, deterministic=not train, rngs=rngs)
        return self.out(x)


def LeNet300100(*, num_classes: int = 10, rngs: nnx.Rngs) -> MLP:  # noqa: N802 (paper name)
    """LeNet-300-100 (LeCun et al. 1998; the pruning baseline of Han et al. 2015): 784-300-100-10."""
    return MLP(784, (300, 100), num_classes, rngs=rngs)


def MLP1D(*, num_classes: int = 10, rngs: nnx.Rngs) -> MLP:  # noqa: N802
    """The MNIST-1D MLP of Greydanus 2020: 40-100-100-10 with ReLU."""
    return MLP(40, (100, 100), num_classes, rngs=rngs)


class LeNet5(nnx.Module):
    """LeNet-5, Caffe variant used by Han et al. 2015 (431K parameters).

    conv 20@5x5 (valid) -> max-pool 2 -> conv 50@5x5 (valid) -> max-pool 2 -> flatten (800) ->
    fc 500 -> ReLU -> fc ``num_classes``. As in Caffe's ``lenet_train_test.prototxt`` there is no
    nonlinearity after the convolutions.

    Args:
      num_classes: number of logits.
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, 28, 28, 1)``; output ``(batch, num_classes)``.
    """

    def __init__(self, *, num_classes: int = 10, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 20, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(20, 50, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(800, 500, rngs=rngs)
        self.fc2 = nnx.Linear(500, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del train, rngs
        x = _max_pool(self.conv1(x), 2)
        x = _max_pool(self.conv2(x), 2)
        x = jax.nn.relu(self.fc1(_flatten(x)))
        return self.fc2(x)


class CNN1D(nnx.Module):
    """The MNIST-1D CNN of Greydanus 2020 (``ConvBase``): three strided 1-D convs and a linear head.

    conv 25@5 stride 2 -> ReLU -> conv 25@3 stride 2 -> ReLU -> conv 25@3 stride 2 -> ReLU ->
    flatten (125) -> fc ``num_classes``. Padding 1 on every conv, as in the paper's code.

    Input ``(batch, 40, 1)``; output ``(batch, num_classes)``.
    """

    def __init__(self, *, channels: int = 25, num_classes: int = 10, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, channels, 5, strides=2, padding=((1, 1),), rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, 3, strides=2, padding=((1, 1),), rngs=rngs)
        self.conv3 = nnx.Conv(channels, channels, 3, strides=2, padding=((1, 1),), rngs=rngs)
        self.out = nnx.Linear(5 * channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del train, rngs
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        x = jax.nn.relu(self.conv3(x))
        return self.out(_flatten(x))


class TinyTransformer(nnx.Module):
    """A one-block pre-norm transformer-encoder classifier for sequences (MNIST-1D by default).

    The sequence ``(batch, length, channels)`` is cut into ``length // patch`` patches, each
    embedded by a Dense layer plus a learned position embedding; then one encoder block
    ``x + MHA(LN(x))`` and ``x + MLP_GELU(LN(x))``; mean pooling over tokens, a final layer norm and a
    Dense head. Attention is written with einsum + softmax so every op is a plain JAX primitive.

    Args:
      length: sequence length (40 for MNIST-1D); must be divisible by ``patch``.
      channels: input channels per position.
      patch: positions per token.
      dim: model width; ``heads`` must divide it.
      heads: attention heads.
      mlp_dim: hidden width of the block's MLP.
      num_classes: number of logits.
      rngs: ``nnx.Rngs`` for initialization.
    """

    def __init__(
        self,
        *,
        length: int = 40,
        channels: int = 1,
        patch: int = 4,
        dim: int = 32,
        heads: int = 4,
        mlp_dim: int = 64,
        num_classes: int = 10,
        rngs: nnx.Rngs,
    ):
        if length % patch:
            raise JaxCompressValueError(f"{length=} must be divisible by {patch=}")
        if dim % heads:
            raise JaxCompressValueError(f"{dim=} must be divisible by {heads=}")
        self.patch, self.heads = patch, heads
        tokens = length // patch
        self.embed = nnx.Linear(patch * channels, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tokens, dim)))
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.q = nnx.Linear(dim, dim, rngs=rngs)
        self.k = nnx.Linear(dim, dim, rngs=rngs)
        self.v = nnx.Linear(dim, dim, rngs=rngs)
        self.o = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp2 = nnx.Linear(mlp_dim, dim, rngs=rngs)
        self.ln_f = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del train, rngs
        b, length, c = x.shape
        t = length // self.patch
        h = self.embed(x.reshape(b, t, self.patch * c)) + self.pos[...]
        y = self.ln1(h)
        d = y.shape[-1]
        hd = d // self.heads
        q = self.q(y).reshape(b, t, self.heads, hd)
        k = self.k(y).reshape(b, t, self.heads, hd)
        v = self.v(y).reshape(b, t, self.heads, hd)
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd), axis=-1)
        h = h + self.o(jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d))
        h = h + self.mlp2(jax.nn.gelu(self.mlp1(self.ln2(h))))
        return self.head(self.ln_f(h.mean(axis=1)))
