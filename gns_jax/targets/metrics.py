"""Task metrics in jnp, usable inside ``jit`` on whole-split predictions (the P of the reward, Eq. 2–3).

The paper's metric per GLUE task (Table 8): Matthews correlation for CoLA, Pearson correlation for STS-B and
accuracy for the other six; ``glue_metrics`` adds the other usual GLUE numbers (F1 for MRPC/QQP, Spearman for
STS-B).

Every function takes an optional ``mask`` (1 = count the example, 0 = ignore it), so a split padded to a fixed
size (a whole number of batches) gives the metric of the real examples only. Degenerate inputs give 0 instead
of NaN, so a reward never turns NaN: Matthews correlation when all labels or all predictions are one class (as
scikit-learn), Pearson/Spearman when either side is constant, F1 when there is no positive label or
prediction.

Spearman correlation is the Pearson correlation of ranks; tied values get the average of the ranks they span
(as ``scipy.stats.spearmanr``), computed with two ``searchsorted`` calls on the sorted values — O(n log n).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp


def _weights(mask, like: jnp.ndarray) -> jnp.ndarray:
    if mask is None:
        return jnp.ones(like.shape[0], jnp.float32)
    return mask.astype(jnp.float32)


def _safe_divide(numerator: jnp.ndarray, denominator: jnp.ndarray) -> jnp.ndarray:
    """numerator / denominator, and 0 where the denominator is 0."""
    ok = denominator > 0
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), 0.0)


def predictions_from_logits(logits: jnp.ndarray) -> jnp.ndarray:
    """Class indices (argmax) of ``(n, num_labels)`` logits; the value itself when ``num_labels == 1``."""
    if logits.shape[-1] == 1:
        return logits[..., 0]
    return jnp.argmax(logits, axis=-1)


def accuracy(predictions: jnp.ndarray, labels: jnp.ndarray, mask=None) -> jnp.ndarray:
    """Fraction of examples whose predicted class equals the label."""
    w = _weights(mask, labels)
    return _safe_divide(jnp.sum(w * (predictions == labels)), jnp.sum(w))


def accuracy_from_logits(logits: jnp.ndarray, labels: jnp.ndarray, mask=None) -> jnp.ndarray:
    """Classification accuracy of ``(n, num_classes)`` logits."""
    return accuracy(jnp.argmax(logits, axis=-1), labels, mask)


def f1_binary(predictions: jnp.ndarray, labels: jnp.ndarray, mask=None, positive: int = 1) -> jnp.ndarray:
    """F1 of the ``positive`` class: 2·TP / (2·TP + FP + FN)."""
    w = _weights(mask, labels)
    pred_pos, true_pos = predictions == positive, labels == positive
    tp = jnp.sum(w * (pred_pos & true_pos))
    fp = jnp.sum(w * (pred_pos & ~true_pos))
    fn = jnp.sum(w * (~pred_pos & true_pos))
    return _safe_divide(2 * tp, 2 * tp + fp + fn)


def matthews_corrcoef(
    predictions: jnp.ndarray, labels: jnp.ndarray, mask=None, num_classes: int = 2
) -> jnp.ndarray:
    """Matthews correlation (multiclass form of Gorodkin 2004; the binary φ coefficient for two classes).

    With ``s`` examples, ``c`` correct, ``p_k`` / ``t_k`` predicted / true counts of class k:
    ``(c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))``, evaluated on frequencies (all counts divided
    by s) so float32 keeps its precision on large splits. 0 when all labels or all predictions are one class.
    """
    w = _weights(mask, labels)
    total = jnp.maximum(jnp.sum(w), 1.0)
    classes = jnp.arange(num_classes)
    pred_freq = jnp.sum(w[:, None] * (predictions[:, None] == classes), axis=0) / total
    true_freq = jnp.sum(w[:, None] * (labels[:, None] == classes), axis=0) / total
    correct_freq = jnp.sum(w * (predictions == labels)) / total
    numerator = correct_freq - jnp.dot(pred_freq, true_freq)
    denominator = jnp.sqrt(jnp.maximum(1.0 - jnp.sum(pred_freq**2), 0.0)) * jnp.sqrt(
        jnp.maximum(1.0 - jnp.sum(true_freq**2), 0.0)
    )
    return _safe_divide(numerator, denominator)


def pearson(x: jnp.ndarray, y: jnp.ndarray, mask=None) -> jnp.ndarray:
    """Pearson correlation; 0 when either side is constant."""
    w = _weights(mask, x)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    dx = x - jnp.sum(w * x) / n
    dy = y - jnp.sum(w * y) / n
    covariance = jnp.sum(w * dx * dy)
    return _safe_divide(covariance, jnp.sqrt(jnp.sum(w * dx * dx) * jnp.sum(w * dy * dy)))


def average_ranks(x: jnp.ndarray, mask=None) -> jnp.ndarray:
    """1-based ranks of ``x`` among the unmasked entries; ties share the average of their ranks.

    An entry equal to ``v`` spans ranks ``#(< v) + 1 .. #(≤ v)``; their mean is ``(#(< v) + #(≤ v) + 1) / 2``.
    Masked entries are sorted past every real value (so they do not count) and get meaningless ranks.
    """
    x = x.astype(jnp.float32)
    keys = x if mask is None else jnp.where(mask > 0, x, jnp.inf)
    sorted_keys = jnp.sort(keys)
    below = jnp.searchsorted(sorted_keys, x, side="left")
    at_or_below = jnp.searchsorted(sorted_keys, x, side="right")
    return (below + at_or_below + 1).astype(jnp.float32) / 2.0


def spearman(x: jnp.ndarray, y: jnp.ndarray, mask=None) -> jnp.ndarray:
    """Spearman rank correlation (Pearson on average ranks); 0 when either side is constant."""
    return pearson(average_ranks(x, mask), average_ranks(y, mask), mask)


# Each takes (predictions, labels, mask) — predictions as from ``predictions_from_logits``.
METRICS: dict[str, Callable[..., jnp.ndarray]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}

# The paper's metric per task (Table 8); then the other numbers usually reported for it.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews", "accuracy"),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    # image classification targets
    "fashion_mnist": ("accuracy",),
    "cifar10": ("accuracy",),
    "cifar100": ("accuracy",),
}


def _task_key(task: str) -> str:
    key = task.lower().replace("-", "").replace("_", "")
    for name in TASK_METRICS:
        if name.replace("_", "") == key:
            return name
    raise ValueError(f"no metric known for task {task!r}; known: {sorted(TASK_METRICS)}")


def metric_name_for_task(task: str) -> str:
    """'matthews' (CoLA), 'pearson' (STS-B) or 'accuracy' — the paper's metric for ``task``."""
    return TASK_METRICS[_task_key(task)][0]


def metric_for_task(task: str) -> Callable[..., jnp.ndarray]:
    """``fn(logits, labels, mask=None) -> scalar``: the paper's metric of ``task``, from model logits."""
    metric = METRICS[metric_name_for_task(task)]

    def from_logits(logits: jnp.ndarray, labels: jnp.ndarray, mask=None) -> jnp.ndarray:
        return metric(predictions_from_logits(logits), labels, mask)

    from_logits.__name__ = metric_name_for_task(task)
    return from_logits


def glue_metrics(task: str, logits: jnp.ndarray, labels: jnp.ndarray, mask=None) -> dict[str, jnp.ndarray]:
    """All usual metrics of ``task`` (the paper's first), keyed by name."""
    predictions = predictions_from_logits(logits)
    return {name: METRICS[name](predictions, labels, mask) for name in TASK_METRICS[_task_key(task)]}
