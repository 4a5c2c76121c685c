"""Direct NHWC convolutions and pooling against their NumPy twins (and once against JAX / Flax)."""

import itertools

import numba
import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import conv, reference
from tests.kernels._helpers import rel_close

ACTS = (None, "relu", "relu6")
# (H, W, KH, KW, strides, pads, dilation)
GEOMS = [
    (7, 9, 3, 3, (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (9, 8, 3, 2, (2, 1), ((1, 2), (0, 1)), (1, 1)),
    (11, 10, 3, 3, (2, 2), ((1, 1), (1, 1)), (2, 1)),
    (6, 13, 2, 4, (1, 2), ((2, 0), (3, 1)), (1, 2)),
    (1, 17, 1, 5, (1, 1), ((0, 0), (2, 2)), (1, 1)),  # 1-D conv, same padding
    (1, 33, 1, 3, (1, 2), ((0, 0), (0, 1)), (1, 3)),  # 1-D, stride 2, dilated
    (8, 9, 3, 3, (1, 1), ((-1, 1), (1, -2)), (1, 1)),  # negative pads crop
    (5, 5, 5, 5, (1, 1), ((0, 0), (0, 0)), (1, 1)),  # one output pixel
]


def _data(rng, b, h, w, cin, kshape, bias=True):
    x = rng.standard_normal((b, h, w, cin)).astype(np.float32)
    k = rng.standard_normal(kshape).astype(np.float32)
    bb = rng.standard_normal(kshape[3]).astype(np.float32) if bias else None
    return x, k, bb


CONV_CASES = [
    (cin, cout, GEOMS[i % len(GEOMS)], ACTS[i % 3], (1, 3)[i % 2], i % 4 != 3)
    for i, (cin, cout) in enumerate(itertools.product((1, 3, 20), (1, 7, 50, 64, 70)))
]


@pytest.mark.parametrize("cin,cout,geom,act,batch,bias", CONV_CASES)
def test_conv2d_matches_twin(cin, cout, geom, act, batch, bias):
    h, w, kh, kw, strides, pads, dil = geom
    rng = np.random.default_rng(cin * 100 + cout)
    x, k, b = _data(rng, batch, h, w, cin, (kh, kw, cin, cout), bias)
    kw_ = dict(strides=strides, pads=pads, dilation=dil, activation=act)
    y = jk.conv2d(x, k, b, **kw_)
    yr = reference.conv2d(x, k, b, **kw_)
    rel_close(y, yr)
    if act is not None:
        assert y.min() >= 0
    if act == "relu6":
        assert y.max() <= 6
    # prepared weight, preallocated output, hot entry: the same values
    pw = jk.prepare_conv2d(k, b, **kw_)
    assert pw.output_shape(x.shape) == yr.shape
    out = np.full(yr.shape, np.nan, np.float32)
    assert pw(x, out) is out
    np.testing.assert_array_equal(out, y)
    out2 = np.full(yr.shape, np.nan, np.float32)
    pw.call_unchecked(x, out2)
    np.testing.assert_array_equal(out2, y)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("act", ACTS)
def test_conv2d_every_geometry(geom, act):
    h, w, kh, kw, strides, pads, dil = geom
    rng = np.random.default_rng(h * w + kh)
    x, k, b = _data(rng, 3, h, w, 5, (kh, kw, 5, 19))
    kw_ = dict(strides=strides, pads=pads, dilation=dil, activation=act)
    rel_close(jk.conv2d(x, k, b, **kw_), reference.conv2d(x, k, b, **kw_))


@pytest.mark.parametrize("c", (1, 8, 20, 64, 70))
@pytest.mark.parametrize("gi", range(0, len(GEOMS), 2))
def test_depthwise_matches_twin(c, gi):
    h, w, kh, kw, strides, pads, dil = GEOMS[gi]
    rng = np.random.default_rng(c + gi)
    act = ACTS[(c + gi) % 3]
    x, k, b = _data(rng, 1 + gi % 2 * 2, h, w, c, (kh, kw, 1, c))
    kw_ = dict(strides=strides, pads=pads, dilation=dil, activation=act)
    pw = jk.prepare_depthwise_conv2d(k, b, **kw_)
    assert isinstance(pw, jk.DepthwiseConv2dWeight)
    y = pw(x)
    rel_close(y, reference.depthwise_conv2d(x, k, b, **kw_))
    np.testing.assert_array_equal(jk.depthwise_conv2d(x, k, b, **kw_), y)


# 3-wide depthwise kernels with W stride <= 2 and no W dilation run the row tiles (`dw3_tile`,
# no padded copy): rows of every length mod 8 / 4 / 2, padding on any side, H stride / dilation
DW3_GEOMS = [
    # (H, W, KH, strides, pads, H dilation)
    (25, 5, 3, (1, 1), ((1, 1), (1, 1)), 1),  # DS-CNN
    (9, 17, 3, (2, 2), ((0, 1), (0, 1)), 1),  # TF "same", stride 2
    (6, 6, 3, (1, 1), ((1, 1), (1, 1)), 1),
    (7, 15, 2, (3, 1), ((2, 0), (0, 2)), 1),
    (5, 30, 5, (1, 2), ((3, 3), (4, 4)), 2),  # whole kernel rows / windows in the padding
    (1, 3, 1, (1, 1), ((0, 0), (0, 0)), 1),  # one output pixel
    (2, 2, 1, (1, 1), ((0, 0), (1, 1)), 1),  # narrower than the kernel: padding both sides
    (8, 11, 3, (2, 1), ((0, 0), (2, 0)), 3),
]


@pytest.mark.parametrize("c", (1, 3, 8, 20, 64, 70, 136))
@pytest.mark.parametrize("gi", range(len(DW3_GEOMS)))
def test_depthwise_row_tiles_match_twin(c, gi):
    h, w, kh, strides, pads, dh = DW3_GEOMS[gi]
    rng = np.random.default_rng(1000 * gi + c)
    act = ACTS[(c + gi) % 3]
    x, k, b = _data(rng, 1 + (c + gi) % 2, h, w, c, (kh, 3, 1, c), bias=(c + gi) % 4 != 3)
    kw_ = dict(strides=strides, pads=pads, dilation=(dh, 1), activation=act)
    pw = jk.prepare_depthwise_conv2d(k, b, **kw_)
    y = pw(x)
    rel_close(y, reference.depthwise_conv2d(x, k, b, **kw_))
    out = np.full(y.shape, np.nan, np.float32)
    pw.call_unchecked(x, out)  # every output element written
    np.testing.assert_array_equal(out, y)


def test_depthwise_row_tiles_nan_stays_in_its_windows():
    """A NaN / inf pixel reaches exactly the windows that contain it (masked padding columns
    and lanes past the channel run read nothing), as in the reference."""
    rng = np.random.default_rng(3)
    for c, (i, j) in ((20, (0, 0)), (8, (6, 10)), (33, (3, 0))):
        x, k, b = _data(rng, 1, 7, 11, c, (3, 3, 1, c))
        x[0, i, j, c - 1] = np.nan
        x[0, (i + 3) % 7, (j + 5) % 11, 0] = np.inf
        kw_ = dict(strides=(1, 2), pads=((1, 1), (1, 1)))
        y = jk.depthwise_conv2d(x, k, b, **kw_)
        yr = reference.depthwise_conv2d(x, k, b, **kw_)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(yr))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(yr))
        fin = np.isfinite(yr)
        rel_close(y[fin], yr[fin])


def test_depthwise_row_tiles_parallel_equals_serial():
    rng = np.random.default_rng(9)
    x, k, b = _data(rng, 2, 66, 64, 64, (3, 3, 1, 64))
    pw = jk.prepare_depthwise_conv2d(k, b, strides=(2, 2), pads=((0, 1), (0, 1)))
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        y1 = pw(x)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        y2 = pw(x)
    finally:
        numba.set_num_threads(old)
    assert y1.size * 9 * 64 >= conv._PARALLEL_MIN_MACS
    np.testing.assert_array_equal(y1, y2)
    rel_close(y1, reference.depthwise_conv2d(x, k, b, strides=(2, 2), pads=((0, 1), (0, 1))))


@pytest.mark.parametrize("cin,m", [(3, 2), (5, 3), (1, 4)])
def test_depthwise_multiplier(cin, m):
    rng = np.random.default_rng(cin * m)
    x, k, b = _data(rng, 2, 7, 6, cin, (3, 3, 1, cin * m))
    kw_ = dict(multiplier=m, strides=(2, 1), pads=((1, 1), (1, 1)), activation="relu")
    y = jk.depthwise_conv2d(x, k, b, **kw_)
    rel_close(y, reference.depthwise_conv2d(x, k, b, **kw_))


POOLS = [
    (24, 24, 20, (2, 2), (2, 2), ((0, 0), (0, 0))),
    (8, 8, 50, (2, 2), (2, 2), ((0, 0), (0, 0))),
    (7, 9, 3, (3, 2), (2, 1), ((1, 0), (2, 1))),  # left pad 2 >= KW: all-padding windows
    (5, 6, 70, (3, 3), None, ((1, 1), (1, 1))),
    (1, 31, 16, (1, 3), (1, 2), ((0, 0), (1, 1))),
    (6, 6, 1, (6, 6), (1, 1), ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("h,w,c,window,strides,pads", POOLS)
@pytest.mark.parametrize("batch", (1, 3))
def test_pooling_matches_twin(h, w, c, window, strides, pads, batch):
    rng = np.random.default_rng(h * w * c + batch)
    x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
    kw_ = dict(strides=strides, pads=pads)
    np.testing.assert_array_equal(
        jk.max_pool2d(x, window, **kw_), reference.max_pool2d(x, window, **kw_)
    )
    for cip in (True, False):
        y = jk.avg_pool2d(x, window, count_include_pad=cip, **kw_)
        yr = reference.avg_pool2d(x, window, count_include_pad=cip, **kw_)
        fin = np.isfinite(yr)
        np.testing.assert_array_equal(np.isfinite(y), fin)  # NaN for all-padding windows
        rel_close(np.where(fin, y, 0), np.where(fin, yr, 0))
    y = jk.global_avg_pool2d(x)
    rel_close(y, reference.global_avg_pool2d(x))
    assert jk.global_avg_pool2d(x, keepdims=True).shape == (batch, 1, 1, c)


def test_max_pool_propagates_nan():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    x[0, 1, 1, 2] = np.nan
    x[1, 3, 3, 0] = np.nan
    y = jk.max_pool2d(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(y, reference.max_pool2d(x, (2, 2), strides=(2, 2)))
    assert np.isnan(y[0, 0, 0, 2]) and np.isnan(y[1, 1, 1, 0])
    assert np.isnan(y).sum() == 2


def test_parallel_path_equals_serial():
    """Layers above the parallel threshold split tiles over threads; each tile is summed by
    one thread in the same order, so the result is identical."""
    rng = np.random.default_rng(5)
    x, k, b = _data(rng, 2, 34, 33, 16, (3, 3, 16, 40))
    pw = jk.prepare_conv2d(k, b, pads=((1, 1), (1, 1)), activation="relu")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        y1 = pw(x)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        y2 = pw(x)
    finally:
        numba.set_num_threads(old)
    assert y1.size * 9 * 16 >= conv._PARALLEL_MIN_MACS
    np.testing.assert_array_equal(y1, y2)
    rel_close(y1, reference.conv2d(x, k, b, pads=((1, 1), (1, 1)), activation="relu"))


def test_against_jax_and_flax():
    jax = pytest.importorskip("jax")
    import flax.linen as nn
    import jax.numpy as jnp

    rng = np.random.default_rng(11)
    x, k, b = _data(rng, 2, 12, 11, 6, (3, 3, 6, 20))
    pads = ((1, 2), (0, 1))
    y = jk.conv2d(x, k, b, strides=(2, 1), pads=pads, dilation=(1, 2))
    yj = jax.lax.conv_general_dilated(
        x,
        k,
        (2, 1),
        pads,
        rhs_dilation=(1, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )
    rel_close(y, np.asarray(yj) + b)
    kd = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
    yd = jk.depthwise_conv2d(x, kd, pads=((1, 1), (1, 1)))
    yjd = jax.lax.conv_general_dilated(
        x,
        kd,
        (1, 1),
        ((1, 1), (1, 1)),
        feature_group_count=6,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )
    rel_close(yd, np.asarray(yjd))
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(
        jk.max_pool2d(x, (3, 2), strides=(2, 2), pads=((1, 1), (0, 1))),
        np.asarray(nn.max_pool(xj, (3, 2), strides=(2, 2), padding=((1, 1), (0, 1)))),
    )
    for cip in (True, False):
        rel_close(
            jk.avg_pool2d(x, (3, 2), strides=(2, 2), pads=((1, 1), (0, 1)), count_include_pad=cip),
            np.asarray(
                nn.avg_pool(
                    xj, (3, 2), strides=(2, 2), padding=((1, 1), (0, 1)), count_include_pad=cip
                )
            ),
        )


def test_weight_is_read_only_and_packed():
    k = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    b = np.ones(5, np.float32)
    pw = jk.prepare_conv2d(k, b)
    assert pw.w.shape == (2 * 3 * 4 + 1, 16) and not pw.w.flags.writeable
    np.testing.assert_array_equal(pw.w[:-1, :5], k.reshape(-1, 5))
    np.testing.assert_array_equal(pw.w[-1, :5], b)
    assert not pw.w[:, 5:].any()


# ----------------------------------------------------------------------------------------------
# validation


def _x(shape=(1, 6, 6, 2)):
    return np.ones(shape, np.float32)


def _k(shape=(3, 3, 2, 4)):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize(
    "call,err,match",
    [
        (lambda: jk.conv2d(_x().astype(np.float64), _k()), TypeError, r"x.dtype=float64"),
        (lambda: jk.conv2d(_x()[0], _k()), ValueError, r"x.ndim=3"),
        (lambda: jk.conv2d(_x((1, 6, 12, 2))[:, :, ::2], _k()), ValueError, r"x must be C-contig"),
        (lambda: jk.conv2d(_x((1, 6, 6, 3)), _k()), ValueError, r"must end in Cin=2"),
        (lambda: jk.conv2d(_x(), [[1.0]]), TypeError, r"w must be a numpy.ndarray"),
        (lambda: jk.conv2d(_x(), _k().astype(np.float16)), TypeError, r"w.dtype=float16"),
        (lambda: jk.conv2d(_x(), _k((3, 3, 2))), ValueError, r"w.ndim=3"),
        (lambda: jk.conv2d(_x(), _k((3, 0, 2, 4))), ValueError, r"every dimension >= 1"),
        (lambda: jk.conv2d(_x(), _k(), np.ones(3, np.float32)), ValueError, r"bias.shape=\(3,\)"),
        (lambda: jk.conv2d(_x(), _k(), strides=(0, 1)), ValueError, r"strides\[0\]=0"),
        (lambda: jk.conv2d(_x(), _k(), strides=(1, 1, 1)), TypeError, r"strides="),
        (lambda: jk.conv2d(_x(), _k(), dilation=(1, 0)), ValueError, r"dilation\[1\]=0"),
        (lambda: jk.conv2d(_x(), _k(), pads=(1, 1)), TypeError, r"pads\[0\]=1"),
        (lambda: jk.conv2d(_x(), _k(), pads=((1, 1.5), (0, 0))), TypeError, r"pads\[0\]\[1\]"),
        (lambda: jk.conv2d(_x(), _k(), activation="gelu"), ValueError, r"activation='gelu'"),
        (lambda: jk.conv2d(_x((1, 2, 6, 2)), _k()), ValueError, r"padded H = 2"),
        (lambda: jk.conv2d(_x(), _k(), dilation=(3, 1)), ValueError, r"padded H = 6"),
        (lambda: jk.conv2d(_x(), _k(), pads=((-6, 0), (0, 0))), ValueError, r"crop all"),
        (
            lambda: jk.conv2d(_x(), _k(), out=np.empty((1, 4, 4, 3), np.float32)),
            ValueError,
            r"out.shape=\(1, 4, 4, 3\) must be \(1, 4, 4, 4\)",
        ),
        (
            lambda: jk.conv2d(_x(), _k(), out=np.empty((1, 4, 4, 4))),
            TypeError,
            r"out.dtype=float64",
        ),
        (
            lambda: jk.conv2d(_x(), jk.prepare_conv2d(_k()), strides=(2, 2)),
            ValueError,
            r"strides must not be given with a prepared",
        ),
        (
            lambda: jk.prepare_depthwise_conv2d(_k((3, 3, 2, 4))),
            ValueError,
            r"must be \(KH, KW, 1, Cin \* multiplier\)",
        ),
        (
            lambda: jk.prepare_depthwise_conv2d(_k((3, 3, 1, 4)), multiplier=3),
            ValueError,
            r"multiple of multiplier=3",
        ),
        (lambda: jk.max_pool2d(_x(), (2, 2), pads=((-1, 0), (0, 0))), ValueError, r">= 0 for pool"),
        (lambda: jk.max_pool2d(_x(), (7, 2)), ValueError, r"shorter than the pooling window"),
        (lambda: jk.max_pool2d(_x(), (0, 2)), ValueError, r"window\[0\]=0"),
        (lambda: jk.avg_pool2d(_x(), 2, count_include_pad=1), TypeError, r"count_include_pad"),
        (lambda: jk.max_pool2d(_x().astype(np.int32), 2), TypeError, r"x.dtype=int32"),
        (lambda: jk.global_avg_pool2d(_x((1, 0, 3, 2))), ValueError, r"H \* W >= 1"),
        (
            lambda: jk.global_avg_pool2d(_x(), out=np.empty((1, 1, 1, 2), np.float32)),
            ValueError,
            r"out.shape",
        ),
        (lambda: jk.prepare_max_pool2d(2, 3)(_x()), ValueError, r"must be \(B, H, W, 3\)"),
    ],
)
def test_validation(call, err, match):
    with pytest.raises(err, match=match) as info:
        call()
    assert isinstance(info.value, (jk.JaxCompressValueError, jk.JaxCompressTypeError))


def test_out_read_only_and_overlap():
    x = _x()
    ro = np.empty((1, 4, 4, 4), np.float32)
    ro.setflags(write=False)
    with pytest.raises(jk.JaxCompressValueError, match="out must be writeable"):
        jk.conv2d(x, _k(), out=ro)
    buf = np.ones((1, 6, 6, 2), np.float32)
    with pytest.raises(jk.JaxCompressValueError, match="out must not overlap x"):
        jk.max_pool2d(buf, (1, 1), out=buf)


def test_batch_zero():
    y = jk.conv2d(np.ones((0, 6, 6, 2), np.float32), _k())
    assert y.shape == (0, 4, 4, 4)
    assert jk.max_pool2d(np.ones((0, 4, 4, 2), np.float32), 2).shape == (0, 3, 3, 2)


@pytest.mark.parametrize("c", (8, 12, 16, 20, 32, 40, 48, 56, 64, 72, 100, 130))
def test_every_block_layout(c):
    """Channel counts reaching every tile layout (16-lane vectors x optional 8-lane tail, and
    several 64-channel blocks) in conv, depthwise and max pooling."""
    rng = np.random.default_rng(c)
    x, k, b = _data(rng, 2, 6, 7, 3, (3, 2, 3, c))
    kw_ = dict(strides=(1, 2), pads=((1, 1), (0, 1)), activation="relu6")
    rel_close(jk.conv2d(x, k, b, **kw_), reference.conv2d(x, k, b, **kw_))
    xd, kd, bd = _data(rng, 2, 6, 7, c, (3, 2, 1, c))
    rel_close(jk.depthwise_conv2d(xd, kd, bd, **kw_), reference.depthwise_conv2d(xd, kd, bd, **kw_))
    np.testing.assert_array_equal(
        jk.max_pool2d(xd, (2, 3), strides=(2, 1), pads=((0, 1), (1, 1))),
        reference.max_pool2d(xd, (2, 3), strides=(2, 1), pads=((0, 1), (1, 1))),
    )
