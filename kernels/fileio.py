"""Atomic file writes: the project's one implementation (the JAX side re-exports it).

`atomic_write` writes through a temporary file in the destination folder, fsyncs it, renames it
over the destination with ``os.replace`` and fsyncs the folder: a reader sees the old file or the
new one, never a torn one. The file gets the permissions an ordinary ``open(path, "w")`` would
give (``0o666`` minus the umask, usually ``0o644``), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time

__all__ = ["atomic_write", "stale_temporaries", "default_file_mode"]

_LEGACY_STALE_SECONDS = 3600.0


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` minus the process umask."""
    try:  # Linux: read the umask without changing it (os.umask is process-wide, not thread-safe)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the process exists
        return True
    return True


def stale_temporaries(path) -> list[str]:
    """Temporary files that writes of `path` killed mid-way left behind (full size, never renamed).

    `atomic_write` names its temporary ``.<name>.<pid>.<8 random>.tmp``: stale once process
    ``pid`` is gone from this machine. ``.<name>.<8 random>.tmp`` (earlier versions, no pid) is
    stale when untouched for an hour.
    """
    d, base = os.path.split(os.path.abspath(path))
    pat = re.compile(re.escape(f".{base}.") + r"(?:(\d+)\.)?[a-z0-9_]{8}\.tmp")
    out = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return out
    for e in entries:
        m = pat.fullmatch(e.name)
        if m is None or not e.is_file(follow_symlinks=False):
            continue
        try:
            if m.group(1) is not None:
                pid = int(m.group(1))
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = time.time() - e.stat().st_mtime > _LEGACY_STALE_SECONDS
        except OSError:
            continue
        if stale:
            out.append(e.path)
    return out


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes `data` to `path` atomically; creates the parent folder if needed.

    Args:
      path: the destination file.
      data: the bytes to write; a ``str`` is written as UTF-8.

    Temporaries that earlier, killed writes of `path` left are removed first
    (`stale_temporaries`). The new file's mode is `default_file_mode` (``0o644`` under the usual
    umask ``022``).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    for stale in stale_temporaries(path):
        try:
            os.unlink(stale)
        except OSError:
            pass
    prefix = f".{os.path.basename(path)}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), default_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
