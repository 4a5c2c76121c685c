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

__all__ = ["read_idx", "write_idx", "download_idx", "IDX_FILES", "MIRRORS", "CHECKSUMS"]

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

# The MD5 sums the distributors publish for the ``.gz`` files (Fashion-MNIST: the Zalando
# repository's README; MNIST: the files of the cvdf mirror, as the common loaders check them).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
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


def _digest_ok(payload: bytes, expected: str) -> tuple[bool, str]:
    algo, _, want = expected.partition(":")
    if algo not in ("md5", "sha256") or not want:
        raise DataError(f"checksum {expected!r} must be 'md5:<hex>' or 'sha256:<hex>'")
    got = hashlib.new(algo, payload, usedforsecurity=False).hexdigest()
    return got == want.lower(), f"{algo}:{got}"


def _check_idx_payload(fname: str, payload: bytes) -> None:
    """Refuses a payload that is not a gzip of a well-formed IDX file (header and length)."""
    try:
        raw = gzip.decompress(payload)
    except (OSError, EOFError) as e:
        raise DataError(f"downloaded {fname} is not a valid gzip file ({e})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != _UBYTE:
        raise DataError(f"downloaded {fname} is not an unsigned-byte IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"downloaded {fname} has a truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if len(raw) != 4 + 4 * ndim + int(np.prod(shape, dtype=np.int64)):
        raise DataError(f"downloaded {fname} does not hold the {shape} bytes its header says")


def download_idx(
    name: str,
    data_dir: str | os.PathLike,
    *,
    mirror: str | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = 60.0,
    log=None,
) -> Path:
    """Download the four ``.gz`` IDX files of ``name`` ("mnist" or "fashion_mnist") into ``data_dir``.

    Each file is checked against its published digest (`CHECKSUMS`: the MD5 sums the datasets'
    distributors publish for these exact ``.gz`` files) and against the IDX format (gzip, header,
    length) before it is renamed into place; a failed or interrupted download leaves no file
    behind. A file already present is kept when its digest matches and downloaded again when not.
    Needs network access (``jaxcompress data download`` is the command-line form).

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: the folder to fill (created if missing).
      mirror: base URL ending in ``/`` (default `MIRRORS[name]`); the digests do not change.
      checksums: ``{file name: "md5:<hex>" | "sha256:<hex>"}`` replacing `CHECKSUMS[name]`.
      timeout: seconds per request.
      log: ``log(message)`` called once per file (default: silent).

    Returns:
      ``data_dir`` as a ``Path``.

    Raises:
      DataError: unknown dataset, a digest mismatch or a malformed file (the file is not kept).
      OSError: the mirror cannot be reached (``urllib.error.URLError`` is an ``OSError``).
    """
    if name not in MIRRORS:
        raise DataError(f"dataset {name!r} has no download mirror; known: {sorted(MIRRORS)}")
    base = mirror or MIRRORS[name]
    if not base.endswith("/"):
        base += "/"
    sums = dict(CHECKSUMS[name]) if checksums is None else dict(checksums)
    data_dir = Path(data_dir)
    for stem in IDX_FILES.values():
        fname = stem + ".gz"
        dest = data_dir / fname
        expected = sums.get(fname)
        if expected is None:
            raise DataError(f"no checksum for {fname}: refusing to download it unverified")
        if dest.exists():
            if _digest_ok(dest.read_bytes(), expected)[0]:
                if log:
                    log(f"{dest}: present, checksum ok")
                continue
            if log:
                log(f"{dest}: present but its checksum does not match; downloading again")
        url = base + fname
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (https/http)
            payload = r.read()
        ok, got = _digest_ok(payload, expected)
        if not ok:
            raise DataError(f"downloaded {url} has {got}, expected {expected}; nothing written")
        _check_idx_payload(fname, payload)
        atomic_write(dest, payload)
        if log:
            log(f"{dest}: downloaded ({len(payload)} bytes, {expected.split(':')[0]} verified)")
    return data_dir
