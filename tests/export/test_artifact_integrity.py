"""A corrupted artifact is refused (ArtifactError) and never executed; exports are atomic; the
runtime imports and runs in a process without JAX."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import nnx

from jaxcompress.export import save
from jaxcompress.models import MLP, functional
from jaxcompress.quantization import quantize_params
from jaxcompress_kernels import ArtifactError, artifact, runtime


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    apply_fn, params = functional(MLP(8, (16,), 3, rngs=nnx.Rngs(0)))
    params = quantize_params(params, bits=4, group_size=8, where=r"kernel")
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("integrity") / "mlp.jcx"
    save(path, apply_fn, params, x)
    return apply_fn, params, x, path


def _split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


def _rewrite_manifest(data: bytes, edit, fix_sha=True) -> bytes:
    header, body = _split(data)
    manifest = json.loads(header["__metadata__"]["manifest"])
    edit(manifest)
    text = json.dumps(manifest)
    header["__metadata__"]["manifest"] = text
    if fix_sha:
        header["__metadata__"]["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return _join(header, body)


@pytest.fixture
def never_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime.Runtime, "_exec", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(runtime.Runtime, "__init__", lambda *a, **k: calls.append("init") or None)
    return calls


def _refused(tmp_path, data: bytes, match: str, calls):
    p = tmp_path / "bad.jcx"
    p.write_bytes(data)
    with pytest.raises(ArtifactError, match=match):
        runtime.load(p)
    assert calls == []  # nothing was constructed or executed


def test_good_artifact_loads_and_is_plain_safetensors(small):
    from safetensors.numpy import load_file

    _, _, x, path = small
    art = artifact.load(path)
    np.testing.assert_array_equal(art.sample_input, x)
    parts = load_file(str(path))  # the reference safetensors reader agrees on every part
    assert set(parts) == set(art.manifest["parts"])
    assert runtime.Runtime(art).self_check().ok


def test_flipped_byte_in_a_tensor_is_refused(small, tmp_path, never_runs):
    data = bytearray(small[3].read_bytes())
    header, body = _split(bytes(data))
    b, _ = next(e["data_offsets"] for k, e in header.items() if k.endswith(":codes"))
    pos = len(data) - len(body) + b
    data[pos] ^= 0x10
    _refused(tmp_path, bytes(data), "sha256 mismatch in part", never_runs)


def test_truncated_file_is_refused(small, tmp_path, never_runs):
    data = small[3].read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100, 9, 3, 0):
        _refused(tmp_path, data[:cut], "refused", never_runs)


def test_edited_header_is_refused(small, tmp_path, never_runs):
    data = small[3].read_bytes()

    def scale_shape(m):
        m["graph"]["nodes"][0]["op"] = "exp"

    # edited without updating the checksum
    _refused(
        tmp_path,
        _rewrite_manifest(data, scale_shape, fix_sha=False),
        "manifest sha256 mismatch",
        never_runs,
    )
    # edited consistently but pointing a part at other bytes
    header, body = _split(data)
    name = next(k for k in header if k.endswith(":scales"))
    a, b = header[name]["data_offsets"]
    header[name]["data_offsets"] = [a + 4, b + 4]
    _refused(tmp_path, _join(header, body), "overlap|outside|sha256", never_runs)

    # a tensor's shape edited (with a valid manifest checksum)
    def bad_shape(m):
        t = next(t for t in m["tensors"].values() if t["encoding"] == "packed")
        t["shape"] = [t["shape"][0] * 2, t["shape"][1]]

    _refused(tmp_path, _rewrite_manifest(data, bad_shape), "tensor", never_runs)

    # an op the runtime does not know
    def bad_op(m):
        m["graph"]["nodes"][0]["op"] = "system"

    _refused(tmp_path, _rewrite_manifest(data, bad_op), "unknown op", never_runs)


def test_unknown_version_is_refused(small, tmp_path, never_runs):
    data = small[3].read_bytes()
    header, body = _split(data)
    header["__metadata__"]["format_version"] = "99"
    _refused(tmp_path, _join(header, body), "unknown format_version", never_runs)

    def bump(m):
        m["format_version"] = 99

    _refused(tmp_path, _rewrite_manifest(data, bump), "format_version", never_runs)

    def disagree(m):  # a readable version, but not the one the header states
        m["format_version"] = 1

    _refused(tmp_path, _rewrite_manifest(data, disagree), "format_version", never_runs)


def test_huge_header_length_is_refused_without_allocating(small, tmp_path, never_runs):
    data = small[3].read_bytes()
    _refused(tmp_path, struct.pack("<Q", 1 << 62) + data[8:], "header length", never_runs)


def test_not_an_artifact(tmp_path, never_runs):
    from safetensors.numpy import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(p))
    _refused(tmp_path, p.read_bytes(), "__metadata__|format", never_runs)
    with pytest.raises(ArtifactError, match="cannot open"):
        artifact.load(tmp_path / "missing.jcx")


def test_export_is_atomic(small, tmp_path):
    apply_fn, params, x, good = small
    path = tmp_path / "model.jcx"
    path.write_bytes(good.read_bytes())
    before = path.read_bytes()
    # a process killed in the middle of writing the new file (after some bytes hit the disk)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from flax import nnx
        from jaxcompress.export import save
        from jaxcompress.models import MLP, functional
        apply_fn, params = functional(MLP(8, (16,), 3, rngs=nnx.Rngs(1)))
        real_fsync = os.fsync
        def die(fd):
            os._exit(9)   # killed after writing, before the rename
        os.fsync = die
        save({str(path)!r}, apply_fn, params, np.ones((1, 8), np.float32))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert r.returncode == 9, r.stderr.decode()[-2000:]
    assert path.read_bytes() == before  # the earlier artifact is intact
    assert runtime.load(path).self_check().ok
    # a killed process cannot clean up: at most its hidden temporary file is left
    left = sorted(os.listdir(tmp_path))
    assert left[-1] == "model.jcx" and all(f.startswith(".model.jcx.") for f in left[:-1])
    # an exception during the write leaves no temporary file behind
    import jaxcompress.export._artifact as A

    def boom(*a, **k):
        raise OSError("disk full")

    orig = A.os.replace
    A.os.replace = boom
    try:
        with pytest.raises(OSError, match="disk full"):
            save(path, apply_fn, params, x)
    finally:
        A.os.replace = orig
    assert path.read_bytes() == before
    # ... and that save removed the temporary the killed process had left (its pid is gone)
    assert sorted(os.listdir(tmp_path)) == ["model.jcx"]


def test_runtime_runs_without_jax(small, tmp_path):
    _, _, x, path = small
    ref = runtime.load(path, autotune=False).run(x)
    np.save(tmp_path / "ref.npy", ref)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["jax"] = None          # any `import jax` now raises ImportError
        sys.modules["jaxlib"] = None
        sys.modules["flax"] = None
        import numpy as np
        from jaxcompress_kernels import runtime, artifact
        rt = runtime.load({str(path)!r}, num_threads=1, autotune=False)
        check = rt.self_check()
        y = rt.run(rt.artifact.sample_input)
        assert check.ok, check
        assert np.array_equal(y, np.load({str(tmp_path / "ref.npy")!r}))
        assert not any(m == "jax" or m.startswith(("jax.", "jaxlib", "flax"))
                       for m, v in sys.modules.items() if v is not None)
        print("OK", rt.plan)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert r.stdout.startswith(b"OK") and b"qmatmul" in r.stdout
