"""`_sparse_conv.SparsePlaneConv` (the stride-1 CSR conv) against a float64 NumPy conv."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels._sparse_conv import SparsePlaneConv
from tests.kernels._helpers import rel_close


def _ref(x, w, pads, dil, bias, act, pool):
    b, h, wd, c = x.shape
    kh, kw, _, n = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    oh, ow = xp.shape[1] - (kh - 1) * dil[0], xp.shape[2] - (kw - 1) * dil[1]
    y = np.zeros((b, oh, ow, n))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i * dil[0] : i * dil[0] + oh, j * dil[1] : j * dil[1] + ow, :]
            y += np.einsum("bhwc,cn->bhwn", win, w[i, j].astype(np.float64))
    if pool is not None:
        (ph, pw), (sh, sw) = pool
        py, px = (oh - ph) // sh + 1, (ow - pw) // sw + 1
        y = np.stack(
            [
                np.stack(
                    [
                        y[:, r * sh : r * sh + ph, q * sw : q * sw + pw].max((1, 2))
                        for q in range(px)
                    ],
                    1,
                )
                for r in range(py)
            ],
            1,
        )
    if bias is not None:
        y = y + bias
    if act:
        y = np.maximum(y, 0.0)
    if act == 2:
        y = np.minimum(y, 6.0)
    return y


def _csr(w):
    wt = w.reshape(-1, w.shape[-1]).T  # (N, K): rows are output channels
    indptr = np.concatenate([[0], np.cumsum((wt != 0).sum(1))]).astype(np.int64)
    indices = np.nonzero(wt)[1].astype(np.uint16)
    return indptr, indices, wt[wt != 0].astype(np.float32)


GEOMS = [
    # (batch, H, W, C, KH, KW, N, pads, dilation, density, pool)
    (1, 12, 12, 20, 5, 5, 50, ((0, 0), (0, 0)), (1, 1), 0.1, ((2, 2), (2, 2))),
    (1, 28, 28, 1, 5, 5, 20, ((0, 0), (0, 0)), (1, 1), 0.1, None),
    (2, 9, 7, 3, 3, 2, 5, ((1, 2), (0, 1)), (2, 1), 0.5, None),
    (1, 1, 49, 4, 1, 3, 7, ((0, 0), (1, 1)), (1, 1), 0.3, None),
    (3, 10, 11, 6, 3, 3, 9, ((1, 1), (1, 1)), (1, 1), 1.0, ((3, 3), (2, 2))),
    (1, 7, 40, 2, 2, 3, 3, ((0, 0), (2, 0)), (1, 3), 0.6, ((2, 1), (1, 1))),
    (1, 6, 6, 4, 3, 3, 5, ((0, 0), (0, 0)), (1, 1), 0.0, None),  # every row empty
]


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("act", [0, 1, 2])
def test_matches_reference(geom, act):
    b, h, wd, c, kh, kw, n, pads, dil, dens, pool = geom
    rng = np.random.default_rng(hash((geom[:7], act)) % 2**32)
    w = rng.standard_normal((kh, kw, c, n)).astype(np.float32)
    w *= rng.random(w.shape) < dens
    x = rng.standard_normal((b, h, wd, c)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    sc = SparsePlaneConv(*_csr(w), None, kernel_hw=(kh, kw), dilation=dil, pads=pads,
                         xshape=x.shape, bias=bias, act=act, pool=pool)  # fmt: skip
    out = np.full(sc.out_shape, np.nan, np.float32)
    sc.run(x, out)
    want = _ref(x, w, pads, dil, bias, act, pool)
    assert out.shape == want.shape
    rel_close(out, want, 1e-5)
    x2 = rng.standard_normal(x.shape).astype(np.float32)  # a second call: no state leaks
    sc.run(x2, out)
    rel_close(out, _ref(x2, w, pads, dil, bias, act, pool), 1e-5)


def test_int8_values_with_scales():
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, (3, 3, 4, 6)).astype(np.int8)
    q[rng.random(q.shape) < 0.7] = 0
    s = (rng.random(6) + 0.1).astype(np.float32)
    indptr, indices, _ = _csr(q.astype(np.float32))
    vals = q.reshape(-1, 6).T[q.reshape(-1, 6).T != 0]
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    sc = SparsePlaneConv(indptr, indices, vals, s, kernel_hw=(3, 3), dilation=(1, 1),
                         pads=((1, 1), (1, 1)), xshape=x.shape)  # fmt: skip
    out = np.empty(sc.out_shape, np.float32)
    sc.run(x, out)
    rel_close(out, _ref(x, q.astype(np.float32) * s, ((1, 1), (1, 1)), (1, 1), None, 0, None))


def test_fused_pool_propagates_nan():
    w = np.ones((1, 1, 1, 2), np.float32)
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = np.nan  # first in its window
    x[0, 3, 3, 0] = np.nan  # last in its window
    sc = SparsePlaneConv(*_csr(w), None, kernel_hw=(1, 1), dilation=(1, 1),
                         pads=((0, 0), (0, 0)), xshape=x.shape, act=1, pool=((2, 2), (2, 2)))  # fmt: skip
    out = np.empty(sc.out_shape, np.float32)
    sc.run(x, out)
    assert np.isnan(out[0, 0, 0]).all() and np.isnan(out[0, 1, 1]).all()
    assert (out[0, 0, 1] == 0).all() and (out[0, 1, 0] == 0).all()


@pytest.mark.parametrize(
    "kw",
    [
        {"pads": ((-1, 0), (0, 0))},
        {"pool": ((9, 9), (1, 1))},
        {"kernel_hw": (9, 3)},
    ],
)
def test_bad_geometry_is_refused(kw):
    w = np.ones((3, 3, 2, 2), np.float32)
    args = dict(kernel_hw=(3, 3), dilation=(1, 1), pads=((0, 0), (0, 0)), xshape=(1, 6, 6, 2))
    args.update(kw)
    with pytest.raises(ValueError):
        SparsePlaneConv(*_csr(w), None, **args)
