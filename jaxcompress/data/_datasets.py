"""Datasets: real (Fashion-)MNIST from IDX files and MNIST-1D generated offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxcompress._core import DataError, JaxCompressValueError, atomic_write
from jaxcompress.data._idx import IDX_FILES, read_idx

__all__ = ["Dataset", "DATASETS", "load_dataset", "load_idx_dataset", "load_mnist1d", "cache_dir"]

DATASETS = ("mnist", "fashion_mnist", "mnist1d")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split held in NumPy.

    Attributes:
      name: dataset name.
      x_train: ``(n_train, *shape)`` float32; images ``(n, 28, 28, 1)`` in [0, 1], MNIST-1D
        ``(n, 40, 1)``.
      y_train: ``(n_train,)`` int32 labels in ``[0, num_classes)``.
      x_test: ``(n_test, *shape)`` float32.
      y_test: ``(n_test,)`` int32.
      num_classes: number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(28, 28, 1)``."""
        return tuple(self.x_train.shape[1:])


def cache_dir() -> Path:
    """The user cache directory: ``$JAXCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/jaxcompress``,
    else ``~/.cache/jaxcompress``."""
    if os.environ.get("JAXCOMPRESS_CACHE"):
        return Path(os.environ["JAXCOMPRESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxcompress"


def _find(data_dir: Path, stem: str, name: str) -> Path:
    for cand in (data_dir / (stem + ".gz"), data_dir / stem):
        if cand.exists():
            return cand
    raise DataError(
        f"IDX file {stem}[.gz] not found in {data_dir} (fetch the files once with "
        f"`jaxcompress data download {name} --to {data_dir}`)"
    )


def load_idx_dataset(name: str, data_dir: str | os.PathLike) -> Dataset:
    """Load (Fashion-)MNIST from the four IDX files in ``data_dir`` (``.gz`` or raw).

    Validates magic numbers, dimensions, lengths, that images and labels agree in count, that
    images are 28x28 and that labels are in 0..9.

    Raises:
      DataError: a file is missing, truncated, malformed or mislabelled (message names the file).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data_dir {str(data_dir)!r} is not a directory (fetch the files once with "
            f"`jaxcompress data download {name} --to {data_dir}`)"
        )
    arrays = {}
    for split in ("train", "test"):
        ip = _find(data_dir, IDX_FILES[f"{split}_images"], name)
        lp = _find(data_dir, IDX_FILES[f"{split}_labels"], name)
        images = read_idx(ip, expect_ndim=3)
        labels = read_idx(lp, expect_ndim=1)
        if images.shape[1:] != (28, 28):
            raise DataError(f"IDX file {ip} holds {images.shape[1:]} images, expected 28x28")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{ip} has {images.shape[0]} images but {lp} has {labels.shape[0]} labels"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"IDX file {lp} has label {int(labels.max())}; labels must be 0..9")
        arrays[f"x_{split}"] = (images.astype(np.float32) / 255.0)[..., None]
        arrays[f"y_{split}"] = labels.astype(np.int32)
    return Dataset(name=name, num_classes=10, **arrays)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def load_mnist1d(
    *, num_samples: int = 5000, seed: int = 42, cache: str | os.PathLike | None = None
) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package and cached.

    The dataset is generated from the package's built-in templates with its default arguments
    (``num_samples`` and ``seed`` overridable; 80/20 train/test split) and never downloaded. The
    result is cached as ``.npz`` with a sha256 of its arrays; a cache file that fails
    verification is regenerated.

    Returns:
      A :class:`Dataset` with ``x (n, 40, 1)`` float32 and int32 labels.
    """
    from mnist1d import data as m1d

    if num_samples < 10:
        raise JaxCompressValueError(f"{num_samples=} must be >= 10")
    cache = Path(cache) if cache is not None else cache_dir()
    path = cache / f"mnist1d_n{num_samples}_seed{seed}.npz"
    keys = ("x", "y", "x_test", "y_test")
    if path.exists():
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in keys}
                stored = str(z["sha256"])
            if _digest(arrays) == stored:
                return _mnist1d_dataset(arrays)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # unreadable or stale cache: regenerate below
    args = m1d.get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    state = np.random.get_state()  # noqa: NPY002 (mnist1d seeds the legacy global RNG)
    try:
        raw = m1d.make_dataset(args)  # seeds NumPy's global RNG; restored below
    finally:
        np.random.set_state(state)  # noqa: NPY002
    arrays = {
        "x": raw["x"].astype(np.float32),
        "y": raw["y"].astype(np.int32),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int32),
    }
    try:
        _atomic_savez(path, sha256=np.array(_digest(arrays)), **arrays)
    except OSError:
        pass  # a read-only cache is not an error: the data is still returned
    return _mnist1d_dataset(arrays)


def _mnist1d_dataset(a: dict[str, np.ndarray]) -> Dataset:
    return Dataset(
        name="mnist1d",
        x_train=a["x"][..., None],
        y_train=a["y"],
        x_test=a["x_test"][..., None],
        y_test=a["y_test"],
        num_classes=10,
    )


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"`` (IDX files from ``data_dir``), or ``"mnist1d"``
        (generated offline, cached in :func:`cache_dir`).
      data_dir: folder holding the IDX files; required for (Fashion-)MNIST.

    Returns:
      A :class:`Dataset`.

    Raises:
      JaxCompressValueError: unknown ``name``, or ``data_dir`` missing for an IDX dataset.
      DataError: missing, truncated or malformed files.

    Example:
      >>> ds = load_dataset("mnist1d")
      >>> ds.x_train.shape
      (4000, 40, 1)
    """
    if name not in DATASETS:
        raise JaxCompressValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name == "mnist1d":
        return load_mnist1d()
    if data_dir is None:
        raise JaxCompressValueError(
            f"dataset {name!r} is read from IDX files: pass data_dir= (fetch them "
            "once with `jaxcompress data download NAME --to DIR` or jaxcompress.data.download_idx)"
        )
    return load_idx_dataset(name, data_dir)


def describe(ds: Dataset) -> str:
    """A one-line JSON summary of a dataset (shapes and class counts)."""
    return json.dumps(
        {
            "name": ds.name,
            "train": list(ds.x_train.shape),
            "test": list(ds.x_test.shape),
            "classes": ds.num_classes,
        }
    )
