"""Every weight encoding of the artifact format round-trips, JAX-free: encoder -> container ->
verifying reader -> decoder gives the logical tensor back, and the runtime computes x @ W."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels import artifact, runtime
from jaxcompress_kernels.format import encodings as enc
from jaxcompress_kernels.format.container import container_bytes, write_artifact

K, N = 64, 96


def _sparse(rng, density=0.2):
    w = rng.standard_normal((K, N)).astype(np.float32)
    return w * (rng.random((K, N)) < density)


def _two_of_four(rng):
    w = rng.standard_normal((K, N)).astype(np.float32)
    keep = np.zeros((K, N), bool)
    for g in range(K // 4):
        for c in range(N):
            keep[4 * g + rng.choice(4, 2, replace=False), c] = True
    return w * keep


def _cases():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((K, N)).astype(np.float32)
    yield "dense", enc.encode_dense(w), w
    ws = _sparse(rng)
    yield "csr", enc.encode_csr((K, N), ws, ws), ws
    codes = (rng.integers(-7, 8, (K, N)) * (rng.random((K, N)) < 0.2)).astype(np.int32)
    sc = rng.random(N).astype(np.float32) + 0.1
    e = enc.encode_csr((K, N), codes, codes.astype(np.int8), sc, bits=4, scheme="symmetric")
    yield "csr int8", e, (codes * sc).astype(np.float32)
    w24 = _two_of_four(rng)
    yield "nm f32", enc.encode_nm((K, N), w24, 2), w24
    c24 = np.rint(w24 * 3).clip(-7, 7).astype(np.int32)
    sc2 = np.full((1, N), 0.5, np.float32)
    e = enc.encode_nm((K, N), c24, 2, bits=4, scales=sc2, symmetric=True, group_size=None)
    e[0]["bits"] = 4
    yield "nm 4-bit", e, (c24 * 0.5).astype(np.float32)
    for bits in (2, 3, 4, 8):
        h = 1 << (bits - 1)
        c = rng.integers(-h + 1, h, (K, N)).astype(np.int32)
        s = (rng.random((K // 32, N)) + 0.1).astype(np.float32)
        e = enc.encode_packed((K, N), c, s, None, bits=bits, symmetric=True, group_size=32)
        yield f"packed {bits}-bit g32", e, (c * np.repeat(s, 32, axis=0)).astype(np.float32)
    u = rng.integers(0, 16, (K, N)).astype(np.int32)
    z = rng.integers(0, 16, (1, N)).astype(np.int32)
    s = (rng.random((1, N)) + 0.1).astype(np.float32)
    e = enc.encode_packed((K, N), u, s, z, bits=4, symmetric=False, group_size=None)
    yield "packed affine", e, ((u - z).astype(np.float32) * s).astype(np.float32)
    cb = rng.standard_normal(16).astype(np.float32)
    idx = rng.integers(0, 16, (K, N))
    yield "codebook", enc.encode_codebook((K, N), idx, cb, bits=4, axis=None), cb[idx]
    idx0 = idx * (rng.random((K, N)) < 0.2)
    cb0 = cb.copy()
    cb0[0] = 0.0
    e = enc.encode_csr_codebook((K, N), idx0, cb0, bits=4, axis=None)
    yield "csr_codebook", e, cb0[idx0]


def _artifact(path, name, encoded):
    entry, parts = encoded
    x = np.ones((1, K), np.float32)
    tensors = {name: {**entry, "parts": {r: f"{name}:{r}" for r in parts}}}
    stored = {f"{name}:{r}": a for r, a in parts.items()}
    stored.update({"s:in": x, "s:out": np.zeros((1, N), np.float32)})
    graph = {
        "inputs": ["input"],
        "outputs": ["y"],
        "nodes": [{"op": "linear", "in": ["input"], "out": "y", "weight": name}],
        "batch": "symbolic",
        "input_shapes": [[K]],
        "input_dtypes": ["float32"],
    }
    manifest = {"graph": graph, "tensors": tensors, "sample": {"input": "s:in", "output": "s:out"}}
    write_artifact(path, manifest, stored)
    return manifest, stored


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
@pytest.mark.parametrize("autotune", [False, True])
def test_encoding_round_trip(tmp_path, case, autotune):
    label, encoded, want = case
    path = tmp_path / "w.jcx"
    manifest, stored = _artifact(path, "w", encoded)
    art = artifact.load(path)
    got = artifact.decode_dense(art.tensors["w"])
    np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(1).standard_normal((3, K)).astype(np.float32)
    rt = runtime.load(path, num_threads=1, autotune=autotune)
    ref = (x.astype(np.float64) @ want.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(rt.run(x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # the container is deterministic: the same content gives the same bytes
    assert path.read_bytes() == container_bytes(manifest, stored)
