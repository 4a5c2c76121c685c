"""Read intermediate features of a Flax model without rewriting it.

* nnx: :func:`flax.nnx.capture` with ``method_outputs=nnx.Intermediate`` records the output of every
  method of every submodule for one call; values the model ``sow``-s itself
  (``self.sow(nnx.Intermediate, name, x)``) are captured as well.
* linen: ``module.apply(..., capture_intermediates=True, mutable=["intermediates"])`` records
  the output of every submodule's ``__call__``; ``self.sow("intermediates", name, x)`` values too.

A feature is addressed by a ``/``-joined path: the submodule path (nnx attribute names and list
indices, e.g. ``layers/0`` or ``l1``; linen names, e.g. ``Dense_0``), followed by the method name
for methods other than ``__call__`` (``encoder/features``) or by the sown name
(``block/my_feature``). If a submodule runs more than once in a call, its first output is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import linen, nnx

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, key_path_str

__all__ = ["feature_extractor"]

FeatureFn = Callable[..., tuple[jax.Array, tuple[jax.Array, ...]]]


def _flatten_intermediates(tree: Any) -> dict[str, jax.Array]:
    """``{path: first recorded value}`` with ``__call__`` and the tuple index dropped."""
    out: dict[str, jax.Array] = {}
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in leaves:
        parts = key_path_str(path).split("/")
        # The last key is the index inside the tuple that sow/capture accumulates calls into.
        if parts and parts[-1].isdigit():
            call = int(parts[-1])
            parts = parts[:-1]
        else:
            call = 0
        if parts and parts[-1] == "value":  # nnx.Variable wrapper not dropped by key_path_str
            parts = parts[:-1]
        if call != 0:
            continue
        if parts and parts[-1] == "__call__":
            parts = parts[:-1]
        out.setdefault("/".join(parts), leaf)
    return out


def _select(found: dict[str, jax.Array], paths: Sequence[str]) -> tuple[jax.Array, ...]:
    missing = [p for p in paths if p not in found]
    if missing:
        avail = sorted(k for k in found if k)
        raise JaxCompressValueError(
            f"feature path(s) {missing} not found; available paths: {avail}"
        )
    return tuple(found[p] for p in paths)


def feature_extractor(model: Any, paths: Sequence[str] | str) -> FeatureFn:
    """Build ``fn(params, x, *, train=False, key=None) -> (logits, features)`` for a Flax model.

    The model's own forward pass runs unchanged; the outputs of the named submodules are
    recorded on the way (see the module docstring for path syntax). Usable under ``jax.jit`` and
    ``jax.grad`` (gradients flow from the features into ``params``).

    Args:
      model: an ``nnx.Module`` whose ``__call__(x, *, train=False, rngs=None)`` returns logits (the
        dropout key is passed as ``rngs=key``, as :func:`jaxcompress.models.functional` does; its
        Params are the ``params`` argument, the rest of its state is taken as is); or a
        ``linen.Module`` whose ``__call__(x, *, train=False)`` returns logits (``params`` is then
        the variables dict ``{"params": ...}``; the dropout key goes in as
        ``rngs={"dropout": key}``).
      paths: one path or a sequence of paths, e.g. ``("layers/0",)``.

    Returns:
      ``fn`` returning ``(logits, tuple_of_features)`` in the order of ``paths``. For nnx,
      ``params`` is ``nnx.state(model, nnx.Param)`` (the same tree as
      ``jaxcompress.models.functional(model)`` returns).

    Raises:
      JaxCompressTypeError: ``model`` is not a Flax module.
      JaxCompressValueError: empty ``paths``; at call time, a path that the forward pass does not
        produce (the message lists the available ones).
    """
    if isinstance(paths, str):
        paths = (paths,)
    paths = tuple(paths)
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise JaxCompressValueError(f"{paths=} must be a non-empty sequence of non-empty strings")

    if isinstance(model, nnx.Module):
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)

        def nnx_fn(params, x, *, train: bool = False, key: jax.Array | None = None):
            m = nnx.merge(graphdef, params, rest, copy=True)
            fwd = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)
            # The raw key, as jaxcompress.models.functional passes it: same dropout bits.
            logits, inter = fwd(x, train=train, rngs=key)
            return logits, _select(_flatten_intermediates(inter), paths)

        return nnx_fn

    if isinstance(model, linen.Module):

        def linen_fn(params, x, *, train: bool = False, key: jax.Array | None = None):
            variables = {k: v for k, v in params.items() if k != "intermediates"}
            rngs = {"dropout": key} if key is not None else None
            logits, state = model.apply(
                variables,
                x,
                train=train,
                rngs=rngs,
                capture_intermediates=True,
                mutable=["intermediates"],
            )
            return logits, _select(_flatten_intermediates(state["intermediates"]), paths)

        return linen_fn

    raise JaxCompressTypeError(
        f"model must be a flax nnx.Module or linen.Module, got {type(model).__name__}"
    )
