import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcompress
from jaxcompress._core import (
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
    check_pytree,
    map_selected,
    named_leaves,
    selected_paths,
    selection_mask,
    tree_stats,
)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 2, rngs=rngs)])
        self.ln = nnx.LayerNorm(2, rngs=rngs)


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(3)(x)
        x = nn.Dense(2)(x)
        return nn.LayerNorm()(x)


@pytest.fixture
def linen_params():
    return _LinenNet().init(jax.random.key(0), jnp.ones((1, 4)))


@pytest.fixture
def nnx_params():
    return nnx.state(_Net(nnx.Rngs(0)), nnx.Param)


def test_paths_linen(linen_params):
    paths = [p for p, _ in named_leaves(linen_params)]
    assert "params/Dense_0/kernel" in paths
    assert "params/LayerNorm_0/scale" in paths


def test_paths_nnx_drop_variable_value(nnx_params):
    paths = [p for p, _ in named_leaves(nnx_params)]
    assert "l1/kernel" in paths and "layers/0/kernel" in paths and "ln/scale" in paths
    assert not any(p.endswith("/value") for p in paths)


def test_default_selects_float_matrices(linen_params, nnx_params):
    assert selected_paths(linen_params) == ["params/Dense_0/kernel", "params/Dense_1/kernel"]
    assert selected_paths(nnx_params) == ["l1/kernel", "layers/0/kernel"]


def test_regex_callable_and_bool_tree_agree(nnx_params):
    by_regex = selection_mask(nnx_params, r"^l1/")
    by_callable = selection_mask(nnx_params, lambda p, x: p.startswith("l1/"))
    flags = jax.tree.map(lambda x: x.shape in ((4, 3), (3,)), nnx_params)
    by_tree = selection_mask(nnx_params, flags)
    assert by_regex == by_callable == by_tree
    assert sum(by_regex) == 2


def test_bool_tree_on_linen(linen_params):
    flags = jax.tree.map(lambda x: x.ndim == 1, linen_params)
    paths = [
        p
        for (p, _), s in zip(
            named_leaves(linen_params), selection_mask(linen_params, flags), strict=True
        )
        if s
    ]
    assert all(p.endswith(("bias", "scale")) for p in paths) and len(paths) == 4


def test_regex_selecting_nothing_is_an_error(linen_params):
    with pytest.raises(JaxCompressValueError, match=r"matches no leaf"):
        selection_mask(linen_params, "Conv_7")


def test_invalid_regex(linen_params):
    with pytest.raises(JaxCompressValueError, match="not a valid regular expression"):
        selection_mask(linen_params, "(")


def test_bool_tree_with_wrong_structure(linen_params):
    with pytest.raises(JaxCompressValueError, match="structure"):
        selection_mask(linen_params, {"params": True, "other": False})


def test_integer_leaf_selected_is_an_error():
    tree = {"w": jnp.ones((2, 2)), "step": jnp.zeros((2, 2), jnp.int32)}
    assert selection_mask(tree) == [False, True]  # default skips integers
    with pytest.raises(JaxCompressTypeError, match="'step'.*floating"):
        selection_mask(tree, "step")


@pytest.mark.parametrize("bad", [3, "params", None, {}, {"a": "text"}, object()])
def test_non_pytree_argument(bad):
    with pytest.raises(JaxCompressTypeError, match="params must be a pytree"):
        check_pytree(bad)


def test_errors_are_builtin_subclasses():
    assert issubclass(JaxCompressValueError, ValueError)
    assert issubclass(JaxCompressTypeError, TypeError)
    assert issubclass(JaxCompressValueError, JaxCompressError)
    assert jaxcompress.JaxCompressError is JaxCompressError


def test_map_selected_leaves_others_untouched(nnx_params):
    out = map_selected(lambda x: jnp.zeros_like(x), nnx_params)
    assert isinstance(out, nnx.State)
    assert float(jnp.abs(out["l1"]["kernel"][...]).sum()) == 0.0
    np.testing.assert_array_equal(out["l1"]["bias"][...], nnx_params["l1"]["bias"][...])


def test_map_selected_under_jit(linen_params):
    f = jax.jit(lambda p: map_selected(lambda x: 2 * x, p, where="Dense_1"))
    out = f(linen_params)
    np.testing.assert_allclose(
        out["params"]["Dense_1"]["kernel"], 2 * linen_params["params"]["Dense_1"]["kernel"]
    )
    np.testing.assert_array_equal(
        out["params"]["Dense_0"]["kernel"], linen_params["params"]["Dense_0"]["kernel"]
    )


def test_tree_stats_counts():
    tree = {"a": np.array([[0.0, 1.0], [0.0, 0.0]], np.float32), "b": np.zeros(3, np.float16)}
    s = tree_stats(tree)
    assert s.size == 7 and s.zeros == 6 and s.nbytes == 16 + 6
    by_path = {leaf.path: leaf for leaf in s.leaves}
    assert by_path["a"].zeros == 3 and by_path["a"].sparsity == pytest.approx(0.75)
    assert re.search(r"\| total \| \| \| 7 \|", s.table())


def test_tree_stats_nnx(nnx_params):
    s = tree_stats(nnx_params)
    assert s.size == sum(x.size for x in jax.tree.leaves(nnx_params))
