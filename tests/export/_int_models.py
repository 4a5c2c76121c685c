"""Small models for the full-integer export tests (nnx; self-made data, seconds to run)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcompress import quantization
from jaxcompress.models import functional


class MLP(nnx.Module):
    def __init__(self, *, rngs):
        self.fc1 = nnx.Linear(12, 24, rngs=rngs)
        self.fc2 = nnx.Linear(24, 16, rngs=rngs)
        self.out = nnx.Linear(16, 5, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu6(self.fc2(x))
        return self.out(x)


class PoolCNN(nnx.Module):
    """conv (SAME) + ReLU -> max pool -> conv -> avg pool -> flatten -> linear."""

    def __init__(self, *, rngs):
        self.c1 = nnx.Conv(2, 6, (3, 3), padding="SAME", rngs=rngs)
        self.c2 = nnx.Conv(6, 8, (3, 3), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(2 * 2 * 8, 4, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        x = nn.max_pool(jax.nn.relu(self.c1(x)), (2, 2), strides=(2, 2))
        x = nn.avg_pool(self.c2(x), (2, 2), strides=(2, 2))
        return self.fc(x.reshape(x.shape[0], -1))


class Residual(nnx.Module):
    """conv + ReLU -> conv -> add skip -> ReLU -> global mean -> linear."""

    def __init__(self, *, rngs):
        self.c0 = nnx.Conv(3, 8, (3, 3), padding="SAME", rngs=rngs)
        self.c1 = nnx.Conv(8, 8, (3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        h = jax.nn.relu(self.c0(x))
        y = jax.nn.relu(self.c1(h) + h)
        return self.fc(jnp.mean(y, axis=(1, 2)))


class Depthwise(nnx.Module):
    """conv -> depthwise 3x3 stride 2 + ReLU6 -> pointwise -> flatten -> linear."""

    def __init__(self, *, rngs):
        self.c0 = nnx.Conv(1, 8, (3, 3), padding="SAME", rngs=rngs)
        self.dw = nnx.Conv(
            8, 8, (3, 3), strides=2, padding="SAME", feature_group_count=8, rngs=rngs
        )
        self.pw = nnx.Conv(8, 4, (1, 1), rngs=rngs)
        self.fc = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        h = jax.nn.relu6(self.dw(jax.nn.relu(self.c0(x))))
        return self.fc(self.pw(h).reshape(x.shape[0], -1))


MODELS = {
    "mlp": (MLP, (3, 4)),
    "pool_cnn": (PoolCNN, (12, 12, 2)),
    "residual": (Residual, (6, 6, 3)),
    "depthwise": (Depthwise, (8, 8, 1)),
}


def make(name: str, seed: int = 0, n_cal: int = 64):
    """``(float apply_fn, ptq result, calibration batches, test inputs (9, ...))``."""
    ctor, shape = MODELS[name]
    apply_fn, params = functional(ctor(rngs=nnx.Rngs(seed)))
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n_cal + 9, *shape)).astype(np.float32)
    cal = np.array_split(xs[:n_cal], 4)
    r = quantization.ptq(apply_fn, params, cal, activation_bits=8)
    return apply_fn, r, cal, xs[n_cal:]
