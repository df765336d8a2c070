"""Tests of gns_jax.targets.metrics against scipy.stats and hand-computed cases, eager and under jit, with masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gns_jax.targets import metrics


def test_accuracy_and_accuracy_from_logits():
    labels = jnp.array([0, 1, 1, 0])
    assert float(metrics.accuracy(jnp.array([0, 1, 0, 0]), labels)) == pytest.approx(0.75)
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [5.0, -1.0]])
    assert float(metrics.accuracy_from_logits(logits, labels)) == pytest.approx(0.75)
    # The masked third example is the only error.
    assert float(metrics.accuracy_from_logits(logits, labels, mask=jnp.array([1, 1, 0, 1]))) == 1.0


def test_f1_binary_hand_computed():
    predictions = jnp.array([1, 1, 0, 0, 1, 0])
    labels = jnp.array([1, 0, 0, 1, 1, 1])
    # TP = 2, FP = 1, FN = 2 -> 4 / (4 + 1 + 2)
    assert float(metrics.f1_binary(predictions, labels)) == pytest.approx(4 / 7)
    assert float(metrics.f1_binary(jnp.zeros(4, int), jnp.zeros(4, int))) == 0.0


@pytest.mark.parametrize(
    "predictions, labels, expected",
    [
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
        ([0, 0, 1, 1], [1, 1, 0, 0], -1.0),
        # TP=2, TN=1, FP=1, FN=1: (2·1 − 1·1) / sqrt(3·3·2·2) = 1/6
        ([1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 1 / 6),
        # TP=3, TN=2, FP=1, FN=0: (3·2 − 1·0) / sqrt(4·3·3·2) = 6 / sqrt(72)
        ([1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], 6 / np.sqrt(72)),
        # Degenerate: all labels one class, or all predictions one class -> 0 (not NaN).
        ([1, 0, 1, 0], [1, 1, 1, 1], 0.0),
        ([1, 1, 1, 1], [1, 0, 1, 0], 0.0),
        ([0, 0, 0], [0, 0, 0], 0.0),
    ],
)
def test_matthews_hand_computed(predictions, labels, expected):
    value = metrics.matthews_corrcoef(jnp.array(predictions), jnp.array(labels))
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_matthews_large_split_float32_precision():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100_000)
    predictions = np.where(rng.random(100_000) < 0.8, labels, 1 - labels)
    tp = np.sum((predictions == 1) & (labels == 1))
    tn = np.sum((predictions == 0) & (labels == 0))
    fp = np.sum((predictions == 1) & (labels == 0))
    fn = np.sum((predictions == 0) & (labels == 1))
    expected = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    value = metrics.matthews_corrcoef(jnp.array(predictions), jnp.array(labels))
    assert float(value) == pytest.approx(expected, abs=1e-5)


def test_pearson_and_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300).astype(np.float32)
    y = (0.6 * x + rng.normal(size=300)).astype(np.float32)
    x_tied = np.round(x * 2) / 2  # many ties
    y_tied = np.round(y).astype(np.float32)
    for a, b in ((x, y), (x_tied, y_tied), (x_tied, y)):
        assert float(metrics.pearson(jnp.array(a), jnp.array(b))) == pytest.approx(
            stats.pearsonr(a, b).statistic, abs=1e-5
        )
        assert float(metrics.spearman(jnp.array(a), jnp.array(b))) == pytest.approx(
            stats.spearmanr(a, b).statistic, abs=1e-5
        )


def test_average_ranks_match_scipy_rankdata():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    np.testing.assert_allclose(metrics.average_ranks(jnp.array(x)), stats.rankdata(x))


def test_correlations_degenerate_and_masked():
    constant = jnp.ones(5)
    other = jnp.arange(5.0)
    assert float(metrics.pearson(constant, other)) == 0.0
    assert float(metrics.spearman(other, constant)) == 0.0
    # Padding entries (mask 0) with wild values must not change the result.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=50), rng.normal(size=50)
    x_pad = np.concatenate([x, [1e3, -1e3, 7.0]])
    y_pad = np.concatenate([y, [-5.0, 1e3, 0.0]])
    mask = np.concatenate([np.ones(50), np.zeros(3)])
    for fn, ref in ((metrics.pearson, stats.pearsonr), (metrics.spearman, stats.spearmanr)):
        value = fn(jnp.array(x_pad), jnp.array(y_pad), mask=jnp.array(mask))
        assert float(value) == pytest.approx(ref(x, y).statistic, abs=1e-5)


def test_masked_matthews_and_f1_ignore_padding():
    predictions = jnp.array([1, 1, 1, 0, 0, 1, 1])
    labels = jnp.array([1, 1, 0, 1, 0, 0, 0])
    mask = jnp.array([1, 1, 1, 1, 1, 0, 0])
    assert float(metrics.matthews_corrcoef(predictions, labels, mask)) == pytest.approx(1 / 6, abs=1e-6)
    assert float(metrics.f1_binary(predictions, labels, mask)) == pytest.approx(4 / 6)


def test_metric_for_task_under_jit():
    assert metrics.metric_name_for_task("CoLA") == "matthews"
    assert metrics.metric_name_for_task("STS-B") == "pearson"
    assert metrics.metric_name_for_task("sst2") == "accuracy"
    assert metrics.metric_name_for_task("SST-2") == "accuracy"
    with pytest.raises(ValueError, match="no metric known"):
        metrics.metric_name_for_task("squad")

    logits = jnp.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.4], [1.0, 0.0]])
    labels = jnp.array([1, 0, 0, 0])
    cola = jax.jit(metrics.metric_for_task("cola"))
    expected = metrics.matthews_corrcoef(jnp.array([1, 0, 1, 0]), labels)
    assert float(cola(logits, labels)) == pytest.approx(float(expected))

    scores = jnp.array([[0.5], [2.0], [3.5], [1.0]])
    gold = jnp.array([1.0, 2.5, 4.0, 1.5])  # same order as the scores
    stsb = jax.jit(metrics.metric_for_task("stsb"))
    assert float(stsb(scores, gold)) == pytest.approx(stats.pearsonr(scores[:, 0], gold).statistic, abs=1e-6)
    both = metrics.glue_metrics("stsb", scores, gold)
    assert set(both) == {"pearson", "spearman"}
    assert float(both["spearman"]) == pytest.approx(1.0)
