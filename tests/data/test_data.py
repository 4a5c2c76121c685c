import gzip

import numpy as np
import pytest

from jaxcompress._core import DataError, JaxCompressValueError
from jaxcompress.data import (
    IDX_FILES,
    load_dataset,
    load_idx_dataset,
    load_mnist1d,
    read_idx,
    write_idx,
)


def _write_split(d, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for k, a in arrays.items():
        write_idx(d / (IDX_FILES[k] + ext), a)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip_mnist(tmp_path, gz):
    arrays = _write_split(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train_images"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10
    assert ds.input_shape == (28, 28, 1)


def test_fashion_mnist_uses_the_same_reader(tmp_path):
    _write_split(tmp_path)
    assert load_dataset("fashion_mnist", data_dir=tmp_path).name == "fashion_mnist"


def test_unknown_dataset_name():
    with pytest.raises(JaxCompressValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_idx_dataset_needs_data_dir():
    with pytest.raises(JaxCompressValueError, match="data_dir"):
        load_dataset("mnist")


def test_missing_file_named(tmp_path):
    _write_split(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_idx_dataset("mnist", tmp_path)


def test_truncated_file_named(tmp_path):
    _write_split(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated"):
        load_idx_dataset("mnist", tmp_path)


def test_truncated_gzip_named(tmp_path):
    _write_split(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz"):
        load_idx_dataset("mnist", tmp_path)


def test_trailing_bytes(tmp_path):
    p = write_idx(tmp_path / "x.idx", np.zeros((2, 3), np.uint8))
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(p)


def test_bad_magic(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01" + b"\0\0\0\1" + b"\0")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_wrong_type_byte(tmp_path):
    p = tmp_path / "float"
    p.write_bytes(b"\0\0\x0d\x01" + b"\0\0\0\1" + b"\0\0\0\0")
    with pytest.raises(DataError, match="data type 0x0d"):
        read_idx(p)


def test_mislabelled_files_swapped(tmp_path):
    _write_split(tmp_path)
    imgs = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    a, b = imgs.read_bytes(), labels.read_bytes()
    imgs.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(DataError, match=r"declares 1 dimensions, expected 3"):
        load_idx_dataset("mnist", tmp_path)


def test_count_mismatch(tmp_path):
    _write_split(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="12 images but .* 11 labels"):
        load_idx_dataset("mnist", tmp_path)


def test_label_out_of_range(tmp_path):
    _write_split(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
    with pytest.raises(DataError, match="label 10"):
        load_idx_dataset("mnist", tmp_path)


def test_write_idx_is_valid_gzip(tmp_path):
    p = write_idx(tmp_path / "a.gz", np.arange(6, dtype=np.uint8).reshape(2, 3))
    raw = gzip.decompress(p.read_bytes())
    assert raw[:4] == b"\0\0\x08\x02"
    np.testing.assert_array_equal(read_idx(p), np.arange(6).reshape(2, 3))


def test_mnist1d_generated_offline_and_cached(tmp_path):
    ds = load_mnist1d(num_samples=100, cache=tmp_path)
    assert ds.x_train.shape == (80, 40, 1) and ds.x_test.shape == (20, 40, 1)
    assert ds.x_train.dtype == np.float32 and set(np.unique(ds.y_train)) <= set(range(10))
    files = list(tmp_path.glob("mnist1d_*.npz"))
    assert len(files) == 1
    again = load_mnist1d(num_samples=100, cache=tmp_path)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path):
    ds = load_mnist1d(num_samples=100, cache=tmp_path)
    (f,) = tmp_path.glob("mnist1d_*.npz")
    f.write_bytes(f.read_bytes()[:50])
    again = load_mnist1d(num_samples=100, cache=tmp_path)
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_mnist1d_leaves_numpy_global_rng_alone(tmp_path):
    np.random.seed(123)  # noqa: NPY002 (the legacy global RNG is what is tested)
    expected = np.random.rand()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002 (the legacy global RNG is what is tested)
    load_mnist1d(num_samples=100, cache=tmp_path)
    assert np.random.rand() == expected  # noqa: NPY002
