"""Key paths and the ``where=`` selection contract shared by every transform.

A *key path* is the ``/``-joined list of keys that leads to a leaf:

=============================================  ======================================
tree                                           path of the first Dense kernel
=============================================  ======================================
linen ``model.init(...)``                      ``params/Dense_0/kernel``
``nnx.state(model, nnx.Param)``                ``layers/0/kernel`` (the ``.value`` of the
                                               ``nnx.Variable`` wrapper is dropped)
plain nested dict / list / tuple               ``encoder/0/w``
=============================================  ======================================

``where`` selects the leaves a transform touches:

* ``None`` (default): floating-point leaves with ``ndim >= 2`` (Dense/conv kernels, embeddings),
  not biases or norm scales.
* ``str``: a regular expression, ``re.search``-ed in each leaf's key path. A regex that matches no
  leaf raises :class:`JaxCompressValueError` (it is almost always a typo).
* callable ``(path: str, leaf) -> bool``.
* a pytree of bools with the structure of ``params`` (e.g. ``jax.tree.map(lambda x: ..., params)``).

Unselected leaves pass through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core._errors import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "Where",
    "key_path_str",
    "named_leaves",
    "selection_mask",
    "selected_paths",
    "map_selected",
    "check_pytree",
    "is_floating",
]

Where = None | str | Callable[[str, Any], bool] | Any


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def key_path_str(path: tuple[Any, ...]) -> str:
    """Return the ``/``-joined key path of a leaf (see the module docstring).

    Args:
      path: a key path as produced by ``jax.tree_util.tree_flatten_with_path``.

    Returns:
      e.g. ``"params/Dense_0/kernel"``; the trailing ``.value`` of an ``nnx.Variable`` is dropped.
    """
    keys = list(path)
    if (
        len(keys) > 1
        and isinstance(keys[-1], jax.tree_util.GetAttrKey)
        and keys[-1].name
        in (
            "value",
            "raw_value",
        )
    ):
        keys = keys[:-1]
    return "/".join(_key_name(k) for k in keys)


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """Return ``[(path, leaf), ...]`` in ``jax.tree`` flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(key_path_str(p), leaf) for p, leaf in flat]


def is_floating(leaf: Any) -> bool:
    """True for arrays (JAX or NumPy) of a floating dtype, bfloat16 included."""
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or (
        hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    )


def check_pytree(tree: Any, *, name: str = "params") -> None:
    """Raise unless ``tree`` is a pytree whose leaves are all arrays (at least one).

    Raises:
      JaxCompressTypeError: ``tree`` is not a pytree of arrays (a model object, a string, a number,
        an empty container); the message names the argument ``name`` and the first bad leaf.
    """
    leaves = named_leaves(tree)
    if not leaves:
        raise JaxCompressTypeError(
            f"{name} must be a pytree with at least one array leaf, got {type(tree).__name__} "
            "with no leaves"
        )
    for path, leaf in leaves:
        if not _is_array(leaf):
            where = f" at {path!r}" if path else ""
            raise JaxCompressTypeError(
                f"{name} must be a pytree of arrays (linen params dict or nnx.State); found a "
                f"{type(leaf).__name__}{where}"
            )


def _default_where(path: str, leaf: Any) -> bool:
    del path
    return is_floating(leaf) and leaf.ndim >= 2


def selection_mask(tree: Any, where: Where = None, *, require_float: bool = True) -> list[bool]:
    """Resolve ``where`` against ``tree`` into one Python bool per leaf (flattening order).

    Args:
      tree: a pytree of arrays (linen params dict, ``nnx.State``, nested dicts/lists).
      where: ``None`` | regex ``str`` | callable ``(path, leaf) -> bool`` | pytree of bools.
      require_float: raise if a selected leaf is not floating point.

    Returns:
      A list of bools, one per leaf of ``tree`` in ``jax.tree.leaves`` order.

    Raises:
      JaxCompressTypeError: ``tree`` is not a pytree of arrays, ``where`` has an unsupported type, or
        (with ``require_float``) a selected leaf is an integer/bool array.
      JaxCompressValueError: a regex matches no leaf, is not a valid regex, or a bool pytree has a
        different structure from ``tree``.
    """
    check_pytree(tree)
    leaves = named_leaves(tree)
    if where is None:
        sel = [_default_where(p, x) for p, x in leaves]
    elif isinstance(where, str):
        try:
            pattern = re.compile(where)
        except re.error as e:
            raise JaxCompressValueError(
                f"where={where!r} is not a valid regular expression: {e}"
            ) from None
        sel = [pattern.search(p) is not None for p, _ in leaves]
        if not any(sel):
            raise JaxCompressValueError(
                f"where={where!r} matches no leaf; paths are like {[p for p, _ in leaves[:4]]}"
            )
    elif callable(where) and not _looks_like_tree(where):
        sel = [bool(where(p, x)) for p, x in leaves]
    else:
        treedef = jax.tree_util.tree_structure(tree)
        try:
            flags = treedef.flatten_up_to(where)
        except (ValueError, TypeError) as e:
            raise JaxCompressValueError(
                f"where, given as a pytree of bools, must have the structure of params: {e}"
            ) from None
        sel = []
        for (p, _), f in zip(leaves, flags, strict=True):
            f = np.asarray(f)
            if f.shape != () or f.dtype != np.bool_:
                raise JaxCompressTypeError(
                    f"where, given as a pytree, must hold scalar bools; got {f.dtype}{f.shape} "
                    f"at {p!r}"
                )
            sel.append(bool(f))
    if require_float:
        for (p, x), s in zip(leaves, sel, strict=True):
            if s and not is_floating(x):
                raise JaxCompressTypeError(
                    f"where selects {p!r}, a {getattr(x, 'dtype', type(x))} leaf; only floating "
                    "point leaves can be compressed"
                )
    return sel


def _looks_like_tree(obj: Any) -> bool:
    # An nnx.State / dict of bools is not a selection function even if it defines __call__.
    return isinstance(obj, (dict, list, tuple)) or len(jax.tree_util.tree_leaves(obj)) > 1


def selected_paths(tree: Any, where: Where = None) -> list[str]:
    """The key paths ``where`` selects, in flattening order."""
    sel = selection_mask(tree, where)
    return [p for (p, _), s in zip(named_leaves(tree), sel, strict=True) if s]


def map_selected(fn: Callable[..., Any], tree: Any, *rest: Any, where: Where = None) -> Any:
    """Apply ``fn(leaf, *rest_leaves)`` to the selected leaves; others pass through untouched.

    Args:
      fn: function of one leaf of ``tree`` and the matching leaves of each tree in ``rest``.
      tree: the pytree that ``where`` is resolved against.
      *rest: pytrees with the structure of ``tree`` (or a prefix of it).
      where: the selection (see the module docstring).

    Returns:
      A pytree with the structure of ``tree``.
    """
    sel = selection_mask(tree, where)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rest_leaves = [treedef.flatten_up_to(r) for r in rest]
    out = [
        fn(x, *(r[i] for r in rest_leaves)) if s else x
        for i, (x, s) in enumerate(zip(leaves, sel, strict=True))
    ]
    return jax.tree_util.tree_unflatten(treedef, out)
