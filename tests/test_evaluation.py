"""Image metrics on hand-made scores whose values are worked out by hand below."""

import numpy as np
import pandas as pd
import pytest

from kgl_utils.evaluation.image_metrics import (
    aggregate_folds,
    image_metrics,
    predictions_frame,
    write_predictions,
)

# Ranked by score: 0.9 (+), 0.8 (+), 0.4 (-), 0.35 (-), 0.3 (+), 0.1 (-).
LABELS = [0, 0, 0, 1, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8, 0.3, 0.9]


def test_metrics_match_hand_computation():
    m = image_metrics(LABELS, SCORES)
    # AP: recall steps of 1/3 at precisions 1, 1 and 3/5.
    assert m.ap == pytest.approx((1 + 1 + 0.6) / 3)
    # AUROC: 7 of 9 positive-negative pairs ranked right.
    assert m.auroc == pytest.approx(7 / 9)
    # Best F1 at threshold 0.8: TP 2, FP 0, FN 1 -> F1 0.8 (threshold 0.3 gives 0.75).
    assert m.f1 == pytest.approx(0.8)
    assert m.threshold == pytest.approx(0.8)
    assert (m.fp, m.fn) == (0, 1)
    assert m.accuracy == pytest.approx(5 / 6)
    # Calling every positive defective (threshold 0.3) lets through negatives 0.4 and 0.35.
    assert m.fp_at_fn0 == 2
    assert (m.n_pos, m.n_neg) == (3, 3)
    assert set(m.as_dict()) >= {"ap", "auroc", "f1", "threshold", "fp", "fn", "fp_at_fn0"}


def test_perfect_separation():
    m = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert (m.ap, m.auroc, m.f1, m.accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert (m.fp, m.fn, m.fp_at_fn0) == (0, 0, 0)


def test_aggregate_folds_averages_ap_and_sums_errors():
    a = image_metrics(LABELS, SCORES)
    b = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    agg = aggregate_folds([a, b])
    assert agg["ap"] == pytest.approx((a.ap + 1.0) / 2)
    assert agg["auroc"] == pytest.approx((7 / 9 + 1.0) / 2)
    assert (agg["fp"], agg["fn"], agg["fp_at_fn0"]) == (0, 1, 2)
    assert agg["accuracy"] == pytest.approx(1 - 1 / 10)
    assert agg["n_folds"] == 2
    with pytest.raises(ValueError, match="at least one fold"):
        aggregate_folds([])


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


def test_predictions_round_trip(tmp_path):
    frame = predictions_frame(["a", "b", "c"], [0, 1, 1], [0.1, 0.9, 0.6], method="kgl", seed=3)
    path = write_predictions(frame, tmp_path / "sub" / "predictions.csv")
    back = pd.read_csv(path)
    assert back.columns.tolist() == ["id", "label", "score", "method", "seed"]
    assert back["score"].tolist() == [0.1, 0.9, 0.6]
    assert (back["method"] == "kgl").all()
    assert not list(path.parent.glob(".*tmp"))
    with pytest.raises(ValueError, match="differ in length"):
        predictions_frame(["a"], [0, 1], [0.1, 0.2])
