"""Saliency metrics on hand-made maps and masks whose answers are known."""

import math

import numpy as np
import pytest

from kgl_utils.evaluation.saliency_metrics import (
    METRICS,
    energy_inside,
    evaluate_saliency,
    mask_iou,
    pixel_auroc,
    pointing_game,
    saliency_entropy,
)


@pytest.fixture
def square_mask():
    """An 8×8 mask with a 2×2 defect at rows 2-3, cols 2-3 (1/16 of the image)."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    return mask


def test_pixel_auroc_perfect_inverted_flat(square_mask):
    assert pixel_auroc(square_mask.astype(float), square_mask) == 1.0
    assert pixel_auroc(1.0 - square_mask, square_mask) == 0.0
    assert pixel_auroc(np.full((8, 8), 0.3), square_mask) == 0.5
    assert math.isnan(pixel_auroc(np.random.rand(8, 8), np.ones((8, 8))))


def test_pixel_auroc_partial_ranking():
    # 1 positive pixel (value 0.5) against 3 negatives (0.0, 0.6, 1.0): it beats 1 of 3.
    saliency = np.array([[0.5, 0.0], [0.6, 1.0]])
    mask = np.array([[1, 0], [0, 0]])
    assert pixel_auroc(saliency, mask) == pytest.approx(1 / 3)


def test_pointing_game_hit_miss_and_tolerance(square_mask):
    saliency = np.zeros((8, 8))
    saliency[3, 3] = 1.0
    assert pointing_game(saliency, square_mask)
    saliency = np.zeros((8, 8))
    saliency[3, 5] = 1.0  # two columns right of the defect
    assert not pointing_game(saliency, square_mask)
    assert not pointing_game(saliency, square_mask, tolerance=1)
    assert pointing_game(saliency, square_mask, tolerance=2)


def test_pointing_game_flat_map_is_no_hit(square_mask):
    assert not pointing_game(np.ones((8, 8)), square_mask)


def test_energy_inside(square_mask):
    assert energy_inside(np.ones((8, 8)), square_mask) == pytest.approx(4 / 64)
    saliency = np.zeros((8, 8))
    saliency[2, 2], saliency[0, 0] = 3.0, 1.0
    assert energy_inside(saliency, square_mask) == pytest.approx(0.75)
    assert math.isnan(energy_inside(np.zeros((8, 8)), square_mask))


def test_mask_iou():
    truth = np.zeros((8, 8), np.uint8)
    truth[0:4, 0:4] = 1
    guess = np.zeros((8, 8), np.uint8)
    guess[2:6, 0:4] = 1  # overlap 8 pixels, union 24
    assert mask_iou(guess, truth) == pytest.approx(1 / 3)
    assert mask_iou(truth, truth) == 1.0
    assert mask_iou(np.zeros((8, 8)), truth) == 0.0
    assert mask_iou(truth * 0.6 + 0.3, truth) == 1.0  # a soft mask counts where >= 0.5


def test_saliency_entropy():
    one_hot = np.zeros((4, 4))
    one_hot[1, 2] = 1.0
    assert saliency_entropy(one_hot) == pytest.approx(0.0)
    assert saliency_entropy(np.full((4, 4), 0.7)) == pytest.approx(1.0)
    two = np.zeros((4, 4))
    two[0, 0] = two[3, 3] = 1.0
    assert saliency_entropy(two) == pytest.approx(np.log(2) / np.log(16))
    assert math.isnan(saliency_entropy(np.zeros((4, 4))))


def test_bad_input_is_refused(square_mask):
    with pytest.raises(ValueError, match="mask is empty"):
        pixel_auroc(np.ones((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\(8, 8\) and mask \(4, 4\)"):
        energy_inside(np.ones((8, 8)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(np.ones((8, 8)), square_mask, tolerance=-1)


def test_evaluate_saliency_scores_only_positives_with_masks(square_mask):
    perfect = square_mask.astype(np.float32)
    masks = np.stack([square_mask, square_mask, np.zeros((8, 8), np.uint8), square_mask])
    maps = np.stack([perfect, 1.0 - perfect, perfect, perfect])
    labels = np.array([1, 1, 1, 0])  # image 2 has no mask, image 3 is a negative
    per_image, summary = evaluate_saliency(maps, masks, labels, ids=["a", "b", "c", "d"])
    assert per_image["id"].tolist() == ["a", "b"]
    assert per_image["auroc"].tolist() == [1.0, 0.0]
    assert per_image["pointing_game"].tolist() == [1.0, 0.0]
    assert per_image["iou"].tolist() == [1.0, 0.0]  # Otsu of a binary map is the map
    assert per_image["mask_fraction"].tolist() == [1 / 16, 1 / 16]
    assert list(summary.index) == list(METRICS)
    assert summary.loc["auroc", "mean"] == 0.5
    assert summary.loc["energy_inside", "count"] == 2


def test_evaluate_saliency_uses_given_binary_masks(square_mask):
    maps = np.stack([square_mask.astype(np.float32)])
    binary = np.ones((1, 8, 8), np.uint8)
    per_image, _ = evaluate_saliency(maps, square_mask[None], binary=binary)
    assert per_image["iou"].item() == pytest.approx(4 / 64)
