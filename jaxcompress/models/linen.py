"""Flax linen twins of the reference models (same architectures as the nnx ones).

They exist so that every transform can be shown to accept linen parameter dicts
(``{"params": {"Dense_0": {"kernel": ...}}}``) as well as ``nnx.State``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP", "LeNet300100", "LeNet5", "CNN1D"]


class MLP(nn.Module):
    """ReLU MLP over the flattened input; see :class:`jaxcompress.models.MLP`."""

    features: Sequence[int] = (300, 100)
    num_classes: int = 10
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for f in self.features:
            x = nn.relu(nn.Dense(f)(x))
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def LeNet300100(num_classes: int = 10) -> MLP:  # noqa: N802 (paper name)
    """LeNet-300-100: 784-300-100-10."""
    return MLP(features=(300, 100), num_classes=num_classes)


def _pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant (conv20@5x5, pool, conv50@5x5, pool, fc500, fc10)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train
        x = _pool(nn.Conv(20, (5, 5), padding="VALID")(x))
        x = _pool(nn.Conv(50, (5, 5), padding="VALID")(x))
        x = nn.relu(nn.Dense(500)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


class CNN1D(nn.Module):
    """The MNIST-1D CNN of Greydanus 2020; see :class:`jaxcompress.models.CNN1D`."""

    channels: int = 25
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train
        x = nn.relu(nn.Conv(self.channels, (5,), strides=(2,), padding=((1, 1),))(x))
        x = nn.relu(nn.Conv(self.channels, (3,), strides=(2,), padding=((1, 1),))(x))
        x = nn.relu(nn.Conv(self.channels, (3,), strides=(2,), padding=((1, 1),))(x))
        return nn.Dense(self.num_classes)(jnp.reshape(x, (x.shape[0], -1)))
