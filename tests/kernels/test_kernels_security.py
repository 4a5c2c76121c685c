"""Kernel containers cannot be corrupted after construction, refuse silently-wrong structures, and
no construction or mutation attempt makes a kernel crash the process (issue 16, items 2 and 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxcompress_kernels as jk
from jaxcompress_kernels import JaxCompressValueError

F32 = np.float32
PROBE = os.path.join(os.path.dirname(__file__), "_container_probe.py")


def _csr_parts():
    w = np.zeros((6, 3), F32)
    w[[0, 2, 5], 0] = [1.0, 2.0, 3.0]
    w[[1, 4], 2] = [4.0, 5.0]
    c = jk.csr_from_dense(w)
    return w, np.array(c.indptr), np.array(c.indices), np.array(c.values)


def _all_arrays(c):
    out = []
    for name in c.__dataclass_fields__:
        v = getattr(c, name)
        for a in v if isinstance(v, tuple) else [v]:
            while isinstance(a, np.ndarray):
                out.append((name, a))
                a = a.base
    return out


def _containers():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 130)).astype(F32)
    w[np.abs(w) < 0.8] = 0
    w24 = w.copy()
    w24.reshape(4, 4, 130)[:, 2:] = 0
    codes = np.clip(np.round(w * 3), -8, 7).astype(np.int8)
    return [
        jk.csr_from_dense(w),
        jk.csr_from_quantized(codes, np.full(130, 0.5, F32)),
        jk.bsr_from_dense(w[:, :128], block=(4, 4)),
        jk.nm_from_dense(w24, n=2),
        jk.nm_from_quantized(np.clip(np.round(w24 * 3), -8, 7).astype(np.int8), np.ones(130, F32)),
        jk.int8_weight(codes),
        jk.pack_weight(codes, np.full(130, 0.25, F32), bits=4),  # N >= 64: has the lanes layout
        jk.pack_weight(codes, np.full((2, 130), 0.25, F32), bits=8, group_size=8),
    ]


@pytest.mark.parametrize("i", range(8))
def test_no_container_array_can_be_made_writeable(i):
    c = _containers()[i]
    arrays = _all_arrays(c)
    assert arrays
    for name, a in arrays:
        assert not a.flags.writeable, name
        with pytest.raises(ValueError, match="WRITEABLE"):
            a.flags.writeable = True


def test_conv_containers_cannot_be_made_writeable():
    rng = np.random.default_rng(0)
    conv = jk.prepare_conv2d(rng.standard_normal((3, 3, 4, 8)).astype(F32), pads=((1, 1), (1, 1)))
    dw = jk.prepare_depthwise_conv2d(rng.standard_normal((3, 3, 1, 8)).astype(F32))
    pool = jk.prepare_max_pool2d((2, 2), 8)
    for c in (conv, dw, pool):
        for _, a in _all_arrays(c):
            with pytest.raises(ValueError, match="WRITEABLE"):
                a.flags.writeable = True  # geometry drives the compiled loops' bounds


@pytest.mark.parametrize("i", range(8))
def test_copies_and_pickles_stay_immutable(i):
    import copy
    import pickle

    c = _containers()[i]
    assert copy.copy(c) is c and copy.deepcopy(c) is c  # values: a copy is the object itself
    back = pickle.loads(pickle.dumps(c))  # through the validating constructor
    assert type(back) is type(c) and back.shape == c.shape
    np.testing.assert_array_equal(_all_arrays(c)[0][1], _all_arrays(back)[0][1])
    for _, a in _all_arrays(back):
        with pytest.raises(ValueError, match="WRITEABLE"):
            a.flags.writeable = True


def test_editing_the_callers_arrays_does_not_reach_the_container():
    w, indptr, indices, values = _csr_parts()
    c = jk.CSRMatrix(shape=w.shape, indptr=indptr, indices=indices, values=values)
    x = np.arange(12, dtype=F32).reshape(2, 6)
    want = x @ w
    indices[:] = 60000  # out of range: a view of the caller's array would read out of bounds
    indptr[-1] = 10**9
    values[:] = np.nan
    np.testing.assert_allclose(jk.spmm_csr(x, c), want, rtol=1e-6)
    np.testing.assert_array_equal(jk.to_dense(c), w)


def test_csr_with_a_duplicate_column_is_refused():
    # spmm_csr would sum the two entries (3.0) while to_dense, the twin and ONNX keep one (2.0)
    args = dict(shape=(3, 1), indptr=np.array([0, 2], np.int64), values=np.array([1, 2], F32))
    with pytest.raises(JaxCompressValueError, match="strictly increase.*duplicate"):
        jk.CSRMatrix(indices=np.array([1, 1], np.uint16), **args)
    with pytest.raises(JaxCompressValueError, match="strictly increase"):
        jk.CSRMatrix(indices=np.array([2, 1], np.uint16), **args)  # unsorted
    ok = jk.CSRMatrix(indices=np.array([0, 1], np.uint16), **args)
    assert ok.nnz == 2
    # rows may restart at any column
    two = jk.CSRMatrix(
        shape=(3, 2),
        indptr=np.array([0, 2, 4], np.int64),
        indices=np.array([1, 2, 0, 1], np.uint16),
        values=np.ones(4, F32),
    )
    assert two.nnz == 4


def test_bsr_with_a_duplicate_block_column_is_refused():
    b = jk.bsr_from_dense(np.ones((8, 2), F32), block=(1, 4))
    with pytest.raises(JaxCompressValueError, match="strictly increase"):
        jk.BSRMatrix(
            shape=(8, 2),
            block=(1, 4),
            indptr=np.array(b.indptr),
            indices=np.array([0, 0, 0, 1], np.int32),
            blocks=np.array(b.blocks),
        )


def test_nan_scales_are_refused_in_every_quantized_container():
    codes = np.array([[1, 0], [0, -2], [3, 0], [0, 0]], np.int8)
    nan2 = np.array([np.nan, 1], F32)
    with pytest.raises(JaxCompressValueError, match="scales must be finite"):
        jk.csr_from_quantized(codes, nan2)
    with pytest.raises(JaxCompressValueError, match="scales must be finite"):
        jk.nm_from_quantized(codes, nan2, n=2)
    p = jk.pack_weight(codes, np.ones(2, F32), bits=4)
    with pytest.raises(JaxCompressValueError, match="scales must be finite"):
        jk.PackedWeight(
            shape=p.shape,
            bits=4,
            group_size=None,
            symmetric=True,
            data=np.array(p.data),
            scales=np.full_like(p.scales, np.inf),
            zero_points=np.array(p.zero_points),
        )


def test_int8_weight_col_sums_are_verified():
    codes = np.array([[1, -2], [3, 4], [5, 0]], np.int8)
    good = jk.int8_weight(codes)
    np.testing.assert_array_equal(good.col_sums, [9, 2])
    x = np.array([[1, 2, 3]], np.int8)
    # with x_zero_point != 0 the kernel uses col_sums: a wrong one would give a wrong answer
    np.testing.assert_array_equal(
        jk.qmatmul_int8(x, good, x_zero_point=5), (x.astype(np.int32) - 5) @ codes
    )
    with pytest.raises(JaxCompressValueError, match="col_sums must equal"):
        jk.Int8Weight(shape=(3, 2), data=np.array(good.data), col_sums=np.array([9, 3], np.int32))


def test_nm_positions_validator_refuses_duplicates():
    from jaxcompress_kernels._validate import nm_positions_error

    assert nm_positions_error(np.array([[0, 2], [1, 3]]), 4) is None
    assert "distinct" in nm_positions_error(np.array([[0, 2], [3, 3]]), 4)
    assert "increase" in nm_positions_error(np.array([[2, 0]]), 4, increasing=True)
    assert nm_positions_error(np.array([[2, 0]]), 4) is None  # order is free in the artifact
    assert "in [0, m=4)" in nm_positions_error(np.array([[0, 4]]), 4)


def test_construction_copies_once_and_only_once():
    c = _containers()[0]
    again = jk.CSRMatrix(shape=c.shape, indptr=c.indptr, indices=c.indices, values=c.values)
    assert again.indices is c.indices  # already an immutable copy: shared, not copied again
    w, indptr, indices, values = _csr_parts()
    fresh = jk.CSRMatrix(shape=w.shape, indptr=indptr, indices=indices, values=values)
    assert not np.shares_memory(fresh.indices, indices)


# ----------------------------------------------------------------------------------------------
# property test: arbitrary constructions and mutation attempts never crash the process


_MUT = st.sampled_from(["none", "edit", "writeable"])


def _rng(draw):
    # bulk contents come from a drawn seed (drawing thousands of elements one by one is slow);
    # hypothesis explores the structure: kinds, sizes, flaws, mutations
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _x(draw, rng):
    return rng.uniform(-4, 4, (draw(st.integers(1, 5)), 16)).astype(F32).tolist()


def _spec(values, dtype):
    a = np.asarray(values)
    return {"dtype": dtype, "shape": list(a.shape), "data": a.reshape(-1).tolist()}


@st.composite
def _dense_case(draw):
    kind = draw(st.sampled_from(["csr", "csr8", "bsr", "nm", "int8", "packed"]))
    k = 4 * draw(st.integers(1, 4))
    n = draw(st.integers(1, 9))
    rng = _rng(draw)
    w = rng.choice(np.array([0.0, 0.0, 0.5, -1.0, 1.5, -0.25], F32), (k, n)).tolist()
    return {"kind": kind, "source": "dense", "w": w, "x": _x(draw, rng), "mutation": draw(_MUT)}


@st.composite
def _csr_like(draw, rng, k, rows):
    """(indptr, indices): usually a valid CSR structure, else garbage (duplicates, unsorted,
    out of range, bad indptr, wrong length)."""
    counts = rng.integers(0, min(3, k) + 1, rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).tolist()
    indices = [int(v) for c in counts for v in np.sort(rng.choice(k, c, replace=False))]
    flaw = draw(st.sampled_from(["none", "none", "indptr", "indices", "duplicate", "length"]))
    if flaw == "indptr":
        indptr = rng.integers(-2, 12, rows + 1).tolist()
    elif flaw == "indices":
        indices = rng.integers(-2, k + 3, len(indices)).tolist()
    elif flaw == "duplicate" and len(indices) >= 2:
        indptr = [0] * rows + [len(indices)]  # one row holding everything
        indices = sorted(indices)
        indices[1] = indices[0]
    elif flaw == "length":
        indptr = indptr + [indptr[-1]]
    return indptr, indices


@st.composite
def _raw_case(draw):
    kind = draw(st.sampled_from(["csr", "bsr", "nm", "int8"]))
    rng = _rng(draw)
    case = {"kind": kind, "source": "raw", "x": _x(draw, rng), "mutation": draw(_MUT)}
    i64 = st.sampled_from(["int64", "int64", "int64", "int32"])
    extra = {}
    if kind == "csr":
        k, n = draw(st.integers(1, 16)), draw(st.integers(1, 6))
        indptr, indices = draw(_csr_like(rng, k, n))
        quant = draw(st.booleans())
        nnz = len(indices)
        fields = {
            "indptr": _spec(indptr, draw(i64)),
            "indices": _spec(
                indices, draw(st.sampled_from(["uint16", "uint16", "int32", "int64"]))
            ),
            "values": _spec(rng.integers(-127, 128, nnz), "int8")
            if quant
            else _spec(rng.uniform(-8, 8, nnz), "float32"),
        }
        if quant:
            fields["scales"] = _spec(rng.choice([0.5, 1.0, 1.0, np.nan], n), "float32")
    elif kind == "bsr":
        k, n = 4 * draw(st.integers(1, 4)), draw(st.integers(1, 6))
        indptr, indices = draw(_csr_like(rng, k // 4, n))
        fields = {
            "indptr": _spec(indptr, draw(i64)),
            "indices": _spec(indices, draw(st.sampled_from(["int32", "int32", "int64"]))),
            "blocks": _spec(rng.uniform(-2, 2, (len(indices), 1, 4)), "float32"),
        }
        extra = {"block": [1, 4]}
    elif kind == "nm":
        k, n = 4 * draw(st.integers(0, 4)), draw(st.integers(0, 20))
        nk = draw(st.sampled_from([1, 2]))
        t, s = -(-n // 16), -(-k // 16) * 16 // 4 * nk
        fields = {"positions": _spec(rng.integers(0, 256, (t, s // 4, 16)), "uint8")}
        quant = draw(st.booleans())
        if quant:
            fields["values"] = _spec(rng.integers(0, 256, (t, s // 2, 16)), "uint8")
            fields["scales"] = _spec(rng.uniform(-2, 2, t * 16), "float32")
        else:
            fields["values"] = _spec(rng.uniform(-2, 2, (t, s, 16)), "float32")
        extra = {"n": nk, "bits": 4 if quant else None}
    else:  # int8
        k, n = draw(st.integers(0, 16)), draw(st.integers(0, 4))
        d = rng.integers(-128, 128, (n, 256)) * (np.arange(256) < k)
        if n and draw(st.booleans()):
            d[-1, -1] = 5  # a nonzero in the padding: the kernel must not read it
        sums = d[:, :k].sum(1) + draw(st.sampled_from([0, 0, 1]))
        fields = {
            "data": _spec(d, "int8"),
            "col_sums": _spec(sums, draw(st.sampled_from(["int32", "int32", "int64"]))),
        }
    case.update(shape=[k, n], fields=fields, extra=extra)
    return case


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.one_of(_dense_case(), _raw_case()), min_size=20, max_size=40))
def test_no_construction_or_mutation_crashes_a_kernel(cases):
    r = subprocess.run(
        [sys.executable, PROBE],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=300,
    )
    # a negative status is a signal (SIGSEGV = -11): the process crashed
    assert r.returncode == 0, f"status {r.returncode}: {r.stderr[-3000:]}"
