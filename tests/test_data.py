"""Tests of gns_jax.data: each source on tiny files in the official layouts, split, cache, errors, augment."""

import gzip
import importlib.util
import pickle
import struct
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.data import (
    DataError,
    DataNotFoundError,
    ImageSplits,
    augment_for,
    load_image_dataset,
    normalize,
    random_crop_flip,
)
from gns_jax.data import images as images_module


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path, monkeypatch):
    """No test reads the real Debian folder or writes to the user's cache unless it says so."""
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("GNS_JAX_CACHE_DIR", str(tmp_path / "default-cache"))


# ----------------------------------------------------------------------------------------------------
# Writers of the official layouts


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_folder(folder: Path, num_train=20, num_test=6, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, num_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


def cifar_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """NHWC images → the official row layout: 1024 red, 1024 green, 1024 blue values per image."""
    return images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)


def make_cifar10_folder(folder: Path, per_batch=3, num_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": b"training batch", b"labels": labels, b"data": cifar_rows(images),
                 b"filenames": [b"x.png"] * per_batch}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, num_test).tolist()
    test = {b"batch_label": b"testing batch", b"labels": test_labels, b"data": cifar_rows(test_images)}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    return {"train_images": np.concatenate(train_images), "train_labels": np.array(train_labels),
            "test_images": test_images, "test_labels": np.array(test_labels)}


def make_cifar100_folder(folder: Path, num_train=12, num_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for part, count in (("train", num_train), ("test", num_test)):
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(20, 100, count).tolist()  # >= 20: cannot be mistaken for the coarse labels
        coarse = rng.integers(0, 20, count).tolist()
        record = {b"data": cifar_rows(images), b"fine_labels": fine, b"coarse_labels": coarse}
        (folder / part).write_bytes(pickle.dumps(record, protocol=2))
        result[f"{part}_images"], result[f"{part}_labels"] = images, np.array(fine)
    return result


def expected_split(train_images, train_labels, val_size, seed=0):
    permutation = np.random.default_rng(seed).permutation(len(train_labels))
    val, train = permutation[:val_size], permutation[val_size:]
    return train_images[train], train_labels[train], train_images[val], train_labels[val]


def check_splits(splits: ImageSplits, official: dict, val_size: int, image_shape, num_classes: int) -> None:
    train_images, train_labels, val_images, val_labels = expected_split(
        official["train_images"], official["train_labels"], val_size)
    for array in (splits.train_images, splits.val_images, splits.test_images):
        assert array.dtype == np.uint8 and array.shape[1:] == image_shape
    for array in (splits.train_labels, splits.val_labels, splits.test_labels):
        assert array.dtype == np.int32
    np.testing.assert_array_equal(splits.train_images, train_images)
    np.testing.assert_array_equal(splits.train_labels, train_labels)
    np.testing.assert_array_equal(splits.val_images, val_images)
    np.testing.assert_array_equal(splits.val_labels, val_labels)
    np.testing.assert_array_equal(splits.test_images, official["test_images"])
    np.testing.assert_array_equal(splits.test_labels, official["test_labels"])
    assert splits.num_classes == num_classes


def idx_official(arrays: dict) -> dict:
    return {"train_images": arrays["train-images-idx3-ubyte"][..., None],
            "train_labels": arrays["train-labels-idx1-ubyte"],
            "test_images": arrays["t10k-images-idx3-ubyte"][..., None],
            "test_labels": arrays["t10k-labels-idx1-ubyte"]}


# ----------------------------------------------------------------------------------------------------
# Sources


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_local_layout(tmp_path, name, gz):
    arrays = make_idx_folder(tmp_path / "files", gz=gz)
    splits = load_image_dataset(name, source="local", data_dir=tmp_path / "files",
                                cache_dir=tmp_path / "cache", val_size=5)
    check_splits(splits, idx_official(arrays), 5, (28, 28, 1), 10)
    assert splits.name == name
    assert splits.source == f"local:{tmp_path / 'files'}"
    assert (len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)) == (15, 5, 6)
    assert splits.test_images.flags.writeable


@pytest.mark.parametrize("name,subdir", [("fashion_mnist", "fashion-mnist"), ("mnist", "MNIST/raw")])
def test_idx_data_dir_may_be_the_parent(tmp_path, name, subdir):
    arrays = make_idx_folder(tmp_path / subdir)
    splits = load_image_dataset(name, data_dir=tmp_path, tfds_data_dir=tmp_path / "no-tfds",
                                cache_dir=tmp_path / "cache", val_size=4)
    check_splits(splits, idx_official(arrays), 4, (28, 28, 1), 10)
    assert splits.source == f"local:{tmp_path / subdir}"


@pytest.mark.parametrize("point_at_parent", [True, False])
def test_cifar10_local_layout(tmp_path, point_at_parent):
    official = make_cifar10_folder(tmp_path / "cifar-10-batches-py")
    data_dir = tmp_path if point_at_parent else tmp_path / "cifar-10-batches-py"
    splits = load_image_dataset("cifar10", source="local", data_dir=data_dir, cache_dir=tmp_path / "cache",
                                val_size=4)
    check_splits(splits, official, 4, (32, 32, 3), 10)
    assert len(splits.train_labels) == 5 * 3 - 4


@pytest.mark.parametrize("point_at_parent", [True, False])
def test_cifar100_local_layout_uses_fine_labels(tmp_path, point_at_parent):
    official = make_cifar100_folder(tmp_path / "cifar-100-python")
    data_dir = tmp_path if point_at_parent else tmp_path / "cifar-100-python"
    splits = load_image_dataset("cifar100", source="local", data_dir=data_dir, cache_dir=tmp_path / "cache",
                                val_size=2)
    check_splits(splits, official, 2, (32, 32, 3), 100)


def test_cifar_pickle_may_not_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    make_cifar100_folder(folder)
    (folder / "train").write_bytes(pickle.dumps({b"data": Path("x"), b"fine_labels": [1]}))
    with pytest.raises(DataNotFoundError, match="refusing to load"):
        load_image_dataset("cifar100", source="local", data_dir=folder, cache_dir=tmp_path / "c", val_size=1)


def test_debian_source(tmp_path, monkeypatch):
    arrays = make_idx_folder(tmp_path / "debian")
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    splits = load_image_dataset("fashion_mnist", tfds_data_dir=tmp_path / "no-tfds",
                                cache_dir=tmp_path / "cache", val_size=3)
    check_splits(splits, idx_official(arrays), 3, (28, 28, 1), 10)
    assert splits.source == f"debian:{tmp_path / 'debian'}"
    assert load_image_dataset("fashion_mnist", source="debian", cache_dir=tmp_path / "cache",
                              val_size=3).source == splits.source


def test_tfds_source_under_mock_data(tmp_path):
    # tfds.data_source works without TensorFlow, also under tfds.testing.mock_data; when TensorFlow is not
    # installed (the default install), this test proves it.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=9):
        splits = load_image_dataset("cifar100", source="tfds", tfds_data_dir=tmp_path / "tfds",
                                    cache_dir=tmp_path / "cache", val_size=3)
        records = tfds.data_source("cifar100", split="train", data_dir=str(tmp_path / "tfds"))
        official_train = np.stack([records[i]["image"] for i in range(len(records))])
        official_labels = np.array([records[i]["label"] for i in range(len(records))])
        auto = load_image_dataset("fashion_mnist", tfds_data_dir=tmp_path / "tfds",
                                  cache_dir=tmp_path / "cache", val_size=2)
    assert splits.source.startswith("tfds:")
    assert (len(splits.train_labels), len(splits.val_labels), len(splits.test_labels)) == (6, 3, 9)
    assert splits.train_images.shape == (6, 32, 32, 3) and splits.train_images.dtype == np.uint8
    assert splits.train_labels.dtype == np.int32 and splits.train_labels.max() < 100
    train_images, train_labels, val_images, _ = expected_split(official_train, official_labels, 3)
    np.testing.assert_array_equal(splits.train_images, train_images)
    np.testing.assert_array_equal(splits.train_labels, train_labels)
    np.testing.assert_array_equal(splits.val_images, val_images)
    assert auto.source.startswith("tfds:") and auto.train_images.shape == (7, 28, 28, 1)
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules


def test_tfds_not_prepared(tmp_path):
    with pytest.raises(DataNotFoundError, match="not prepared") as error:
        load_image_dataset("cifar10", source="tfds", tfds_data_dir=tmp_path / "empty",
                           cache_dir=tmp_path / "c")
    assert str(tmp_path / "empty") in str(error.value)
    assert not (tmp_path / "empty").exists()  # nothing was downloaded or prepared


# ----------------------------------------------------------------------------------------------------
# Split


def test_split_is_seeded_and_train_limit_truncates(tmp_path):
    make_idx_folder(tmp_path / "files", num_train=40)
    load = lambda **kwargs: load_image_dataset("fashion_mnist", source="local", data_dir=tmp_path / "files",
                                               cache_dir=tmp_path / "cache", **kwargs)
    first, again, other = load(val_size=10, split_seed=1), load(val_size=10, split_seed=1), load(val_size=10)
    np.testing.assert_array_equal(first.val_images, again.val_images)
    np.testing.assert_array_equal(first.train_labels, again.train_labels)
    assert not np.array_equal(first.val_images, other.val_images)
    # train and validation partition the official train set
    together = np.concatenate([first.train_images, first.val_images]).reshape(40, -1)
    official = other.train_images.reshape(30, -1).tolist() + other.val_images.reshape(10, -1).tolist()
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, official))

    limited = load(val_size=10, split_seed=1, train_limit=7)
    np.testing.assert_array_equal(limited.train_images, first.train_images[:7])
    np.testing.assert_array_equal(limited.val_images, first.val_images)
    assert load(val_size=0).val_images.shape == (0, 28, 28, 1)
    with pytest.raises(ValueError, match="val_size"):
        load(val_size=40)
    with pytest.raises(ValueError, match="train_limit"):
        load(val_size=10, train_limit=0)


# ----------------------------------------------------------------------------------------------------
# Cache


def test_second_load_uses_the_cache(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "files")
    load = lambda: load_image_dataset("fashion_mnist", source="local", data_dir=tmp_path / "files",
                                      cache_dir=tmp_path / "cache", val_size=5)
    first = load()
    assert len(list((tmp_path / "cache").glob("fashion_mnist-local-*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(images_module, "_read_idx", no_decoding)
    second = load()
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert second.train_labels.dtype == np.int32


def test_default_cache_dir_from_environment(tmp_path):
    make_idx_folder(tmp_path / "files")
    load_image_dataset("mnist", source="local", data_dir=tmp_path / "files", val_size=5)
    assert len(list((tmp_path / "default-cache").glob("mnist-local-*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path):
    make_idx_folder(tmp_path / "files")
    load = lambda: load_image_dataset("fashion_mnist", source="local", data_dir=tmp_path / "files",
                                      cache_dir=tmp_path / "cache", val_size=5)
    first = load()
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(b"not a zip file")
    second = load()
    np.testing.assert_array_equal(first.train_images, second.train_images)
    with np.load(cache_file) as stored:  # rewritten whole
        assert stored["train_images"].shape == (20, 28, 28, 1)


def test_changed_source_is_decoded_again(tmp_path):
    make_idx_folder(tmp_path / "files", seed=0)
    load = lambda: load_image_dataset("fashion_mnist", source="local", data_dir=tmp_path / "files",
                                      cache_dir=tmp_path / "cache", val_size=5)
    load()
    arrays = make_idx_folder(tmp_path / "files", seed=1, num_test=7)
    np.testing.assert_array_equal(load().test_images, arrays["t10k-images-idx3-ubyte"][..., None])


# ----------------------------------------------------------------------------------------------------
# Errors


def test_missing_data_message_is_one_line_and_names_every_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as error:
        load_image_dataset("fashion_mnist", data_dir=tmp_path / "empty", tfds_data_dir=tmp_path / "no-tfds",
                           cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    for expected in (f"local:{tmp_path / 'empty'}", f"tfds:{tmp_path / 'no-tfds'}",
                     f"debian:{tmp_path / 'no-debian'}", "apt-get install dataset-fashion-mnist",
                     "train-images-idx3-ubyte.gz", "pip install -e '.[tf]'", "tfds build fashion_mnist"):
        assert expected in message
    assert isinstance(error.value, DataError) and isinstance(error.value, RuntimeError)


def test_missing_cifar_without_data_dir(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_image_dataset("cifar100", tfds_data_dir=tmp_path / "no-tfds", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert "local (no data_dir given)" in message and "cifar-100-python" in message
    assert "tfds build cifar100" in message and "debian" not in message


def corrupt_magic(folder):
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((20, 28, 28)))
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d" + raw[3:]))


def corrupt_truncated_data(folder):
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))


def corrupt_truncated_gzip(folder):
    raw = (folder / "train-labels-idx1-ubyte.gz").read_bytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])


def corrupt_label_range(folder):
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(6, 12))


def corrupt_count_mismatch(folder):
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(19))


@pytest.mark.parametrize("corrupt", [corrupt_magic, corrupt_truncated_data, corrupt_truncated_gzip,
                                     corrupt_label_range, corrupt_count_mismatch])
def test_corrupt_idx_raises_data_not_found(tmp_path, corrupt):
    make_idx_folder(tmp_path / "files")
    corrupt(tmp_path / "files")
    with pytest.raises(DataNotFoundError, match="corrupt") as error:
        load_image_dataset("fashion_mnist", source="local", data_dir=tmp_path / "files",
                           cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache").glob("*.npz"))


def test_auto_skips_a_corrupt_source(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "files")
    corrupt_truncated_gzip(tmp_path / "files")
    arrays = make_idx_folder(tmp_path / "debian", seed=3)
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    splits = load_image_dataset("fashion_mnist", data_dir=tmp_path / "files",
                                tfds_data_dir=tmp_path / "no-tfds", cache_dir=tmp_path / "cache", val_size=5)
    assert splits.source.startswith("debian:")
    np.testing.assert_array_equal(splits.test_images, arrays["t10k-images-idx3-ubyte"][..., None])


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="fashion_mnist, mnist, cifar10, cifar100"):
        load_image_dataset("imagenet")
    with pytest.raises(ValueError, match="auto, tfds, local, debian"):
        load_image_dataset("mnist", source="web")
    with pytest.raises(ValueError, match="data_dir"):
        load_image_dataset("mnist", source="local")
    with pytest.raises(ValueError, match="only fashion_mnist"):
        load_image_dataset("cifar10", source="debian")


# ----------------------------------------------------------------------------------------------------
# Augmentation


def test_augment_for():
    assert augment_for("cifar10") and augment_for("cifar100")
    assert not augment_for("fashion_mnist") and not augment_for("mnist")
    with pytest.raises(ValueError):
        augment_for("svhn")


def test_normalize():
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    out = jax.jit(normalize, static_argnames="name")(images, name="cifar10")
    assert out.dtype == jnp.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, (images / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channel"):
        normalize(images, "fashion_mnist")


def test_random_crop_flip_is_a_padded_window_maybe_flipped():
    images = jnp.asarray(np.random.default_rng(0).integers(1, 256, (16, 6, 6, 2), dtype=np.uint8))
    out = np.asarray(random_crop_flip(jax.random.key(0), images, pad=2))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    flips, shifts = 0, 0
    for i in range(len(images)):
        matches = [(top, left, flip) for top in range(5) for left in range(5) for flip in (False, True)
                   if np.array_equal(out[i], (lambda w: w[:, ::-1] if flip else w)(padded[i, top:top + 6,
                                                                                        left:left + 6]))]
        assert matches, f"image {i} is not a window of the padded image"
        top, left, flip = matches[0]
        flips += flip
        shifts += (top, left) != (2, 2)
    assert 0 < flips < len(images) and shifts > 0  # both branches of the flip happen, and crops move


def test_random_crop_flip_pad_zero_only_flips():
    images = np.random.default_rng(1).integers(0, 256, (32, 5, 5, 1), dtype=np.uint8)
    out = np.asarray(random_crop_flip(jax.random.key(1), jnp.asarray(images), pad=0))
    same = np.array([np.array_equal(o, x) for o, x in zip(out, images, strict=True)])
    flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)])
    assert np.all(same | flipped) and np.any(flipped & ~same) and np.any(same)


def test_random_crop_flip_deterministic_jit_and_vmap():
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8))
    key = jax.random.key(3)
    eager = random_crop_flip(key, images)
    np.testing.assert_array_equal(eager, random_crop_flip(key, images))
    assert not np.array_equal(eager, random_crop_flip(jax.random.key(4), images))
    # inside a larger jitted step, as in training
    step = jax.jit(lambda k, x: normalize(random_crop_flip(k, x), "cifar10"))
    np.testing.assert_allclose(step(key, images), normalize(eager, "cifar10"), rtol=1e-5, atol=1e-5)
    keys = jax.random.split(key, 2)
    batched = jax.jit(jax.vmap(random_crop_flip))(keys, jnp.stack([images, images]))
    assert batched.shape == (2, 8, 8, 8, 3)
    np.testing.assert_array_equal(batched[1], random_crop_flip(keys[1], images))
    with pytest.raises(ValueError):
        random_crop_flip(key, images[0])


# ----------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.real_data
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    real_dir = Path("/usr/share/datasets/fashion-mnist")
    if not (real_dir / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{real_dir} absent (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", real_dir)
    splits = load_image_dataset("fashion_mnist", source="debian", cache_dir=tmp_path / "cache")
    assert splits.source == f"debian:{real_dir}"
    assert splits.train_images.shape == (50_000, 28, 28, 1) and splits.train_images.dtype == np.uint8
    assert splits.val_images.shape == (10_000, 28, 28, 1) and splits.test_images.shape == (10_000, 28, 28, 1)
    assert sorted(np.unique(splits.test_labels)) == list(range(10))
    assert np.bincount(splits.test_labels).tolist() == [1000] * 10  # the official test set is balanced
    everything = normalize(np.concatenate([splits.train_images, splits.val_images]), "fashion_mnist")
    assert abs(float(everything.mean())) < 1e-3 and abs(float(everything.std()) - 1) < 1e-3
