"""Shared helpers for the export tests: small models compressed three ways."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcompress import quantization
from jaxcompress._core import key_path_str
from jaxcompress.clustering import ClusteredArray
from jaxcompress.models import LeNet5, TinyTransformer, functional

WAYS = ("prune_int8", "nm_4bit", "clustered")  # "dense" is the float baseline, also supported
MODELS = {"lenet5": (LeNet5, (28, 28, 1)), "transformer": (TinyTransformer, (40, 1))}


def _kernel_nm_ok(path, leaf):
    return path.endswith("kernel") and leaf.shape[-2] % 4 == 0


# Masks and codebooks are made with NumPy here (the library's pruning and clustering compile a
# jitted kernel per leaf shape, which costs tens of seconds on a loaded 2-core machine); the
# quantization is the library's own `quantize_params`. The benchmark uses the library for all three.


def _map_kernels(fn, params):
    def f(path, leaf):
        name = key_path_str(path)
        return fn(name, np.asarray(leaf)) if name.endswith("kernel") else leaf

    return jax.tree_util.tree_map_with_path(f, params)


def _magnitude(name, w, sparsity=0.8):
    k = int(round(sparsity * w.size))
    thr = np.partition(np.abs(w).ravel(), k)[k]
    return jnp.asarray(np.where(np.abs(w) >= thr, w, 0).astype(w.dtype))


def _nm(name, w, n=2, m=4):
    if w.shape[-2] % m:
        return jnp.asarray(w)
    g = w.reshape(*w.shape[:-2], w.shape[-2] // m, m, w.shape[-1])
    order = np.argsort(-np.abs(g), axis=-2, kind="stable")
    keep = np.zeros(g.shape, bool)
    np.put_along_axis(keep, order[..., :n, :], True, axis=-2)
    return jnp.asarray(np.where(keep, g, 0).reshape(w.shape).astype(w.dtype))


def _codebook(name, w, bits=4):
    k = 1 << bits
    cb = np.linspace(w.min(), w.max(), k).astype(np.float32)
    idx = np.abs(w[..., None] - cb).argmin(-1).astype(np.uint8)
    return ClusteredArray(
        indices=jnp.asarray(idx),
        codebook=jnp.asarray(cb),
        n_clusters=k,
        axis=None,
        zero_index=False,
        shape=tuple(w.shape),
        dtype="float32",
    )


def compress(params, way: str):
    """The three compressions of the issue (plus the dense baseline)."""
    if way == "dense":
        return params
    if way == "prune_int8":
        p = _map_kernels(_magnitude, params)
        return quantization.quantize_params(p, bits=8, where=r"kernel")
    if way == "nm_4bit":
        p = _map_kernels(_nm, params)
        return quantization.quantize_params(
            p, bits=4, group_size=32, where=r"kernel", group_fallback="per_channel"
        )
    if way == "clustered":
        return _map_kernels(_codebook, params)
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
