"""Image classification datasets as in-memory arrays, with the paper's train / validation / test split.

Datasets: ``fashion_mnist`` (28x28x1), ``mnist`` (28x28x1), ``cifar10`` (32x32x3) and ``cifar100``
(32x32x3, the 100 fine labels). Images are uint8 NHWC, labels int32.

Split (as in the paper): ``val_size`` examples (default 10,000) are drawn from the official train set with
the seeded permutation ``np.random.default_rng(split_seed).permutation``; the rest of the official train set
is the train split, and the official test set is the test split. ``train_limit`` then truncates the train
split (still in permuted order, so it is a random subset) for quick runs.

Sources. ``source="auto"`` tries, in this order, and uses the first that yields valid data:

1. ``local`` (only when ``data_dir`` is given): the official file layouts, in ``data_dir`` itself or in
   the usual sub-folder of it:

   - Fashion-MNIST / MNIST: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
     ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (uncompressed, without ``.gz``, too);
     sub-folders ``fashion-mnist/``, ``fashion_mnist/``, ``FashionMNIST/raw/`` resp. ``mnist/``,
     ``MNIST/raw/``.
   - CIFAR-10: ``cifar-10-batches-py/`` with the pickles ``data_batch_1`` .. ``data_batch_5`` and
     ``test_batch``.
   - CIFAR-100: ``cifar-100-python/`` with the pickles ``train`` and ``test`` (``fine_labels``).

2. ``tfds``: a TensorFlow Datasets copy already prepared in ``tfds_data_dir`` (default: the TFDS default
   directory, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), read with ``tfds.data_source``, which needs
   no TensorFlow. ``data_source`` reads only the ``array_record`` file format, so build it with
   ``tfds build <name> --data_dir=DIR --file_format=array_record``. Nothing is ever downloaded.

3. ``debian`` (Fashion-MNIST only): ``/usr/share/datasets/fashion-mnist/``, installed by
   ``apt-get install dataset-fashion-mnist``; the same IDX files as above.

A source that is absent or holds corrupt data is skipped with a logged warning; when none works,
:class:`DataNotFoundError` says, in one line, every source tried with its path and why it failed, and how
to obtain the data. An explicit ``source`` tries that source only.

Cache: the decoded official train/test arrays are stored as one ``.npz`` per dataset and source in
``cache_dir`` (default ``$GNS_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/gns_jax``, else ``~/.cache/gns_jax``).
The file name carries a hash of the source's path and its files' sizes and modification times, so a changed
source is decoded afresh. An unreadable cache file is ignored and rewritten; a cache directory that cannot
be written only costs the speed-up.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import math
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "cifar100")
SOURCES = ("auto", "tfds", "local", "debian")
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_CACHE_FORMAT_VERSION = 1
_MAX_REASON_CHARS = 300


class DataError(RuntimeError):
    """Base class of the data errors raised by gns_jax."""


class DataNotFoundError(DataError):
    """No source holds a usable copy of the dataset; the message says what was tried and how to fix it."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplits:
    """One dataset split into train / validation / test, as uint8 NHWC images and int32 labels."""

    name: str
    num_classes: int
    source: str  # the source actually used, e.g. "debian:/usr/share/datasets/fashion-mnist"
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    provenance: dict = dataclasses.field(default_factory=dict)  # per split: kind, path, files, sha256

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(height, width, channels) of every image."""
        return tuple(self.train_images.shape[1:])

    def __repr__(self) -> str:
        return (
            f"ImageSplits(name={self.name!r}, num_classes={self.num_classes}, source={self.source!r}, "
            f"train={len(self.train_labels)}, val={len(self.val_labels)}, test={len(self.test_labels)}, "
            f"image_shape={self.image_shape})"
        )


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
    num_classes: int
    image_shape: tuple[int, int, int]
    local_subdirs: tuple[str, ...]  # where the files may sit below data_dir (data_dir itself is tried first)
    official_files: str  # what to put into data_dir, for the error message
    homepage: str


_IDX_FILE_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_FILES_TEXT = ", ".join(f"{stem}.gz" for stem in _IDX_FILE_STEMS.values())
_CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))

_SPECS = {
    "fashion_mnist": _DatasetSpec(
        num_classes=10,
        image_shape=(28, 28, 1),
        local_subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        official_files=_IDX_FILES_TEXT,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": _DatasetSpec(
        num_classes=10,
        image_shape=(28, 28, 1),
        local_subdirs=("mnist", "MNIST/raw"),
        official_files=_IDX_FILES_TEXT,
        homepage="https://yann.lecun.com/exdb/mnist/",
    ),
    "cifar10": _DatasetSpec(
        num_classes=10,
        image_shape=(32, 32, 3),
        local_subdirs=("cifar-10-batches-py",),
        official_files="cifar-10-batches-py/ (extracted from cifar-10-python.tar.gz)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": _DatasetSpec(
        num_classes=100,
        image_shape=(32, 32, 3),
        local_subdirs=("cifar-100-python",),
        official_files="cifar-100-python/ (extracted from cifar-100-python.tar.gz)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


@dataclasses.dataclass(frozen=True)
class _OfficialSplits:
    """The official train and test sets, before the validation split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class _LocatedSource:
    """A source that seems to hold the dataset; ``decode`` reads it (and may still find it corrupt)."""

    kind: str  # "local", "tfds" or "debian"
    location: str  # path shown to the user and stored in ImageSplits.source
    cache_key: tuple  # JSON-serialisable; changes whenever the source's content may have changed
    decode: Callable[[], _OfficialSplits]
    files: dict = dataclasses.field(default_factory=dict)  # "train" / "test" -> the files that hold that set


class _SourceUnavailable(Exception):
    """A source does not hold the dataset (absent, not prepared, incomplete)."""


class _CorruptData(Exception):
    """A source's files exist but do not decode into the expected arrays."""


def _one_line(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_fingerprint(paths: Sequence[Path]) -> list:
    fingerprint = []
    for path in paths:
        stat = path.stat()
        fingerprint.append([path.name, stat.st_size, stat.st_mtime_ns])
    return fingerprint


# ----------------------------------------------------------------------------------------------------
# IDX files (Fashion-MNIST, MNIST)


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (magic 0x0000 08 <ndim>), gzipped or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        magic = raw[:4].hex() or "empty"
        raise _CorruptData(f"{path.name}: not an IDX file of unsigned bytes (magic {magic})")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise _CorruptData(f"{path.name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    if len(raw) - header_size != math.prod(dims):
        raise _CorruptData(
            f"{path.name}: {len(raw) - header_size} data bytes, but the header declares shape {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _locate_idx_folder(kind: str, folder: Path, spec: _DatasetSpec) -> _LocatedSource:
    files = {}
    for role, stem in _IDX_FILE_STEMS.items():
        path = _find_idx_file(folder, stem)
        if path is None:
            raise _SourceUnavailable(f"{stem}[.gz] missing in {folder}")
        files[role] = path

    def decode() -> _OfficialSplits:
        arrays = {role: _read_idx(path) for role, path in files.items()}
        for role in ("train_images", "test_images"):
            if arrays[role].ndim != 3:
                shape = arrays[role].shape
                raise _CorruptData(f"{files[role].name}: expected 3 dimensions, got shape {shape}")
            arrays[role] = arrays[role][..., None]  # IDX images are (N, H, W); add the channel axis
        return _OfficialSplits(**arrays)

    paths = [files[role] for role in _IDX_FILE_STEMS]
    parts = {"train": [files["train_images"], files["train_labels"]],
             "test": [files["test_images"], files["test_labels"]]}
    return _LocatedSource(kind, str(folder), (str(folder.resolve()), _file_fingerprint(paths)), decode, parts)


# ----------------------------------------------------------------------------------------------------
# CIFAR pickles


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file must not be able to run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise _CorruptData(f"{path.name}: expected a dict with keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _CorruptData(f"{path.name}: data has shape {data.shape}, expected (N, 3072)")
    # Rows are the 1024 red, then green, then blue values of a 32x32 image (CHW); the package is NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _locate_cifar_folder(folder: Path, train_files: Sequence[str], test_file: str,
                         label_key: bytes) -> _LocatedSource:
    missing = [name for name in (*train_files, test_file) if not (folder / name).is_file()]
    if missing:
        raise _SourceUnavailable(f"{', '.join(missing)} missing in {folder}")

    def decode() -> _OfficialSplits:
        train = [_read_cifar_pickle(folder / name, label_key) for name in train_files]
        test_images, test_labels = _read_cifar_pickle(folder / test_file, label_key)
        return _OfficialSplits(
            train_images=np.concatenate([images for images, _ in train]),
            train_labels=np.concatenate([labels for _, labels in train]),
            test_images=test_images,
            test_labels=test_labels,
        )

    paths = [folder / name for name in (*train_files, test_file)]
    parts = {"train": [folder / name for name in train_files], "test": [folder / test_file]}
    return _LocatedSource("local", str(folder), (str(folder.resolve()), _file_fingerprint(paths)), decode, parts)


# ----------------------------------------------------------------------------------------------------
# Sources


def _locate_local(name: str, data_dir: Path) -> _LocatedSource:
    spec = _SPECS[name]
    if not data_dir.is_dir():
        found = "a file" if data_dir.exists() else "nothing"
        raise _SourceUnavailable(f"{data_dir} is not a directory ({found} there)")
    candidates = [data_dir, *(data_dir / sub for sub in spec.local_subdirs)]
    reasons = []
    for folder in candidates:
        if not folder.is_dir():
            continue
        try:
            if name in ("fashion_mnist", "mnist"):
                return _locate_idx_folder("local", folder, spec)
            if name == "cifar10":
                return _locate_cifar_folder(folder, _CIFAR10_TRAIN_FILES, "test_batch", b"labels")
            return _locate_cifar_folder(folder, ("train",), "test", b"fine_labels")
        except _SourceUnavailable as e:
            reasons.append(str(e))
    subdirs = ", ".join(f"{sub}/" for sub in spec.local_subdirs)
    raise _SourceUnavailable(f"{data_dir} holds {describe_folder(data_dir)}; the files are not in it nor in its "
                             f"sub-folders {subdirs} ({'; '.join(reasons)})")


def describe_folder(folder: Path) -> str:
    """What a folder holds, for error messages: 'nothing (empty)', or its first entries."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        return f"nothing readable ({e.strerror})"
    if not entries:
        return "nothing (it is empty)"
    shown = [f"{e}/" if (Path(folder) / e).is_dir() else e for e in entries[:5]]
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    return f"{len(entries)} entries: {', '.join(shown)}{more}"


def file_sha256(paths: Sequence[Path]) -> str:
    """SHA-256 of the files' contents, in order (the fingerprint of a data source in results files)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _provenance(located: _LocatedSource, val_size: int, split_seed: int, train_limit: int | None) -> dict:
    """Where every split was read from: source kind, path, files and their SHA-256 (TFDS: its metadata key)."""

    def record(part: str) -> dict:
        entry = {"kind": located.kind, "path": located.location}
        paths = located.files.get(part)
        if paths:
            entry.update(files=[str(p) for p in paths], sha256=file_sha256(paths))
        else:
            entry.update(tfds_split=part, fingerprint=hashlib.sha256(
                json.dumps(located.cache_key, default=str).encode()).hexdigest())
        return entry

    train = record("train")
    return {"train": dict(train, rows="official train set minus validation", train_limit=train_limit),
            "val": dict(train, rows=f"{val_size} examples of the official train set", split_seed=split_seed),
            "test": record("test")}


def _locate_debian(name: str) -> _LocatedSource:
    folder = DEBIAN_FASHION_MNIST_DIR
    if not folder.is_dir():
        raise _SourceUnavailable(f"{folder} does not exist")
    return _locate_idx_folder("debian", folder, _SPECS[name])


def _read_tfds_split(data_source, spec: _DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    count = len(data_source)
    images = np.empty((count, *spec.image_shape), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.int64)
    # Records one at a time: data_source.__getitems__ is broken in this tensorflow-datasets version.
    for index in range(count):
        record = data_source[index]
        images[index] = record["image"]
        labels[index] = record["label"]
    return images, labels


def _locate_tfds(name: str, tfds_data_dir: Path | None) -> _LocatedSource:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _SourceUnavailable(f"tensorflow_datasets cannot be imported ({e})") from None
    data_dir = None if tfds_data_dir is None else os.fspath(tfds_data_dir)
    shown_dir = data_dir or "the default TFDS directory"
    splits = {}
    for split in ("train", "test"):
        try:
            splits[split] = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # tfds raises many types here; all mean "not readable from this directory"
            try:
                builder = tfds.builder(name, data_dir=data_dir)
                where, prepared = builder.data_dir, builder.is_prepared()
            except Exception:
                where, prepared = shown_dir, False
            if not prepared:
                raise _SourceUnavailable(f"not prepared in {where}") from None
            raise _SourceUnavailable(
                f"prepared in {where} but not readable without TensorFlow ({_one_line(e, 150)}); "
                "rebuild it with --file_format=array_record"
            ) from None
    info_dir = splits["train"].dataset_info.data_dir
    info_file = Path(info_dir) / "dataset_info.json"
    info_mtime = info_file.stat().st_mtime_ns if info_file.is_file() else None
    spec = _SPECS[name]

    def decode() -> _OfficialSplits:
        train_images, train_labels = _read_tfds_split(splits["train"], spec)
        test_images, test_labels = _read_tfds_split(splits["test"], spec)
        return _OfficialSplits(train_images, train_labels, test_images, test_labels)

    cache_key = (str(info_dir), info_mtime, len(splits["train"]), len(splits["test"]))
    return _LocatedSource("tfds", str(info_dir), cache_key, decode)


def _validated(raw: _OfficialSplits, spec: _DatasetSpec) -> _OfficialSplits:
    """Checks shapes, dtypes and label range; returns the arrays with int32 labels."""
    for part in ("train", "test"):
        images = getattr(raw, f"{part}_images")
        labels = getattr(raw, f"{part}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != spec.image_shape:
            raise _CorruptData(
                f"{part} images have shape {images.shape} and dtype {images.dtype}, "
                f"expected (N, {', '.join(map(str, spec.image_shape))}) uint8"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise _CorruptData(f"{len(images)} {part} images but labels of shape {labels.shape}")
        if len(labels) == 0:
            raise _CorruptData(f"the {part} set is empty")
        if labels.min() < 0 or labels.max() >= spec.num_classes:
            raise _CorruptData(
                f"{part} labels span [{labels.min()}, {labels.max()}], expected [0, {spec.num_classes - 1}]"
            )
    return _OfficialSplits(
        train_images=raw.train_images,
        train_labels=raw.train_labels.astype(np.int32),
        test_images=raw.test_images,
        test_labels=raw.test_labels.astype(np.int32),
    )


# ----------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    """``$GNS_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/gns_jax``, else ``~/.cache/gns_jax``."""
    if os.environ.get("GNS_JAX_CACHE_DIR"):
        return Path(os.environ["GNS_JAX_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gns_jax"


def _cache_path(cache_dir: Path, name: str, located: _LocatedSource) -> Path:
    key = json.dumps([_CACHE_FORMAT_VERSION, name, located.kind, located.cache_key])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{name}-{located.kind}-{digest}.npz"


def _read_cache(path: Path, spec: _DatasetSpec) -> _OfficialSplits | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = [field.name for field in dataclasses.fields(_OfficialSplits)]
            raw = _OfficialSplits(**{name: stored[name] for name in names})
        return _validated(raw, spec)
    except Exception as e:  # the cache is disposable: whatever is wrong with it, decode the source again
        logger.warning("Ignoring unreadable cache file %s (%s); rebuilding it.", path, _one_line(e, 150))
        return None


def _write_cache(path: Path, raw: _OfficialSplits) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as f:
            np.savez(f, **dataclasses.asdict(raw))
        os.replace(temporary, path)  # atomic: concurrent readers see the old file or the complete new one
    except OSError as e:
        logger.warning("Could not write the data cache %s (%s); continuing without it.", path, e)
        temporary.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------
# Public entry point


def _how_to_obtain(name: str) -> str:
    spec = _SPECS[name]
    ways = []
    if name == "fashion_mnist":
        ways.append("`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)")
    ways.append(f"put the official files ({spec.official_files}; {spec.homepage}) into data_dir")
    ways.append(
        f"`pip install -e '.[tf]'` then `tfds build {name} --data_dir=DIR --file_format=array_record` "
        "and pass tfds_data_dir=DIR"
    )
    return "To obtain it: " + ", or ".join(ways) + "."


def _split(raw: _OfficialSplits, name: str, source: str, val_size: int, split_seed: int,
           train_limit: int | None) -> ImageSplits:
    num_train = len(raw.train_labels)
    if not 0 <= val_size < num_train:
        raise ValueError(f"val_size must be in [0, {num_train}) for {name} from {source}, got {val_size}")
    permutation = np.random.default_rng(split_seed).permutation(num_train)
    val_indices, train_indices = permutation[:val_size], permutation[val_size:]
    if train_limit is not None:
        train_indices = train_indices[:train_limit]
    return ImageSplits(
        name=name,
        num_classes=_SPECS[name].num_classes,
        source=source,
        train_images=raw.train_images[train_indices],
        train_labels=raw.train_labels[train_indices],
        val_images=raw.train_images[val_indices],
        val_labels=raw.train_labels[val_indices],
        test_images=np.array(raw.test_images),  # a writable copy: decoded IDX data is a read-only buffer view
        test_labels=np.array(raw.test_labels),
    )


def load_image_dataset(
    name: str,
    *,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_size: int = 10_000,
    split_seed: int = 0,
    train_limit: int | None = None,
) -> ImageSplits:
    """Loads ``name`` from the first usable source and splits it into train / validation / test.

    Args:
      name: one of ``DATASET_NAMES``.
      source: ``"auto"`` (local → tfds → debian, see the module docstring), or one of ``"local"``, ``"tfds"``,
        ``"debian"`` to use that source only.
      data_dir: folder with the official files (or its parent); needed for ``source="local"``.
      tfds_data_dir: TFDS data directory; ``None`` means the TFDS default.
      cache_dir: where decoded arrays are cached; ``None`` means :func:`default_cache_dir`.
      val_size: number of validation examples drawn from the official train set.
      split_seed: seed of the permutation that draws them.
      train_limit: if given, keep only this many train examples (after the split).

    Raises:
      ValueError: unknown ``name`` or ``source``, or arguments that cannot be satisfied.
      DataNotFoundError: no tried source holds a usable copy.
    """
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "local" and data_dir is None:
        raise ValueError("source='local' needs data_dir")
    if source == "debian" and name != "fashion_mnist":
        raise ValueError(f"source='debian' provides only fashion_mnist, not {name}")
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"train_limit must be a positive number of examples or None, got {train_limit}")
    spec = _SPECS[name]
    data_dir = None if data_dir is None else Path(data_dir).expanduser()
    tfds_data_dir = None if tfds_data_dir is None else Path(tfds_data_dir).expanduser()
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()

    attempts: list[tuple[str, Callable[[], _LocatedSource]]] = []
    if source in ("auto", "local"):
        if data_dir is not None:
            attempts.append((f"local:{data_dir}", lambda: _locate_local(name, data_dir)))
    if source in ("auto", "tfds"):
        tfds_shown = tfds_data_dir if tfds_data_dir is not None else "<TFDS default dir>"
        attempts.append((f"tfds:{tfds_shown}", lambda: _locate_tfds(name, tfds_data_dir)))
    if source in ("auto", "debian") and name == "fashion_mnist":
        attempts.append((f"debian:{DEBIAN_FASHION_MNIST_DIR}", lambda: _locate_debian(name)))

    failures = [] if data_dir is not None or source != "auto" else ["local (no data_dir given)"]
    for label, locate in attempts:
        try:
            located = locate()
        except _SourceUnavailable as e:
            failures.append(f"{label} ({_one_line(e)})")
            continue
        used = f"{located.kind}:{located.location}"
        cache_file = _cache_path(cache_dir, name, located)
        raw = _read_cache(cache_file, spec)
        if raw is None:
            try:
                raw = _validated(located.decode(), spec)
            except Exception as e:  # any failure to decode makes this copy unusable; the reason is reported
                reason = _one_line(f"corrupt: {type(e).__name__}: {e}")
                logger.warning("Skipping %s for %s: %s", used, name, reason)
                failures.append(f"{used} ({reason})")
                continue
            _write_cache(cache_file, raw)
        splits = _split(raw, name, used, val_size, split_seed, train_limit)
        return dataclasses.replace(splits, provenance=_provenance(located, val_size, split_seed, train_limit))

    raise DataNotFoundError(
        f"No usable copy of {name} found. Tried: {'; '.join(failures)}. {_how_to_obtain(name)}"
    )
