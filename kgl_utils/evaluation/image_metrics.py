"""Image-level detection metrics as the mixed-supervision paper reports them.

Scores are sigmoid outputs of the classification logit. AP (the paper's headline number) and
AUROC come from scikit-learn; the operating point is the threshold of best F1, where the paper
counts false positives and false negatives; FP at FN = 0 is the cost of missing no defect.
``ap_trapezoid`` is the area under the PR curve by the trapezoid rule (``auc(recall,
precision)``), the definition behind the published KolektorSDD2 and DAGM numbers: compare like
with like. FP and FN at the fixed threshold 0.5 sit beside the best-F1 ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


@dataclass(frozen=True)
class ImageMetrics:
    """One evaluation; ``as_dict`` gives a results-table row."""

    ap: float
    ap_trapezoid: float
    auroc: float
    f1: float
    threshold: float  # best-F1 threshold: a score >= threshold is called defective
    accuracy: float
    fp: int
    fn: int
    fp_at_fn0: int
    fp_at_half: int
    fn_at_half: int
    n_pos: int
    n_neg: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _check(labels: np.ndarray, scores: np.ndarray) -> None:
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"labels and scores must be vectors of one length, got shapes "
                         f"{labels.shape} and {scores.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)[:5]}")
    if labels.min() == labels.max():
        raise ValueError(f"labels hold only class {labels[0]}; AP and AUROC need positives "
                         f"and negatives")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")


def image_metrics(labels: Sequence[int] | np.ndarray,
                  scores: Sequence[float] | np.ndarray) -> ImageMetrics:
    """All image-level metrics for binary ``labels`` (1 = defective) and ``scores``."""
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    _check(labels, scores)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    ap_trapezoid = float(auc(recall, precision))
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    best = int(np.argmax(f1))
    threshold = float(thresholds[best])
    called = scores >= threshold
    positive = labels == 1
    fp, fn = int((called & ~positive).sum()), int((~called & positive).sum())
    fp_at_fn0 = int((scores[~positive] >= scores[positive].min()).sum())
    half = scores >= 0.5
    return ImageMetrics(
        ap=float(average_precision_score(labels, scores)), ap_trapezoid=ap_trapezoid,
        auroc=float(roc_auc_score(labels, scores)),
        f1=float(f1[best]), threshold=threshold,
        accuracy=float((called == positive).mean()),
        fp=fp, fn=fn, fp_at_fn0=fp_at_fn0,
        fp_at_half=int((half & ~positive).sum()), fn_at_half=int((~half & positive).sum()),
        n_pos=int(positive.sum()), n_neg=int((~positive).sum()),
    )
