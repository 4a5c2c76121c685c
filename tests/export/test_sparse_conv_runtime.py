"""Pruned convolutions in the runtime: stride-1 CSR convs run the planar sparse kernel (bias,
activation and max pooling fused), strided ones the transposed-im2col CSR path, and both match
the JAX model with the same masked weights."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcompress.export import reference_output, save
from jaxcompress.models import functional
from jaxcompress_kernels import runtime
from tests.export._models import _magnitude, _map_kernels, inputs, rel_err


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 8, (3, 3), padding="SAME", rngs=rngs)
        self.c2 = nnx.Conv(8, 12, (3, 3), kernel_dilation=(2, 2), padding="VALID", rngs=rngs)
        self.c3 = nnx.Conv(12, 6, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(6 * 2 * 2, 5, rngs=rngs)

    def __call__(self, x, train=False, rngs=None):
        del train, rngs
        x = nnx.max_pool(nnx.relu(self.c1(x)), (2, 2), (2, 2))  # 14x14 -> 7x7
        x = jax.nn.relu6(self.c2(x))  # 7x7 -> 3x3
        x = self.c3(x)  # stride 2: 3x3 -> 2x2
        return self.fc(x.reshape(x.shape[0], -1))


class _Net1d(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 64, (9,), padding=((2, 1),), rngs=rngs)
        self.fc = nnx.Linear(64 * 15, 3, rngs=rngs)

    def __call__(self, x, train=False, rngs=None):
        del train, rngs
        x = nnx.relu(self.c1(x))
        return self.fc(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(("cls", "shape", "planar"), [(_Net, (14, 14, 3), 2), (_Net1d, (20, 3), 1)])
@pytest.mark.parametrize("int8", [False, True])
def test_pruned_convs_match_jax(tmp_path, cls, shape, planar, int8):
    from jaxcompress import quantization

    apply_fn, params = functional(cls(rngs=nnx.Rngs(0)))
    p = _map_kernels(lambda n, w: _magnitude(n, w, 0.85), params)
    if int8:
        p = quantization.quantize_params(p, bits=8, where=r"kernel")
    path = tmp_path / "net.jcx"
    info = save(path, apply_fn, p, inputs(shape, 2, seed=1))
    enc = {
        n: t["encoding"]
        for n, t in info.tensors.items()
        if n.endswith("kernel") and n.startswith("c")
    }
    assert set(enc.values()) == {"csr"}, enc
    rt = runtime.load(path, num_threads=1, autotune=False)
    convs = [v for n, v in rt.plan.items() if n.startswith("c")]
    assert sum(v.startswith("spmm_csr_conv(planar") for v in convs) == planar, rt.plan
    for batch in (1, 3):
        x = inputs(shape, batch, seed=batch)
        ref = reference_output(apply_fn, p, x)
        assert rel_err(ref, rt.run(x)) <= 1e-5


def _random_bn(model, seed):
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            n = node.mean.shape[0]
            node.mean.set_value(np.asarray(rng.normal(0, 0.2, n), np.float32))
            node.var.set_value(np.asarray(rng.uniform(0.5, 1.5, n), np.float32))
            # negative scales too: the affine epilogue must not commute with the max pool
            node.scale.set_value(np.asarray(rng.uniform(-1.3, 1.3, n), np.float32))
            node.bias.set_value(np.asarray(rng.normal(0, 0.1, n), np.float32))


class _BnNet(nnx.Module):
    """Compressed conv and linear layers followed by batch norm: the runtime fuses the norm into
    the step as a per-channel affine epilogue (the export folds it only into float kernels)."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 16, (3, 3), padding="SAME", rngs=rngs)
        self.b1 = nnx.BatchNorm(16, rngs=rngs)
        self.f1 = nnx.Linear(16 * 4 * 4, 256, rngs=rngs)
        self.b2 = nnx.BatchNorm(256, rngs=rngs)
        self.f2 = nnx.Linear(256, 130, rngs=rngs)

    def __call__(self, x, train=False, rngs=None):
        del rngs
        x = nnx.max_pool(
            nnx.relu(self.b1(self.c1(x), use_running_average=not train)), (2, 2), (2, 2)
        )
        x = nnx.relu(self.b2(self.f1(x.reshape(x.shape[0], -1)), use_running_average=not train))
        return self.f2(x)


@pytest.mark.parametrize(
    ("way", "conv_kernel", "fc_kernel"),
    [
        ("prune_int8", "spmm_csr_conv(planar, int8", None),
        ("int4", None, "qmatmul(4-bit"),
        ("nm", None, "spmm_nm(2:4, f32"),
    ],
)
def test_affine_epilogue_on_bound_kernels(tmp_path, way, conv_kernel, fc_kernel):
    from jaxcompress import quantization
    from tests.export._models import _nm

    model = _BnNet(rngs=nnx.Rngs(0))
    _random_bn(model, 1)
    apply_fn, params = functional(model)
    if way == "prune_int8":
        p = _map_kernels(lambda n, w: _magnitude(n, w, 0.85), params)
        p = quantization.quantize_params(p, bits=8, where=r"kernel")
    elif way == "int4":
        p = quantization.quantize_params(params, bits=4, where=r"kernel")
    else:
        p = _map_kernels(_nm, params)
    path = tmp_path / "bn.jcx"
    save(path, apply_fn, p, inputs((8, 8, 3), 2, seed=1))
    rt = runtime.load(path, num_threads=1, autotune=False)
    if conv_kernel:
        assert rt.plan["c1/kernel"].startswith(conv_kernel), rt.plan
    if fc_kernel:
        assert rt.plan["f1/kernel"].startswith(fc_kernel), rt.plan
    for batch in (1, 2):  # batch 1 runs the bound GEMVs, batch 2 the general kernels
        x = inputs((8, 8, 3), batch, seed=batch)
        assert rel_err(reference_output(apply_fn, p, x), rt.run(x)) <= 1e-5


def test_pruned_weights_in_a_dense_encoding_may_run_planar(tmp_path):
    """A pruned conv whose quantized codes are stored dense (`packed`: at 30% density int8 CSR is
    not smaller) gets the planar sparse conv as an autotuned candidate, on its nonzeros."""
    from jaxcompress import quantization

    apply_fn, params = functional(_Net(rngs=nnx.Rngs(0)))
    p = _map_kernels(lambda n, w: _magnitude(n, w, 0.7), params)
    p = quantization.quantize_params(p, bits=8, where=r"kernel")
    path = tmp_path / "packed.jcx"
    info = save(path, apply_fn, p, inputs((14, 14, 3), 2, seed=1))
    assert info.tensors["c1/kernel"]["encoding"] == "packed"
    rt = runtime.load(path, num_threads=1)  # autotuned
    wk = rt.weights["c1/kernel"]
    plane = wk.plane_candidate()
    d = wk.dense()
    assert plane.csr.nnz == np.count_nonzero(d)
    np.testing.assert_array_equal(plane.csr.values, d.T[d.T != 0])
    for batch in (1, 2):
        x = inputs((14, 14, 3), batch, seed=batch)
        assert rel_err(reference_output(apply_fn, p, x), rt.run(x)) <= 1e-5


class _PwNet(nnx.Module):
    """A 1x1 (pointwise) conv between two 3x3 convs, as in MobileNet/DS-CNN blocks."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 16, (3, 3), padding="SAME", rngs=rngs)
        self.c2 = nnx.Conv(16, 24, (1, 1), rngs=rngs)
        self.fc = nnx.Linear(24 * 6 * 6, 4, rngs=rngs)

    def __call__(self, x, train=False, rngs=None):
        del train, rngs
        x = nnx.relu(self.c2(nnx.relu(self.c1(x))))
        return self.fc(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("pick", ["linear", "planar"])
def test_pruned_pointwise_conv_label_says_what_ran(tmp_path, monkeypatch, pick):
    """A pruned 1x1 conv runs its CSR weight either as a linear kernel over the pixels or as the
    planar sparse conv; both match JAX and the plan's label names the one that ran."""
    apply_fn, params = functional(_PwNet(rngs=nnx.Rngs(0)))
    p = _map_kernels(lambda n, w: _magnitude(n, w, 0.9), params)
    path = tmp_path / "pw.jcx"
    info = save(path, apply_fn, p, inputs((6, 6, 3), 2, seed=1), nm=False)
    assert info.tensors["c2/kernel"]["encoding"] == "csr"
    if pick == "planar":
        # the chooser picks the planar candidate of the pointwise conv (timing would decide)
        def first_planar(cands, n_native, x2_shape, conv, wk):
            if conv is not None and conv.pointwise:
                return next(i for i, c in enumerate(cands) if c.plane)
            return 0

        monkeypatch.setattr(runtime, "_fastest", first_planar)
        rt = runtime.load(path, num_threads=1)
    else:
        rt = runtime.load(path, num_threads=1, autotune=False)
    label = rt.plan["c2/kernel"]
    assert label.startswith("spmm_csr_conv(planar" if pick == "planar" else "spmm_csr("), label
    for batch in (1, 3):
        x = inputs((6, 6, 3), batch, seed=batch)
        assert rel_err(reference_output(apply_fn, p, x), rt.run(x)) <= 1e-5
