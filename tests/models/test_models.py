import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxcompress import models
from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, selected_paths


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "ctor, shape, n_params",
    [
        (models.LeNet300100, (3, 28, 28, 1), 266_610),  # Han et al. 2015: 267K
        (models.LeNet5, (3, 28, 28, 1), 431_080),  # Han et al. 2015: 431K
        (models.MLP1D, (3, 40, 1), 15_210),
        (models.CNN1D, (3, 40, 1), 5_210),
        (models.TinyTransformer, (3, 40, 1), None),
    ],
)
def test_nnx_models(ctor, shape, n_params):
    apply_fn, params = models.functional(ctor(rngs=nnx.Rngs(0)))
    y = jax.jit(apply_fn)(params, jnp.ones(shape))
    assert y.shape == (3, 10)
    assert bool(jnp.all(jnp.isfinite(y)))
    if n_params is not None:
        assert _count(params) == n_params
    assert selected_paths(params)  # the default where= finds kernels in every model


@pytest.mark.parametrize(
    "module, nnx_ctor, shape",
    [
        (models.linen.LeNet300100(), models.LeNet300100, (2, 28, 28, 1)),
        (models.linen.LeNet5(), models.LeNet5, (2, 28, 28, 1)),
        (models.linen.CNN1D(), models.CNN1D, (2, 40, 1)),
    ],
)
def test_linen_twins_match_param_counts(module, nnx_ctor, shape):
    apply_fn, params = models.functional(module, jnp.ones(shape))
    assert apply_fn(params, jnp.ones(shape)).shape == (2, 10)
    assert _count(params) == _count(models.functional(nnx_ctor(rngs=nnx.Rngs(0)))[1])


def test_dropout_only_in_training():
    apply_fn, params = models.functional(models.MLP(784, (64,), dropout=0.5, rngs=nnx.Rngs(0)))
    x = jnp.ones((4, 784))
    a = apply_fn(params, x)
    assert jnp.array_equal(a, apply_fn(params, x))
    b = apply_fn(params, x, train=True, key=jax.random.key(1))
    c = apply_fn(params, x, train=True, key=jax.random.key(2))
    assert not jnp.array_equal(b, c)


def test_functional_errors():
    with pytest.raises(JaxCompressValueError, match="example_input"):
        models.functional(models.linen.LeNet5())
    with pytest.raises(JaxCompressTypeError, match="nnx.Module or linen.Module"):
        models.functional(lambda x: x)


def test_transformer_validates_shapes():
    with pytest.raises(ValueError, match="divisible"):
        models.TinyTransformer(length=41, rngs=nnx.Rngs(0))
