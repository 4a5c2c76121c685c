"""The compressed-leaf protocol (`jaxcompress._core.CompressedArray`) shared by QuantizedArray and
ClusteredArray: no registry, so nothing depends on which package was imported first."""

import math
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress._core import (
    CompressedArray,
    JaxCompressTypeError,
    dequantize,
    dequantize_params,
    is_compressed,
)


def _run(code: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_clustering_alone_dequantizes_without_quantization():
    out = _run(
        """
        import sys
        import numpy as np
        from jaxcompress._core import dequantize_params
        from jaxcompress.clustering import cluster
        w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
        t = dequantize_params(cluster({"w": w}, bits=3))
        assert t["w"].shape == (8, 8) and len(np.unique(np.asarray(t["w"]))) <= 8
        assert "jaxcompress.quantization" not in sys.modules, "clustering imported quantization"
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_quantization_alone_does_not_import_clustering():
    out = _run(
        """
        import sys
        import numpy as np
        from jaxcompress.quantization import dequantize_params, quantize_params
        w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
        assert np.abs(np.asarray(dequantize_params(quantize_params({"w": w}, bits=8))["w"]) - w).max() < 0.01
        assert "jaxcompress.clustering" not in sys.modules, "quantization imported clustering"
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize("kind", ["int4 affine g8", "int8 per-channel", "clustered 3-bit"])
def test_protocol_sizes_match_size_report(kind):
    from jaxcompress.clustering import cluster, size_report
    from jaxcompress.quantization import quantize_params

    w = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    if kind == "int4 affine g8":
        leaf = quantize_params({"w": w}, bits=4, scheme="affine", group_size=8)["w"]
        side = 2 * 8 * 32 + 2 * 8 * 8  # (K // 8, C) float32 scales and int8 zero points
    elif kind == "int8 per-channel":
        leaf = quantize_params({"w": w}, bits=8)["w"]
        side = 8 * 32
    else:
        leaf = cluster({"w": w}, bits=3)["w"]
        side = 8 * 32
    assert isinstance(leaf, CompressedArray) and is_compressed(leaf)
    assert leaf.side_bits == side and leaf.code_bits == 128 * leaf.bits
    assert leaf.nbytes == math.ceil((128 * leaf.bits + side) / 8)
    rep = size_report({"w": leaf})
    assert rep.total_bits == leaf.storage_bits and rep.leaves[0].encoding == leaf.encoding
    np.testing.assert_array_equal(dequantize(leaf), leaf.dequantize())
    syms, alphabet = leaf.symbols()
    assert syms.min() >= 0 and syms.size == 128
    if alphabet is not None:
        assert syms.max() < alphabet


def test_dequantize_refuses_plain_arrays():
    with pytest.raises(JaxCompressTypeError, match="QuantizedArray or ClusteredArray"):
        dequantize(jnp.ones(3))
    tree = {"a": jnp.ones(3)}
    assert dequantize_params(tree)["a"] is tree["a"]
    assert not is_compressed(np.ones(2))
