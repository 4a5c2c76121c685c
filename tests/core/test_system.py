"""The one atomic writer and the one machine description (`jaxcompress._core._system`)."""

import os
import stat

import pytest

from jaxcompress._core import atomic_write, cpu_model, default_file_mode, machine_info


def test_atomic_write_gives_ordinary_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "sub" / "out.json"
        atomic_write(p, "hello\n")  # str -> UTF-8, parent folder created
        assert p.read_text() == "hello\n"
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        assert default_file_mode() == 0o644
        os.umask(0o077)
        atomic_write(p, b"\x00\x01")
        assert p.read_bytes() == b"\x00\x01"
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["out.json"]  # no temporaries


def test_atomic_write_leaves_old_file_when_write_fails(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write(p, "old")

    with pytest.raises(TypeError):
        atomic_write(p, 12345)  # not bytes: fails before the rename
    assert p.read_text() == "old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt"]


def test_machine_info_fields():
    m = machine_info()
    assert set(m) == {"cpu", "cores", "usable_cores", "platform", "python"}
    assert m["cpu"] == cpu_model() and isinstance(m["cpu"], str) and m["cpu"]
    assert 1 <= m["usable_cores"] <= m["cores"]


def test_cpu_flags_is_a_set_of_words():
    from jaxcompress_kernels.machine import cpu_flags

    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    assert all(isinstance(f, str) and f and not any(c.isspace() for c in f) for f in flags)


def test_one_cpuinfo_reader():
    """Every machine description goes through ``jaxcompress_kernels.machine``."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    readers = [
        str(p.relative_to(root))
        for d in ("jaxcompress", "kernels", "benchmarks")
        for p in (root / d).rglob("*.py")
        if 'open("/proc/cpuinfo"' in p.read_text() or 'Path("/proc/cpuinfo")' in p.read_text()
    ]
    assert readers == ["kernels/machine.py"]
