"""Issue 16: crafted artifacts (checksums recomputed) with silently-wrong sparse structures are
refused; a two-output model exports and self-checks; saves are byte-identical and a killed save's
temporary is cleaned up by the next one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.export import save
from jaxcompress_kernels import ArtifactError, artifact, runtime
from jaxcompress_kernels.format.container import stale_temporaries
from jaxcompress_kernels.packing import pack_bits, unpack_bits


def _apply(p, x):
    return jnp.tanh(x @ p["w"] + p["b"])


def _params(w):
    return {"w": np.asarray(w, np.float32), "b": np.zeros(w.shape[1], np.float32)}


def _resign(src, dst, edit_parts, edit_manifest=None):
    """Rewrites an artifact with edited parts and recomputed checksums (what an attacker can do)."""
    from safetensors.numpy import load_file, save_file

    parts = load_file(str(src))
    with open(src, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    manifest = json.loads(meta["manifest"])
    edit_parts(parts)
    if edit_manifest is not None:
        edit_manifest(manifest)
    manifest["parts"] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in parts.items()}
    text = json.dumps(manifest, sort_keys=True)
    meta = dict(meta, manifest=text, manifest_sha256=hashlib.sha256(text.encode()).hexdigest())
    save_file(parts, str(dst), metadata=meta)
    return dst


def _sparse_artifact(tmp_path, w, name="m.jcx", **kw):
    x = np.linspace(-1, 1, 2 * w.shape[0], dtype=np.float32).reshape(2, -1)
    path = tmp_path / name
    save(path, _apply, _params(w), x, **kw)
    return path


def test_resigned_artifact_round_trips(tmp_path):
    # the crafting helper itself produces a loadable file when nothing is edited
    w = np.zeros((8, 3), np.float32)
    w[[0, 5], 1] = [1.0, 2.0]
    good = _sparse_artifact(tmp_path, w, nm=False)
    copy = _resign(good, tmp_path / "copy.jcx", lambda p: None)
    assert runtime.load(copy).self_check().ok


def test_csr_with_a_duplicate_column_is_refused(tmp_path):
    w = np.zeros((8, 3), np.float32)
    w[[0, 5], 1] = [1.0, 2.0]  # column 1 keeps rows 0 and 5
    good = _sparse_artifact(tmp_path, w, nm=False)
    assert artifact.load(good).tensors["w"].encoding == "csr"

    def dup(parts):
        ix = parts["w:indices"].copy()
        ix[1] = ix[0]  # the row now names column 0 twice
        parts["w:indices"] = ix

    bad = _resign(good, tmp_path / "dup.jcx", dup)
    with pytest.raises(ArtifactError, match="strictly increase"):
        artifact.load(bad)


def test_int8_csr_with_nan_scales_is_refused(tmp_path):
    from jaxcompress.quantization import quantize_params

    w = np.zeros((64, 4), np.float32)
    w[::9, :] = np.linspace(-1, 1, 8)[:, None]
    q = quantize_params(_params(w), bits=8, where="w")
    good = tmp_path / "q.jcx"
    save(good, _apply, q, np.ones((1, 64), np.float32), nm=False)
    e = artifact.load(good).tensors["w"]
    assert e.encoding == "csr" and "scales" in e.parts

    def nan(parts):
        s = parts["w:scales"].copy()
        s[2] = np.nan
        parts["w:scales"] = s

    with pytest.raises(ArtifactError, match="csr scales must be .* finite"):
        artifact.load(_resign(good, tmp_path / "nan.jcx", nan))


def test_nm_group_with_duplicate_positions_is_refused(tmp_path):
    w = np.zeros((8, 2), np.float32)
    w[[0, 2], 0] = [1.0, 2.0]  # group 0 of column 0 keeps positions 0 and 2
    w[[5, 7], 1] = [3.0, 4.0]
    good = _sparse_artifact(tmp_path, w)
    e = artifact.load(good).tensors["w"]
    assert e.encoding == "nm"

    def dup(parts):
        pos = unpack_bits(parts["w:positions"], 2, 8).copy()
        pos[1] = pos[0]  # both slots of the group point at one position: one value dropped
        parts["w:positions"] = pack_bits(pos, 2)

    with pytest.raises(ArtifactError, match="must be distinct"):
        artifact.load(_resign(good, tmp_path / "dup.jcx", dup))


def test_model_with_two_outputs_exports_and_self_checks(tmp_path):
    def two(p, x):
        h = x @ p["w"] + p["b"]
        return h, jnp.tanh(h)[:, :2]

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    path = tmp_path / "two.jcx"
    save(path, two, _params(w), x)
    rt = runtime.load(path)
    y0, y1 = rt.run(x)
    np.testing.assert_allclose(y0, x @ w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y1, np.tanh(x @ w)[:, :2], rtol=1e-6, atol=1e-6)
    assert rt.artifact.manifest["sample"]["output_shapes"] == [[2, 3], [2, 2]]
    check = rt.self_check()
    assert check.ok, check
    from jaxcompress._core import JaxCompressValueError
    from jaxcompress.export import cross_check

    with pytest.raises(JaxCompressValueError, match="this graph has 2"):
        cross_check(path, x)  # compares one output: a project error, not NumPy's ValueError


def test_same_model_gives_byte_identical_files(tmp_path):
    w = np.zeros((8, 3), np.float32)
    w[[0, 5], 1] = [1.0, 2.0]
    script = (
        "import sys, numpy as np, jax.numpy as jnp\n"
        "from jaxcompress.export import save\n"
        "w = np.zeros((8, 3), np.float32); w[[0, 5], 1] = [1.0, 2.0]\n"
        "p = {'w': w, 'b': np.zeros(3, np.float32)}\n"
        "save(sys.argv[1], lambda p, x: jnp.tanh(x @ p['w'] + p['b']), p, np.ones((2, 8), np.float32))\n"
    )
    # another process (other string hash seed) and this one, twice (safetensors' writer orders
    # metadata by a hash map seeded per map)
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "p.jcx")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONHASHSEED="123"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    for i in range(3):
        save(tmp_path / f"s{i}.jcx", _apply, _params(w), np.ones((2, 8), np.float32))
    files = [(tmp_path / f).read_bytes() for f in ("p.jcx", "s0.jcx", "s1.jcx", "s2.jcx")]
    assert all(f == files[0] for f in files[1:])
    n = int.from_bytes(files[0][:8], "little")
    meta = json.loads(files[0][8 : 8 + n])["__metadata__"]
    assert list(meta) == sorted(meta)


def test_a_killed_saves_temporary_is_removed_by_the_next_save(tmp_path):
    w = np.eye(4, 3, dtype=np.float32)
    target = tmp_path / "model.jcx"
    r = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(r.stdout)  # a process that has exited (and was reaped)
    stale = tmp_path / f".model.jcx.{dead}.abcd1234.tmp"
    stale.write_bytes(b"x" * 4096)  # what kill -9 during the write leaves
    live = tmp_path / f".model.jcx.{os.getppid()}.live5678.tmp"  # a writer still running
    live.write_bytes(b"y")
    legacy_old = tmp_path / ".model.jcx.old_1234.tmp"  # earlier naming, untouched for hours
    legacy_old.write_bytes(b"z")
    os.utime(legacy_old, (0, 0))
    legacy_new = tmp_path / ".model.jcx.new_1234.tmp"  # earlier naming, maybe being written
    legacy_new.write_bytes(b"z")
    other = tmp_path / f".other.jcx.{dead}.abcd1234.tmp"  # another target's: not ours to remove
    other.write_bytes(b"o")
    assert sorted(stale_temporaries(target)) == sorted([str(stale), str(legacy_old)])
    save(target, _apply, _params(w), np.ones((1, 4), np.float32))
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["model.jcx", live.name, legacy_new.name, other.name])
