"""GLUE tasks → tokenized, fixed-length numpy arrays {train, val, test} (the paper's language targets, §5.2).

Two sources, tried in this order by ``source='auto'``:

* ``'local'`` (alias ``'tsv'``): the official GLUE files under ``data_dir/<Task>/`` (``train.tsv``,
  ``dev.tsv``; MNLI ``dev_matched.tsv``), as written by the GLUE download script. Columns per task (``TASKS``
  holds them):

  ======  ==========================================================  ========================
  task    columns used (header name, or index when there is none)      label
  ======  ==========================================================  ========================
  CoLA    no header; 0 source, 1 label, 2 notes, 3 sentence            1 (0/1)
  SST-2   sentence                                                    label (0/1)
  MRPC    #1 String, #2 String                                        Quality (0/1)
  QQP     question1, question2                                        is_duplicate (0/1)
  STS-B   sentence1, sentence2                                        score (0–5, float)
  MNLI    sentence1, sentence2                                        gold_label (3 classes)
  QNLI    question, sentence                                          label (entailment/…)
  RTE     sentence1, sentence2                                        label (entailment/…)
  ======  ==========================================================  ========================

* ``'tfds'``: TFDS ``glue/<name>`` through ``tfds.data_source`` (no TensorFlow needed; records are read one at
  a time; GLUE builders register only when ``h5py`` is installed). The data must already be prepared in
  ``tfds_data_dir``; nothing is downloaded.

Label indices follow TFDS in both sources, so a model trained from one reads the other: MNLI entailment 0,
neutral 1, contradiction 2; QNLI/RTE entailment 0, not_entailment 1.

Splits. GLUE test labels are not public, so the dev set (MNLI: matched dev) is the **test** split. The
**validation** split — the one the scheduler's reward reads (Eq. 2) — is a seeded random part of the official
train set: ``min(round(val_fraction · n_train), val_max)`` examples, by default 10% capped at 2,000 (RTE 249
of 2,490, MRPC 367, CoLA 855, STS-B 575, SST-2/QNLI/QQP/MNLI 2,000); the rest is **train**. ``train_limit`` /
``eval_limit`` shorten train and val/test afterwards (for quick runs), keeping the same validation examples.
A task missing from every source raises ``gns_jax.data.DataNotFoundError`` naming what was tried.

Every split is a dict of numpy arrays padded to ``max_length``: ``input_ids``, ``attention_mask``,
``token_type_ids`` (int32, ``(n, max_length)``) and ``label`` (int32, or float32 for STS-B), so batches can be
gathered by index inside a jitted scan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from gns_jax.data.images import DataNotFoundError, describe_folder, file_sha256

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "local", "tfds")


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task's texts and labels are, in the official TSV files and in TFDS."""

    name: str  # canonical lower-case name, as TFDS spells it: 'cola', 'sst2', ...
    dir_name: str  # folder in the official layout
    text_columns: tuple  # header names (or int indices when the file has no header)
    label_column: str | int
    label_names: tuple[str, ...]  # TSV label value of class i; () for regression
    metric: str  # the paper's metric (Table 8)
    tfds_text_features: tuple[str, ...]
    has_header: bool = True
    dev_file: str = "dev.tsv"
    tfds_dev_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1


TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", (3,), 1, ("0", "1"), "matthews", ("sentence",), has_header=False),
        GlueTask("sst2", "SST-2", ("sentence",), "label", ("0", "1"), "accuracy", ("sentence",)),
        GlueTask(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            ("0", "1"),
            "accuracy",
            ("sentence1", "sentence2"),
        ),
        GlueTask(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            ("0", "1"),
            "accuracy",
            ("question1", "question2"),
        ),
        GlueTask(
            "stsb", "STS-B", ("sentence1", "sentence2"), "score", (), "pearson", ("sentence1", "sentence2")
        ),
        GlueTask(
            "mnli",
            "MNLI",
            ("sentence1", "sentence2"),
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            "accuracy",
            ("premise", "hypothesis"),
            dev_file="dev_matched.tsv",
            tfds_dev_split="validation_matched",
        ),
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            "label",
            ("entailment", "not_entailment"),
            "accuracy",
            ("question", "sentence"),
        ),
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            "label",
            ("entailment", "not_entailment"),
            "accuracy",
            ("sentence1", "sentence2"),
        ),
    )
}


def canonical_task_name(task: str) -> str:
    """'SST-2', 'sst-2', 'sst2' → 'sst2'; 'STS-B' → 'stsb'; 'MNLI' → 'mnli'."""
    key = task.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(TASKS)}")
    return key


@dataclasses.dataclass(frozen=True)
class TextSplits:
    """Tokenized splits of one task: each maps input_ids/attention_mask/token_type_ids/label to arrays."""

    task: str
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    num_labels: int
    metric: str
    is_regression: bool
    max_length: int
    source: str  # the source used: 'local:<task dir>' or 'tfds:glue/<name>'
    provenance: dict = dataclasses.field(default_factory=dict)  # per split: kind, path, file, sha256

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)["label"]) for name in SPLITS}


@dataclasses.dataclass(frozen=True)
class RawSplit:
    """Texts (one or two sequences per example) and labels of one split, before tokenization."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray


# --- official TSV layout --------------------------------------------------------------------------------


def find_task_dir(task: GlueTask, data_dir: str) -> str | None:
    """The task folder under ``data_dir`` (official name, any case, '-' optional), or ``data_dir`` itself."""
    if not data_dir or not os.path.isdir(data_dir):
        return None
    wanted = task.dir_name.lower().replace("-", "")
    for entry in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, entry)
        if entry.lower().replace("-", "").replace("_", "") == wanted and os.path.isfile(
            os.path.join(path, "train.tsv")
        ):
            return path
    if os.path.isfile(os.path.join(data_dir, "train.tsv")) and os.path.isfile(
        os.path.join(data_dir, task.dev_file)
    ):
        return data_dir  # data_dir is the task folder itself
    return None


def read_tsv_split(task: GlueTask, path: str) -> RawSplit:
    """Reads one official GLUE TSV file. Rows with a wrong field count (a few in QQP's train) are skipped."""
    with open(path, encoding="utf-8-sig") as f:
        # No csv quoting: GLUE sentences contain unbalanced quote characters.
        rows = [line.rstrip("\r\n").split("\t") for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path}: the file is empty (expected the official GLUE TSV layout)")
    if task.has_header:
        header, rows = rows[0], rows[1:]
        missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
        if missing:
            raise ValueError(
                f"{path}: columns {missing} not in header {header} (expected the official GLUE layout)"
            )
        text_idx = [header.index(c) for c in task.text_columns]
        label_idx = header.index(task.label_column)
        max_width = len(header)
    else:
        text_idx, label_idx = list(task.text_columns), task.label_column
        max_width = None
    min_width = max(*text_idx, label_idx) + 1
    texts: list[list[str]] = [[] for _ in text_idx]
    labels: list = []
    skipped = 0
    for row in rows:
        if len(row) < min_width or (max_width is not None and len(row) > max_width):
            skipped += 1
            continue
        raw_label = row[label_idx].strip()
        if task.is_regression:
            labels.append(float(raw_label))
        elif raw_label in task.label_names:
            labels.append(task.label_names.index(raw_label))
        else:
            skipped += 1
            continue
        for column, i in zip(texts, text_idx, strict=True):
            column.append(row[i])
    if skipped:
        log.info("%s: skipped %d malformed or unlabeled rows of %d", path, skipped, len(rows))
    if not labels:
        raise ValueError(f"{path}: no labeled rows")
    dtype = np.float32 if task.is_regression else np.int32
    return RawSplit(texts[0], texts[1] if len(texts) > 1 else None, np.asarray(labels, dtype))


# --- TFDS -----------------------------------------------------------------------------------------------


def read_tfds_split(task: GlueTask, split: str, tfds_data_dir: str | None = None) -> RawSplit:
    """Reads a prepared TFDS ``glue/<name>`` split with ``tfds.data_source`` (one record at a time)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(f"glue/{task.name}", split=split, data_dir=tfds_data_dir, download=False)
    texts: list[list[str]] = [[] for _ in task.tfds_text_features]
    labels = []
    for i in range(len(source)):  # __getitems__ of data sources is unreliable; index records one by one
        record = source[i]
        for column, feature in zip(texts, task.tfds_text_features, strict=True):
            value = record[feature]
            column.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        labels.append(record["label"])
    dtype = np.float32 if task.is_regression else np.int32
    return RawSplit(texts[0], texts[1] if len(texts) > 1 else None, np.asarray(labels, dtype))


# --- loading --------------------------------------------------------------------------------------------


def _read_raw(task: GlueTask, source: str, data_dir: str | None, tfds_data_dir: str | None):
    """(train RawSplit, dev RawSplit, the source used) from the first source that has the task."""
    tried = []
    if source in ("auto", "local"):
        task_dir = find_task_dir(task, data_dir) if data_dir else None
        if task_dir:
            train = read_tsv_split(task, os.path.join(task_dir, "train.tsv"))
            dev = read_tsv_split(task, os.path.join(task_dir, task.dev_file))
            return train, dev, f"local:{task_dir}"
        where = os.path.join(data_dir, task.dir_name) if data_dir else "<no data_dir given>"
        found = ""
        if data_dir:
            found = f" ({data_dir} holds {describe_folder(data_dir)})" if os.path.isdir(data_dir) else (
                f" ({data_dir} does not exist)")
        tried.append(f"local {where}/{{train.tsv,{task.dev_file}}}{found}")
    if source in ("auto", "tfds"):
        try:
            train = read_tfds_split(task, "train", tfds_data_dir)
            dev = read_tfds_split(task, task.tfds_dev_split, tfds_data_dir)
            return train, dev, f"tfds:glue/{task.name}"
        except Exception as e:  # tfds raises many types; all mean "not readable from this directory"
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            tried.append(f"tfds glue/{task.name} in {tfds_data_dir or '<TFDS default dir>'} ({reason})")
    raise DataNotFoundError(
        f"GLUE {task.dir_name} not found; tried: " + "; ".join(tried) + ". To get it, download GLUE "
        f"(https://gluebenchmark.com/tasks) and pass data_dir=<folder holding {task.dir_name}/>, or prepare "
        f"TFDS with `pip install -e '.[tf]' && tfds build glue/{task.name}`."
    )


def validation_size(n_train: int, val_fraction: float = 0.1, val_max: int = 2000) -> int:
    """Train examples held out for validation: ``min(round(f·n), val_max)``, at least 1 when n ≥ 2."""
    size = min(int(round(val_fraction * n_train)), val_max)
    return max(size, 1) if n_train >= 2 and val_fraction > 0 else size


def tokenize(tokenizer, raw: RawSplit, max_length: int) -> dict[str, np.ndarray]:
    """Fixed-length int32 arrays; pairs are truncated longest-first, as in GLUE fine-tuning scripts."""
    encoded = tokenizer(
        raw.texts_a,
        raw.texts_b,
        max_length=max_length,
        truncation=True,
        padding="max_length",
        return_token_type_ids=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    ids = np.asarray(encoded["input_ids"], np.int32)
    token_types = encoded.get("token_type_ids")
    return {
        "input_ids": ids,
        "attention_mask": np.asarray(encoded["attention_mask"], np.int32),
        "token_type_ids": np.zeros_like(ids) if token_types is None else np.asarray(token_types, np.int32),
        "label": raw.labels,
    }


def _subset(raw: RawSplit, index: np.ndarray) -> RawSplit:
    pick = lambda texts: [texts[i] for i in index]
    return RawSplit(pick(raw.texts_a), None if raw.texts_b is None else pick(raw.texts_b), raw.labels[index])


def split_train(
    raw_train: RawSplit, val_fraction: float, val_max: int, split_seed: int
) -> tuple[RawSplit, RawSplit]:
    """Seeded (train, val) partition of the official train set; both keep the permuted order."""
    order = np.random.default_rng(split_seed).permutation(len(raw_train.labels))
    n_val = validation_size(len(order), val_fraction, val_max)
    return _subset(raw_train, order[n_val:]), _subset(raw_train, order[:n_val])


def load_tokenizer(tokenizer_dir: str):
    """``AutoTokenizer`` from a local directory only (no hub look-ups)."""
    from transformers import AutoTokenizer

    if not os.path.isdir(tokenizer_dir):
        raise FileNotFoundError(
            f"tokenizer directory {tokenizer_dir!r} does not exist (a local HF model folder)"
        )
    return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)


def load_glue(
    task: str,
    *,
    data_dir: str | None = None,
    tokenizer_dir: str | None = None,
    tokenizer=None,
    max_length: int = 128,
    source: str = "auto",
    tfds_data_dir: str | None = None,
    val_fraction: float = 0.1,
    val_max: int = 2000,
    split_seed: int = 0,
    train_limit: int | None = None,
    eval_limit: int | None = None,
) -> TextSplits:
    """Loads and tokenizes one GLUE task (see the module docstring for sources, columns and split sizes).

    Args:
      task: 'cola', 'sst2' ('SST-2'), 'mrpc', 'qqp', 'stsb' ('STS-B'), 'mnli', 'qnli' or 'rte'.
      data_dir: folder holding the official task folders (``RTE/``, ``SST-2/``, ...), or a task folder itself.
      tokenizer_dir: local HF directory with the checkpoint's tokenizer files; or pass ``tokenizer``.
      max_length: every sequence is truncated/padded to this many tokens.
      source: 'auto' (local TSV files, then TFDS), 'local' (alias 'tsv') or 'tfds'.
      tfds_data_dir: TFDS data directory; None means the TFDS default.
      val_fraction, val_max: validation = ``min(round(val_fraction · n_train), val_max)`` train examples.
      split_seed: seed of the train/validation partition.
      train_limit: keep only this many train examples; eval_limit: same for val and test (first examples).
    """
    spec = TASKS[canonical_task_name(task)]
    source = "local" if source == "tsv" else source
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    for name, value in (("train_limit", train_limit), ("eval_limit", eval_limit)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive number of examples or None, got {value}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokenizer is None:
        if tokenizer_dir is None:
            raise ValueError("pass tokenizer_dir (a local HF model folder) or a tokenizer")
        tokenizer = load_tokenizer(tokenizer_dir)
    raw_train, raw_dev, described = _read_raw(spec, source, data_dir, tfds_data_dir)
    provenance = _provenance(spec, described, split_seed, train_limit, eval_limit)
    train, val = split_train(raw_train, val_fraction, val_max, split_seed)
    limit = lambda raw, n: raw if n is None else _subset(raw, np.arange(min(n, len(raw.labels))))
    train, val, test = limit(train, train_limit), limit(val, eval_limit), limit(raw_dev, eval_limit)
    log.info(
        "GLUE %s from %s: train %d, val %d, test %d (max_length %d)",
        spec.name,
        described,
        len(train.labels),
        len(val.labels),
        len(test.labels),
        max_length,
    )
    return TextSplits(
        task=spec.name,
        train=tokenize(tokenizer, train, max_length),
        val=tokenize(tokenizer, val, max_length),
        test=tokenize(tokenizer, test, max_length),
        num_labels=spec.num_labels,
        metric=spec.metric,
        is_regression=spec.is_regression,
        max_length=max_length,
        source=described,
        provenance=provenance,
    )


def _provenance(task: GlueTask, described: str, split_seed: int, train_limit, eval_limit) -> dict:
    """Where every split was read from: source kind, path, file and its SHA-256 (TFDS: the dataset name)."""
    kind, where = described.split(":", 1)
    if kind == "local":
        from pathlib import Path

        def record(name):
            path = Path(where) / name
            return {"kind": kind, "path": where, "files": [str(path)], "sha256": file_sha256([path])}

        train, test = record("train.tsv"), record(task.dev_file)
    else:
        train = {"kind": kind, "path": where, "tfds_split": "train"}
        test = {"kind": kind, "path": where, "tfds_split": task.tfds_dev_split}
    return {"train": dict(train, rows="official train set minus validation", train_limit=train_limit),
            "val": dict(train, rows="a seeded part of the official train set", split_seed=split_seed,
                        eval_limit=eval_limit),
            "test": dict(test, rows="official dev set", eval_limit=eval_limit)}


def task_names() -> Sequence[str]:
    """The eight GLUE tasks of the paper, in Table 8's order."""
    return tuple(TASKS)
