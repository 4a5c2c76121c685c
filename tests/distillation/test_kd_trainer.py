"""distill / distillation_loss / feature_extractor: the trainer on one device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcompress import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.distillation import (
    data_mesh,
    distill,
    distillation_loss,
    feature_extractor,
    init_hint_projection,
    kd_loss,
    process_slice,
)
from jaxcompress.models import MLP, functional
from jaxcompress.training import fit


def _data(n=64, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    return x, y


@pytest.fixture(scope="module")
def nets():
    t_apply, t_params = functional(MLP(16, (20,), 4, rngs=nnx.Rngs(0)))
    s_apply, s_params = functional(MLP(16, (8,), 4, dropout=0.1, rngs=nnx.Rngs(1)))
    return t_apply, t_params, s_apply, s_params


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _same(a, b, atol=0.0):
    return all(
        np.allclose(u, v, atol=atol, rtol=0) for u, v in zip(_leaves(a), _leaves(b), strict=True)
    )


KW = dict(epochs=2, batch_size=16, temperature=3.0, alpha=0.8, progress=False)


def test_distill_equals_fit_with_distillation_loss_and_is_deterministic(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    opt = optax.adam(1e-2)
    a = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=opt,
        key=jax.random.key(3),
        eval_data=(x, y),
        **KW,
    )
    b = distill(
        s_apply, s_params, t_apply, t_params, (x, y), optimizer=opt, key=jax.random.key(3), **KW
    )
    c = distill(
        s_apply, s_params, t_apply, t_params, (x, y), optimizer=opt, key=jax.random.key(4), **KW
    )
    loss_fn = distillation_loss(s_apply, t_apply, t_params, temperature=3.0, alpha=0.8)
    f = fit(
        s_apply,
        s_params,
        (x, y),
        optimizer=opt,
        epochs=2,
        batch_size=16,
        key=jax.random.key(3),
        loss_fn=loss_fn,
        progress=False,
    )
    assert _same(a.params, b.params)  # bitwise deterministic under a seed
    assert not _same(a.params, c.params, atol=1e-6)  # and the seed matters
    assert _same(a.params, f.params, atol=1e-7)  # the trainer is fit's loop
    assert [h["epoch"] for h in a.history] == [1, 2]
    assert a.history[1]["loss"] < a.history[0]["loss"]
    assert 0.0 <= a.history[1]["eval_accuracy"] <= 1.0
    assert not _same(a.params, s_params, atol=1e-4)  # it trained


def test_teacher_is_frozen_and_gets_no_gradient(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    before = _leaves(t_params)
    distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.sgd(0.1),
        key=jax.random.key(0),
        **KW,
    )
    assert all(np.array_equal(u, v) for u, v in zip(before, _leaves(t_params), strict=True))

    def loss_of_teacher(tp):
        return distillation_loss(s_apply, t_apply, tp, temperature=2.0, alpha=0.5)(
            s_params, x, y, jax.random.key(0)
        )

    grads = jax.grad(loss_of_teacher)(t_params)
    assert all(np.all(g == 0.0) for g in _leaves(grads))


def test_precomputed_teacher_logits_give_the_same_result(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    a = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(5),
        **KW,
    )
    b = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(5),
        precompute_teacher=True,
        **KW,
    )
    assert _same(a.params, b.params, atol=1e-5)


def test_distil_into_a_pruned_and_quantized_student(nets):
    from jaxcompress.pruning import magnitude_pruning
    from jaxcompress.quantization import fake_quantize

    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    opt = optax.chain(optax.adam(1e-2), magnitude_pruning(0.75))
    fq = fake_quantize(bits=4)
    res = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=opt,
        key=jax.random.key(1),
        param_transform=fq,
        **KW,
    )
    kernels = [np.asarray(a) for a in jax.tree.leaves(res.params) if a.ndim >= 2]
    for k in kernels:  # 75% of every kernel is exactly zero (pruning state lives in opt_state)
        assert np.sum(k == 0) == round(0.75 * k.size)
    # the student's forward saw 4-bit weights: at most 2^4 - 1 distinct values per column
    q = [np.asarray(a) for a in jax.tree.leaves(fq(res.params)) if a.ndim >= 2]
    assert all(len(np.unique(col)) <= 15 for k in q for col in k.T)


def test_augment_runs_inside_the_step(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    seen = []

    def augment(xb, key):
        seen.append(xb.shape)
        return xb + 0.1 * jax.random.normal(key, xb.shape)

    a = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(2),
        augment=augment,
        **KW,
    )
    b = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(2),
        **KW,
    )
    assert seen and seen[0] == (16, 4, 4, 1)
    assert not _same(a.params, b.params, atol=1e-6)


def test_one_device_mesh_equals_no_mesh(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    mesh = data_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",)
    assert process_slice(16, mesh) == slice(0, 16)
    a = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(2),
        mesh=mesh,
        **KW,
    )
    b = distill(
        s_apply,
        s_params,
        t_apply,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(2),
        **KW,
    )
    assert _same(a.params, b.params, atol=1e-7)


# ------------------------------------------------------------------------------------ hints
class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        h = nn.relu(nn.Dense(8, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(4, name="out")(h)


def test_feature_extractor_reads_intermediates_nnx_and_linen():
    x, _ = _data(8)
    model = MLP(16, (8, 6), 4, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    fn = feature_extractor(model, ("hidden/0", "hidden/1"))
    logits, (h0, h1) = jax.jit(fn)(params, x)
    w0, b0 = np.asarray(model.hidden[0].kernel[...]), np.asarray(model.hidden[0].bias[...])
    np.testing.assert_allclose(h0, x.reshape(8, -1) @ w0 + b0, rtol=1e-5, atol=1e-5)
    assert h1.shape == (8, 6)
    np.testing.assert_allclose(logits, functional(model)[0](params, x), rtol=1e-6)
    with pytest.raises(JaxCompressValueError, match="available paths.*hidden/0"):
        feature_extractor(model, "nope")(params, x)

    lin = _LinenMLP()
    variables = lin.init(jax.random.key(0), x)
    lfn = feature_extractor(lin, "hidden")
    l_logits, (lh,) = lfn(variables, x)
    k = np.asarray(variables["params"]["hidden"]["kernel"])
    np.testing.assert_allclose(lh, x.reshape(8, -1) @ k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_logits, lin.apply(variables, x), rtol=1e-6)
    with pytest.raises(JaxCompressTypeError, match="Module"):
        feature_extractor(object(), "a")
    with pytest.raises(JaxCompressValueError, match="paths"):
        feature_extractor(model, ())


def test_hint_distillation_trains_projection_and_student():
    x, y = _data()
    teacher = MLP(16, (12,), 4, rngs=nnx.Rngs(0))
    student = MLP(16, (6,), 4, rngs=nnx.Rngs(1))
    t_feat = feature_extractor(teacher, "hidden/0")
    s_feat = feature_extractor(student, "hidden/0")
    params = {
        "student": nnx.state(student, nnx.Param),
        "projections": (init_hint_projection(jax.random.key(0), 6, 12),),
    }
    t_params = nnx.state(teacher, nnx.Param)
    res = distill(
        s_feat,
        params,
        t_feat,
        t_params,
        (x, y),
        optimizer=optax.adam(1e-2),
        key=jax.random.key(0),
        hint_weight=1.0,
        eval_data=(x, y),
        **{**KW, "epochs": 4},
    )
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert not _same(res.params["projections"], params["projections"], atol=1e-4)

    def hint_only(p):
        s = s_feat(p["student"], x)[1][0]
        t = t_feat(t_params, x)[1][0]
        proj = p["projections"][0]
        return float(jnp.mean((s @ proj["kernel"] + proj["bias"] - t) ** 2))

    assert hint_only(res.params) < hint_only(params)
    with pytest.raises(JaxCompressTypeError, match="projections"):
        distill(
            s_feat,
            params["student"],
            t_feat,
            t_params,
            (x, y),
            optimizer=optax.adam(1e-2),
            key=jax.random.key(0),
            hint_weight=1.0,
            **KW,
        )


# ------------------------------------------------------------------------------------ errors
def test_trainer_rejects_bad_input(nets):
    t_apply, t_params, s_apply, s_params = nets
    x, y = _data()
    opt = optax.adam(1e-2)
    common = dict(optimizer=opt, key=jax.random.key(0), batch_size=16, epochs=1, progress=False)
    other_apply, other_params = functional(MLP(16, (8,), 5, rngs=nnx.Rngs(2)))
    with pytest.raises(JaxCompressValueError, match="student logits .* teacher logits"):
        distill(
            other_apply,
            other_params,
            t_apply,
            t_params,
            (x, y),
            temperature=2.0,
            alpha=0.5,
            **common,
        )
    with pytest.raises(JaxCompressValueError, match=r"labels must be in \[0, 4\)"):
        distill(
            s_apply, s_params, t_apply, t_params, (x, y + 3), temperature=2.0, alpha=0.5, **common
        )
    with pytest.raises(JaxCompressValueError, match="temperature"):
        distill(s_apply, s_params, t_apply, t_params, (x, y), temperature=0.0, alpha=0.5, **common)
    with pytest.raises(JaxCompressValueError, match="alpha"):
        distill(s_apply, s_params, t_apply, t_params, (x, y), temperature=1.0, alpha=2.0, **common)
    with pytest.raises(JaxCompressValueError, match="alpha"):
        distillation_loss(s_apply, t_apply, t_params, temperature=1.0, alpha=-0.5)
    with pytest.raises(JaxCompressValueError, match="precompute_teacher"):
        distill(
            s_apply,
            s_params,
            t_apply,
            t_params,
            (x, y),
            temperature=1.0,
            alpha=0.5,
            precompute_teacher=True,
            augment=lambda a, k: a,
            **common,
        )
    with pytest.raises(JaxCompressValueError, match="batch_size"):
        distill(
            s_apply,
            s_params,
            t_apply,
            t_params,
            (x, y),
            temperature=1.0,
            alpha=0.5,
            **{**common, "batch_size": 0},
        )
    with pytest.raises(JaxCompressTypeError, match="labels must be integers"):
        distill(
            s_apply,
            s_params,
            t_apply,
            t_params,
            (x, y.astype(np.float32)),
            temperature=1.0,
            alpha=0.5,
            **common,
        )


def test_kd_loss_shape_error_surfaces_at_trace_time_under_jit():
    f = jax.jit(lambda s, t: kd_loss(s, t, temperature=2.0, alpha=1.0))
    with pytest.raises(JaxCompressValueError, match="student_logits.shape"):
        f(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
