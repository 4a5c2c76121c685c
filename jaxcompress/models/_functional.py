"""Turn a model into a pure ``apply_fn(params, x, *, train=False, key=None)`` and its params."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = ["ApplyFn", "functional"]

ApplyFn = Callable[..., jax.Array]


def functional(model: Any, example_input: Any = None, *, key: jax.Array | None = None):
    """Split a Flax model into a pure apply function and its parameter pytree.

    Args:
      model: an ``nnx.Module`` (its ``nnx.Param`` state becomes ``params``; any other state is
        frozen into the closure), or a ``flax.linen.Module`` (then ``example_input`` is needed to
        initialize it).
      example_input: a batch such as ``x[:1]``; only for linen modules.
      key: PRNG key for linen initialization (default ``jax.random.key(0)``).

    Returns:
      ``(apply_fn, params)`` where ``apply_fn(params, x, *, train=False, key=None) -> logits``.
      ``key`` feeds dropout when ``train=True``. For nnx models ``params`` is an ``nnx.State``;
      for linen models it is the ``{"params": ...}`` dict.

    Raises:
      JaxCompressTypeError: ``model`` is neither an nnx nor a linen module.
      JaxCompressValueError: a linen module without ``example_input``.

    Example:
      >>> from flax import nnx
      >>> from jaxcompress.models import LeNet300100, functional
      >>> apply_fn, params = functional(LeNet300100(rngs=nnx.Rngs(0)))
    """
    if isinstance(model, nnx.Module):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def apply_fn(p, x, *, train: bool = False, key: jax.Array | None = None):
            m = nnx.merge(graphdef, p, rest, copy=True)
            return m(x, train=train, rngs=key)

        return apply_fn, params
    if isinstance(model, nn.Module):
        if example_input is None:
            raise JaxCompressValueError(
                "example_input is required to initialize a linen module (e.g. x_train[:1])"
            )
        init_key = jax.random.key(0) if key is None else key
        variables = model.init(init_key, example_input)

        def apply_fn(p, x, *, train: bool = False, key: jax.Array | None = None):
            rngs = {"dropout": key} if key is not None else None
            return model.apply(p, x, train=train, rngs=rngs)

        return apply_fn, variables
    raise JaxCompressTypeError(
        f"model must be a flax nnx.Module or linen.Module, got {type(model).__name__}"
    )
