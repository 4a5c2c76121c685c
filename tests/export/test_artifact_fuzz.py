"""Fuzzing the artifact loader: whatever the bytes or the header say, `load` (and building the
runtime from what it returns) only ever raises the project's error, never crashes, hangs or
allocates more than a bounded multiple of the file size."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import tracemalloc

import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxcompress.export import save
from jaxcompress.models import MLP, functional
from jaxcompress.quantization import quantize_params
from jaxcompress_kernels import ArtifactError, JaxCompressError, artifact, runtime

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    apply_fn, params = functional(MLP(8, (16,), 3, rngs=nnx.Rngs(0)))
    params = quantize_params(params, bits=4, group_size=8, where=r"out/kernel")
    path = tmp_path_factory.mktemp("fuzz") / "good.jcx"
    save(path, apply_fn, params, np.ones((2, 8), np.float32))
    # compile (or load from Numba's cache) the kernels the runtime uses before any case is
    # measured: a first compilation's allocations are not the loader's
    runtime.load(path).self_check()
    return path.read_bytes(), tmp_path_factory.mktemp("fuzzcases")


def _try_load(data: bytes, folder) -> None:
    p = folder / "case.jcx"
    p.write_bytes(data)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rt = runtime.load(p)
        rt.self_check()
    except JaxCompressError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 20  # no hang
    assert peak < 64 * len(data) + (16 << 20), peak  # bounded by the file size


@SETTINGS
@given(st.data())
def test_mutated_bytes(good, data):
    raw, folder = good
    b = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "header_len"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "overwrite":
        i = data.draw(st.integers(0, len(b) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        b[i : i + len(chunk)] = chunk
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        b[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    _try_load(bytes(b), folder)


def _split(raw: bytes):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@SETTINGS
@given(st.data())
def test_validly_signed_but_malicious_manifest(good, data):
    """The attacker recomputes the manifest checksum: structure checks must still hold."""
    raw, folder = good
    header, body = _split(raw)
    manifest = json.loads(header["__metadata__"]["manifest"])
    paths = [p for p in _paths(manifest) if p and p[0] != "parts"]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        target = manifest
        try:
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            pass
    text = json.dumps(manifest)
    header["__metadata__"]["manifest"] = text
    header["__metadata__"]["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    _try_load(_join(header, body), folder)


@SETTINGS
@given(
    header=st.dictionaries(st.text(max_size=10), JSON, max_size=5),
    body=st.binary(max_size=256),
    meta=st.booleans(),
)
def test_arbitrary_headers(good, header, body, meta):
    _, folder = good
    if meta:
        header["__metadata__"] = {
            "format": "jaxcompress-artifact",
            "format_version": "1",
            "manifest": json.dumps(header.get("m", {})),
            "manifest_sha256": "",
        }
    _try_load(_join(header, body), folder)


def test_loader_never_reads_past_a_lying_header(good, tmp_path):
    raw, _ = good
    header, body = _split(raw)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [1 << 40]
    header[name]["data_offsets"] = [0, 4 << 40]
    p = tmp_path / "lie.jcx"
    p.write_bytes(_join(header, body))
    with pytest.raises(ArtifactError, match="bad shape|outside the data"):
        artifact.load(p)
