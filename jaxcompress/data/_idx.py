"""IDX files (the MNIST / Fashion-MNIST format): a validating reader, a writer, and a downloader.

IDX layout (LeCun et al.): 2 zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in C order. Images are
``idx3`` (``n, 28, 28``; magic 0x00000803), labels ``idx1`` (``n``; magic 0x00000801).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

from jaxcompress._core import DataError, atomic_write

__all__ = ["read_idx", "write_idx", "download_idx", "IDX_FILES", "MIRRORS"]

# Only unsigned bytes are used by (Fashion-)MNIST; other IDX types are refused explicitly.
_UBYTE = 0x08

# File names of each split, in the layout of the original distribution.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Public mirrors for users who are online (never used by the tests).
MIRRORS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


def _open(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"IDX file {path} is a damaged or truncated gzip stream: {e}") from None
    return raw


def read_idx(path: str | os.PathLike, *, expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a ``uint8`` array, validating everything.

    Args:
      path: the file.
      expect_ndim: if given, the number of dimensions the file must declare (3 for images, 1 for
        labels).

    Returns:
      ``uint8`` array of the declared shape.

    Raises:
      DataError: the file is missing or unreadable, its magic number or data type is wrong, it
        declares another number of dimensions than ``expect_ndim``, or its length does not match
        the declared shape (truncated or with trailing bytes). The message names the file.
    """
    path = Path(path)
    data = _open(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(data)} bytes, no header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"IDX file {path} has a bad magic number {data[:4].hex()} (not IDX)")
    if dtype_code != _UBYTE:
        raise DataError(
            f"IDX file {path} has data type 0x{dtype_code:02x}; only unsigned bytes (0x08) are "
            "supported"
        )
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(
            f"IDX file {path} declares {ndim} dimensions, expected {expect_ndim} "
            f"({'images' if expect_ndim == 3 else 'labels'}); is it the wrong file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) if ndim else 1
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: header shape {shape} needs {expected} data bytes, "
            f"found {got}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write a ``uint8`` array as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Written atomically (temporary file + rename). Used by tests to make tiny datasets.
    """
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise DataError(f"write_idx needs a uint8 array, got {arr.dtype}")
    header = struct.pack(">HBB", 0, _UBYTE, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    atomic_write(path, payload)
    return path


def download_idx(
    name: str,
    data_dir: str | os.PathLike,
    *,
    mirror: str | None = None,
    sha256: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the four ``.gz`` IDX files of ``name`` ("mnist" or "fashion_mnist") into ``data_dir``.

    Files already present are kept. Each download goes to a temporary file and is renamed into
    place only when complete (and, if ``sha256`` maps file names to digests, verified). Needs
    network access; the tests never call it.

    Returns:
      ``data_dir`` as a ``Path``.
    """
    if name not in MIRRORS:
        raise DataError(f"dataset {name!r} has no download mirror; known: {sorted(MIRRORS)}")
    base = mirror or MIRRORS[name]
    data_dir = Path(data_dir)
    for stem in IDX_FILES.values():
        fname = stem + ".gz"
        dest = data_dir / fname
        if dest.exists():
            continue
        with urllib.request.urlopen(base + fname, timeout=timeout) as r:  # noqa: S310 (https/http)
            payload = r.read()
        if sha256 and fname in sha256:
            digest = hashlib.sha256(payload).hexdigest()
            if digest != sha256[fname]:
                raise DataError(f"downloaded {fname} has sha256 {digest}, expected {sha256[fname]}")
        atomic_write(dest, payload)
    return data_dir
