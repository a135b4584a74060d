"""Image metrics on hand-made scores whose values are worked out by hand below."""

import numpy as np
import pytest

from kgl_utils.evaluation.image_metrics import image_metrics

# Ranked by score: 0.9 (+), 0.8 (+), 0.4 (-), 0.35 (-), 0.3 (+), 0.1 (-).
LABELS = [0, 0, 0, 1, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8, 0.3, 0.9]


def test_metrics_match_hand_computation():
    m = image_metrics(LABELS, SCORES)
    # AP: recall steps of 1/3 at precisions 1, 1 and 3/5.
    assert m.ap == pytest.approx((1 + 1 + 0.6) / 3)
    # Trapezoid AP over the curve's points (recall, precision), thresholds 0.9 … 0.1:
    # (0, 1) (1/3, 1) (2/3, 1) (2/3, 2/3) (2/3, 1/2) (1, 3/5) (1, 1/2): two unit-height strips
    # of width 1/3, then the slope from 1/2 to 3/5 over 1/3: 2/3 + 0.55/3 = 0.85.
    assert m.ap_trapezoid == pytest.approx(0.85)
    # AUROC: 7 of 9 positive-negative pairs ranked right.
    assert m.auroc == pytest.approx(7 / 9)
    # Best F1 at threshold 0.8: TP 2, FP 0, FN 1 -> F1 0.8 (threshold 0.3 gives 0.75).
    assert m.f1 == pytest.approx(0.8)
    assert m.threshold == pytest.approx(0.8)
    assert (m.fp, m.fn) == (0, 1)
    assert m.accuracy == pytest.approx(5 / 6)
    # Calling every positive defective (threshold 0.3) lets through negatives 0.4 and 0.35.
    assert m.fp_at_fn0 == 2
    # At the fixed threshold 0.5 only 0.9 and 0.8 are called: no FP, one FN (0.3).
    assert (m.fp_at_half, m.fn_at_half) == (0, 1)
    assert (m.n_pos, m.n_neg) == (3, 3)
    assert set(m.as_dict()) >= {"ap", "auroc", "f1", "threshold", "fp", "fn", "fp_at_fn0"}


def test_perfect_separation():
    m = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert (m.ap, m.auroc, m.f1, m.accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert (m.fp, m.fn, m.fp_at_fn0) == (0, 0, 0)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [([1, 1], [0.2, 0.3], "only class 1"),
     ([0, 1], [0.2], "one length"),
     ([0, 2], [0.2, 0.3], "must be 0 or 1"),
     ([0, 1], [0.2, np.nan], "NaN")],
)
def test_bad_input_is_named(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        image_metrics(labels, scores)
