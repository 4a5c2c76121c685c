"""Every bad input raises a clear JaxCompress error before any kernel runs; no JAX on the edge."""

import os
import subprocess
import sys

import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import JaxCompressTypeError, JaxCompressValueError

F32 = np.float32


def test_pack_bits_errors():
    with pytest.raises(JaxCompressValueError, match=r"bits=9 must be in 1\.\.8"):
        jk.pack_bits(np.zeros(3, np.uint8), 9)
    with pytest.raises(JaxCompressTypeError, match=r"codes\.dtype=int32 must be uint8"):
        jk.pack_bits(np.zeros(3, np.int32), 4)
    with pytest.raises(JaxCompressValueError, match=r"codes has codes in \[0, 16\]"):
        jk.pack_bits(np.array([0, 16], np.uint8), 4)
    with pytest.raises(JaxCompressValueError, match="codes must be C-contiguous"):
        jk.pack_bits(np.zeros(8, np.uint8)[::2], 4)
    with pytest.raises(JaxCompressValueError, match=r"codes\.ndim=2"):
        jk.pack_bits(np.zeros((2, 2), np.uint8), 4)
    with pytest.raises(JaxCompressTypeError, match="codes must be a numpy.ndarray"):
        jk.pack_bits([1, 2], 4)
    with pytest.raises(JaxCompressValueError, match=r"packed has 1 bytes but count=5"):
        jk.unpack_bits(np.zeros(1, np.uint8), 4, 5)
    with pytest.raises(JaxCompressValueError, match=r"count=-1 must be in 0\.\.inf"):
        jk.unpack_bits(np.zeros(1, np.uint8), 4, -1)
    with pytest.raises(JaxCompressTypeError, match=r"bits=True must be an int"):
        jk.pack_bits(np.zeros(1, np.uint8), True)


def test_matmulnbits_errors():
    codes = np.zeros((32, 2), np.uint8)
    with pytest.raises(JaxCompressValueError, match=r"bits=3 must be in \(2, 4, 8\)"):
        jk.to_matmulnbits(codes, np.ones((1, 2), F32), bits=3, block_size=32)
    with pytest.raises(JaxCompressValueError, match="block_size=24 must be a power of two"):
        jk.to_matmulnbits(codes, np.ones((2, 2), F32), bits=4, block_size=24)
    with pytest.raises(JaxCompressValueError, match=r"scales\.shape=\(2, 2\) must be \(1, 2\)"):
        jk.to_matmulnbits(codes, np.ones((2, 2), F32), bits=4, block_size=32)


def _pw(bits=4, k=64, n=3, gs=None):
    g = 1 if gs is None else k // gs
    return jk.pack_weight(np.zeros((k, n), np.int8), np.ones((g, n), F32), bits=bits, group_size=gs)


def test_pack_weight_errors():
    with pytest.raises(JaxCompressValueError, match=r"bits=5 must be in \(2, 3, 4, 8\)"):
        _pw(bits=5)
    with pytest.raises(
        JaxCompressValueError, match="group_size=24 must be a multiple of 8 that divides K=64"
    ):
        _pw(gs=24)
    with pytest.raises(JaxCompressValueError, match=r"scales\.shape=\(1, 3\) must be \(2, 3\)"):
        jk.pack_weight(np.zeros((64, 3), np.int8), np.ones(3, F32), bits=4, group_size=32)
    with pytest.raises(
        JaxCompressValueError,
        match=r"codes has codes in \[-9, -9\], outside the allowed range \[-8, 7\]",
    ):
        jk.pack_weight(np.full((4, 1), -9, np.int8), np.ones(1, F32), bits=4)
    with pytest.raises(JaxCompressValueError, match=r"zero_points has codes in \[16, 16\]"):
        jk.pack_weight(
            np.zeros((4, 1), np.uint8), np.ones(1, F32), np.array([16], np.uint8), bits=4
        )
    with pytest.raises(JaxCompressValueError, match="scales must be finite"):
        jk.pack_weight(np.zeros((4, 1), np.int8), np.array([np.nan], F32), bits=4)
    with pytest.raises(JaxCompressTypeError, match=r"scales\.dtype=float64 must be float32"):
        jk.pack_weight(np.zeros((4, 1), np.int8), np.ones(1), bits=4)
    with pytest.raises(JaxCompressTypeError, match="codes.dtype=float32 must be of kind 'iu'"):
        jk.pack_weight(np.zeros((4, 1), F32), np.ones(1, F32), bits=4)


def test_qmatmul_errors():
    w = _pw()
    with pytest.raises(JaxCompressValueError, match=r"x\.shape=\(1, 63\) must end in K=64"):
        jk.qmatmul(np.zeros((1, 63), F32), w)
    with pytest.raises(JaxCompressTypeError, match=r"x\.dtype=float64 must be float32"):
        jk.qmatmul(np.zeros((1, 64)), w)
    with pytest.raises(JaxCompressValueError, match="x must be C-contiguous"):
        jk.qmatmul(np.zeros((64, 2), F32).T, w)
    with pytest.raises(JaxCompressValueError, match=r"bias\.shape=\(4,\) must be \(3,\)"):
        jk.qmatmul(np.zeros((1, 64), F32), w, np.zeros(4, F32))
    with pytest.raises(JaxCompressTypeError, match="w must be a PackedWeight"):
        jk.qmatmul(np.zeros((1, 64), F32), np.zeros((64, 3), F32))
    with pytest.raises(JaxCompressValueError, match=r"x\.ndim=3"):
        jk.qmatmul(np.zeros((1, 1, 64), F32), w)


def test_container_invariants_are_checked():
    w = _pw()
    with pytest.raises(JaxCompressValueError, match=r"scales\.shape=\(3, 2\) must be \(3, 1\)"):
        jk.PackedWeight(
            shape=w.shape,
            bits=4,
            group_size=None,
            symmetric=True,
            data=np.asarray(w.data),
            scales=np.ones((3, 2), F32),
            zero_points=np.asarray(w.zero_points),
        )
    with pytest.raises(JaxCompressValueError, match=r"data\.shape=\(3, 31\) must be \(3, 32\)"):
        jk.PackedWeight(
            shape=w.shape,
            bits=4,
            group_size=None,
            symmetric=True,
            data=np.zeros((3, 31), np.uint8),
            scales=np.asarray(w.scales),
            zero_points=np.asarray(w.zero_points),
        )
    # the stored arrays are read-only views
    with pytest.raises(ValueError, match="read-only"):
        w.data[0, 0] = 1


def test_csr_errors():
    ok = dict(
        shape=(4, 2),
        indptr=np.array([0, 1, 2], np.int64),
        indices=np.array([0, 3], np.uint16),
        values=np.ones(2, F32),
    )
    jk.CSRMatrix(**ok)
    with pytest.raises(JaxCompressValueError, match="indptr must be non-decreasing"):
        jk.CSRMatrix(
            **{
                **ok,
                "indptr": np.array([0, 3, 2], np.int64),
                "indices": np.array([0, 1], np.uint16),
            }
        )
    with pytest.raises(
        JaxCompressValueError, match=r"indices must be in \[0, K=4\) \(got 0\.\.4\)"
    ):
        jk.CSRMatrix(**{**ok, "indices": np.array([0, 4], np.uint16)})
    with pytest.raises(
        JaxCompressValueError, match=r"indices must be in \[0, K=4\) \(got -1\.\.0\)"
    ):
        jk.CSRMatrix(**{**ok, "indices": np.array([0, -1], np.int32)})
    with pytest.raises(JaxCompressValueError, match="indptr must start at 0 and end at nnz=2"):
        jk.CSRMatrix(**{**ok, "indptr": np.array([0, 1, 1], np.int64)})
    with pytest.raises(JaxCompressTypeError, match=r"indptr\.dtype=int32 must be int64"):
        jk.CSRMatrix(**{**ok, "indptr": np.array([0, 1, 2], np.int32)})
    with pytest.raises(JaxCompressValueError, match=r"values\.shape=\(3,\) must be \(2,\)"):
        jk.CSRMatrix(**{**ok, "values": np.ones(3, F32)})
    with pytest.raises(JaxCompressValueError, match=r"scales\.shape=\(3,\) must be \(2,\)"):
        jk.CSRMatrix(**{**ok, "values": np.ones(2, np.int8), "scales": np.ones(3, F32)})
    c = jk.CSRMatrix(**ok)
    with pytest.raises(JaxCompressValueError, match=r"x\.shape=\(2, 5\) must end in K=4"):
        jk.spmm_csr(np.zeros((2, 5), F32), c)
    with pytest.raises(JaxCompressValueError, match="x must be C-contiguous"):
        jk.spmm_csr(np.zeros((2, 8), F32)[:, ::2], c)
    with pytest.raises(
        JaxCompressValueError, match=r"mask\.shape=\(1, 2\) must equal w\.shape=\(4, 2\)"
    ):
        jk.csr_from_dense(np.zeros((4, 2), F32), mask=np.zeros((1, 2), bool))


def test_nm_and_bsr_errors():
    d = np.ones((8, 2), F32)
    with pytest.raises(
        JaxCompressValueError, match="not 2:4 sparse: group k=0..3 of output channel 0 keeps 4"
    ):
        jk.nm_from_dense(d, n=2)
    with pytest.raises(JaxCompressValueError, match=r"K=6 must be a multiple of m=4"):
        jk.nm_from_dense(np.zeros((6, 2), F32), n=2)
    with pytest.raises(JaxCompressValueError, match=r"n=3 must be in 1\.\.2"):
        jk.nm_from_dense(np.zeros((8, 2), F32), n=3)
    with pytest.raises(JaxCompressValueError, match=r"codes has codes in \[9, 9\]"):
        jk.nm_from_quantized(np.full((8, 1), 9, np.int8), np.ones(1, F32), n=2)
    w = jk.nm_from_dense(np.zeros((8, 2), F32), n=2)
    with pytest.raises(JaxCompressTypeError, match=r"x\.dtype=int8 must be float32"):
        jk.spmm_nm(np.zeros((1, 8), np.int8), w)
    with pytest.raises(JaxCompressValueError, match=r"block=\(3, 4\) must divide"):
        jk.bsr_from_dense(np.zeros((8, 2), F32), block=(3, 4))
    b = jk.bsr_from_dense(np.ones((8, 2), F32), block=(1, 4))
    with pytest.raises(JaxCompressValueError, match=r"indices must be in \[0, K/c=2\)"):
        jk.BSRMatrix(
            shape=b.shape,
            block=b.block,
            indptr=np.asarray(b.indptr),
            indices=np.full_like(b.indices, 2),
            blocks=np.asarray(b.blocks),
        )
    with pytest.raises(JaxCompressValueError, match="indptr must be non-decreasing"):
        jk.BSRMatrix(
            shape=b.shape,
            block=b.block,
            indptr=np.array([0, 5, 4], np.int64),
            indices=np.asarray(b.indices),
            blocks=np.asarray(b.blocks),
        )


def test_int8_errors():
    w = jk.int8_weight(np.zeros((8, 2), np.int8))
    with pytest.raises(JaxCompressTypeError, match=r"x\.dtype=uint8 must be int8"):
        jk.qmatmul_int8(np.zeros((1, 8), np.uint8), w)
    with pytest.raises(JaxCompressValueError, match=r"x_zero_point=200 must be in -128\.\.127"):
        jk.qmatmul_int8(np.zeros((1, 8), np.int8), w, x_zero_point=200)
    with pytest.raises(JaxCompressTypeError, match=r"bias\.dtype=float32 must be int32"):
        jk.qmatmul_int8(np.zeros((1, 8), np.int8), w, np.zeros(2, F32))
    with pytest.raises(
        JaxCompressValueError, match=r"requant\.multiplier\.shape=\(3,\) must be \(2,\)"
    ):
        jk.qmatmul_int8(np.zeros((1, 8), np.int8), w, requant=jk.requantization(np.ones(3) * 0.1))
    with pytest.raises(
        JaxCompressValueError, match=r"real_multiplier must be finite and in \[0, 2\*\*30\)"
    ):
        jk.requantization(np.array([-1.0]))
    with pytest.raises(JaxCompressValueError, match=r"K=70000 must be in 0\.\.65536"):
        jk.int8_weight(np.zeros((70000, 1), np.int8))


def test_threads():
    n = jk.get_num_threads()
    jk.set_num_threads(1)
    assert jk.get_num_threads() == 1
    jk.set_num_threads(n)
    with pytest.raises(JaxCompressValueError, match=r"n=0 must be in 1\.\."):
        jk.set_num_threads(0)


def test_edge_package_never_imports_jax():
    """Every edge module imports (and runs) in a process where `import jax` fails."""
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['jaxlib'] = None; sys.modules['flax'] = None\n"
        "import pkgutil, importlib, numpy as np, jaxcompress_kernels as jk\n"
        "for m in pkgutil.iter_modules(jk.__path__):\n"
        "    importlib.import_module('jaxcompress_kernels.' + m.name)\n"
        "w = jk.pack_weight(np.ones((32, 2), np.int8), np.ones(2, np.float32), bits=4)\n"
        "print(jk.qmatmul(np.ones((1, 32), np.float32), w).tolist())\n"
        "try:\n    import jax\nexcept ImportError:\n    print('nojax')\n"
        "assert not any(k.split('.')[0] in ('jax', 'jaxlib', 'flax') and sys.modules[k] is not None"
        " for k in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[[32.0,", "32.0]]", "nojax"]


def test_nm_positions_must_increase_within_a_2_4_group():
    rng = np.random.default_rng(3)
    d = rng.standard_normal((16, 16)).astype(F32)
    d.reshape(4, 4, 16)[:, 2:, :] = 0  # keep positions 0 and 1 of every group
    w = jk.nm_from_dense(d, n=2)
    p = np.asarray(w.positions).copy()
    p ^= 0b0101  # swap-ish: first slot 1, second slot 0 for group 0 of each pair
    with pytest.raises(JaxCompressValueError, match="must strictly increase"):
        jk.NMSparse(shape=w.shape, n=2, m=4, positions=p, values=np.asarray(w.values))
    # one kept value at position 3: the unused slot sorts before it
    d1 = np.zeros((4, 1), F32)
    d1[3, 0] = 2.0
    w1 = jk.nm_from_dense(d1, n=2)
    np.testing.assert_array_equal(jk.to_dense(w1), d1)
    np.testing.assert_array_equal(jk.spmm_nm(np.arange(4, dtype=F32), w1), [6.0])
