"""Shared helpers for the export tests: small models compressed three ways."""

from __future__ import annotations

import functools

import numpy as np
from flax import nnx

from jaxcompress import clustering, pruning, quantization
from jaxcompress.models import LeNet5, TinyTransformer, functional

WAYS = ("dense", "prune_int8", "nm_4bit", "clustered")
MODELS = {"lenet5": (LeNet5, (28, 28, 1)), "transformer": (TinyTransformer, (40, 1))}


def _kernel_nm_ok(path, leaf):
    return path.endswith("kernel") and leaf.shape[-2] % 4 == 0


def compress(params, way: str):
    """The three compressions of the issue (plus the dense baseline)."""
    if way == "dense":
        return params
    if way == "prune_int8":
        p = pruning.apply_masks(params, pruning.magnitude_masks(params, 0.8, where=r"kernel"))
        return quantization.quantize_params(p, bits=8, where=r"kernel")
    if way == "nm_4bit":
        p = pruning.apply_masks(params, pruning.nm_masks(params, 2, 4, where=_kernel_nm_ok))
        return quantization.quantize_params(p, bits=4, group_size=32, where=r"kernel",
                                            group_fallback="per_channel")
    if way == "clustered":
        return clustering.cluster(params, bits=4, where=r"kernel", iters=8)
    raise ValueError(way)


@functools.cache
def model(name: str):
    cls, shape = MODELS[name]
    apply_fn, params = functional(cls(rngs=nnx.Rngs(0)))
    return apply_fn, params, shape


@functools.cache
def compressed(name: str, way: str):
    apply_fn, params, shape = model(name)
    return apply_fn, compress(params, way), shape


def inputs(shape, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def rel_err(ref: np.ndarray, y: np.ndarray) -> float:
    return float(np.max(np.abs(ref - y)) / np.max(np.abs(ref)))
