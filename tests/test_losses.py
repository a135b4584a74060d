"""Segmentation targets and weights on hand-made masks, the γ rule and the λ schedule."""

import math

import numpy as np
import pytest
import torch

from kgl_utils.losses import (
    dilate_mask,
    downsample,
    loss_weights,
    mixed_supervision_loss,
    positive_pixel_weights,
    segmentation_gamma,
    segmentation_targets,
)


def square_mask(size=12, top=3, left=3, side=5):
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_positive_weights_follow_distance_transform():
    # Inside a 5×5 square the distance to background is 1 on the rim, 2 next, 3 at the centre.
    weights = positive_pixel_weights(square_mask(), w_pos=3.0, p=2.0)
    assert weights[5, 5] == pytest.approx(3.0)  # centre: w_pos·(3/3)²
    assert weights[4, 5] == pytest.approx(3.0 * (2 / 3) ** 2)
    assert weights[3, 3] == pytest.approx(3.0 * (1 / 3) ** 2)  # rim
    assert weights[0, 0] == 1.0 and weights[8, 5] == 1.0  # background
    assert (weights[square_mask() == 0] == 1.0).all()


def test_positive_weights_of_soft_and_empty_masks():
    soft = square_mask().astype(np.float32) * 0.9
    soft[0, 0] = 0.3  # below one half: background weight, though its target is soft
    weights = positive_pixel_weights(soft, w_pos=2.0, p=1.0)
    assert weights[0, 0] == 1.0 and weights[5, 5] == pytest.approx(2.0)
    assert (positive_pixel_weights(np.zeros((8, 8)), 5.0, 2.0) == 1.0).all()


def test_dilate_mask_grows_by_the_kernel():
    mask = np.zeros((9, 9), np.uint8)
    mask[4, 4] = 1
    assert dilate_mask(mask, 3).sum() == 9 and dilate_mask(mask, 3)[3:6, 3:6].all()
    assert dilate_mask(mask, 1) is mask and dilate_mask(mask, 0) is mask
    with pytest.raises(ValueError, match="dilate kernel"):
        dilate_mask(mask, -1)


def test_downsample_is_the_authors_overlapping_average_pool():
    mask = np.zeros((32, 32), np.float32)
    mask[:8, :8] = 1
    small = downsample(mask)
    assert small.shape == (4, 4)
    # Cell (0, 0) averages rows/cols -8..8 reflected: rows 8..1, 0, 1..8 -> 15 of 17 are < 8.
    assert small[0, 0] == pytest.approx(15 * 15 / 17**2)
    # Cell (0, 1) covers columns 0..16: 8 of them are defect, rows as before.
    assert small[0, 1] == pytest.approx(15 * 8 / 17**2)
    assert small[2:, 2:].max() == 0
    assert np.allclose(downsample(np.ones((3, 64, 48))), 1.0)
    with pytest.raises(ValueError, match="multiple of 8"):
        downsample(np.zeros((30, 32)))


def test_segmentation_targets_at_one_eighth():
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[1, 20:30, 30:44] = 1
    targets, weights = segmentation_targets(masks, dilate=5, w_pos=2.0, p=1.0)
    assert targets.shape == weights.shape == (2, 8, 8)
    # The negative: target 0 and weight 1 everywhere.
    assert (targets[0] == 0).all() and (weights[0] == 1).all()
    # The positive: the dilated mask and its full-size weights, both pooled.
    dilated = dilate_mask(masks[1], 5)
    assert dilated.sum() == 14 * 18
    assert np.allclose(targets[1], downsample(dilated))
    assert np.allclose(weights[1], downsample(positive_pixel_weights(dilated, 2.0, 1.0)))
    assert targets[1].max() > 0.5 and targets[1][0, 0] == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmentation_targets(masks * 2, dilate=1, w_pos=1.0, p=1.0)


def test_gamma_is_zero_only_for_positives_without_mask():
    gamma = segmentation_gamma(np.array([0, 0, 1, 1]), np.array([False, True, False, True]))
    assert gamma.tolist() == [1.0, 1.0, 0.0, 1.0]


def test_dynamic_balance_schedule():
    assert loss_weights(0, 4, delta=0.5, dynamic_balance=True) == (1.0, 0.0)
    assert loss_weights(1, 4, delta=0.5, dynamic_balance=True) == pytest.approx((0.75, 0.125))
    assert loss_weights(3, 4, delta=0.5, dynamic_balance=True) == pytest.approx((0.25, 0.375))
    assert loss_weights(2, 4, delta=0.5, dynamic_balance=False) == (1.0, 0.5)
    with pytest.raises(ValueError, match="epoch must be in"):
        loss_weights(4, 4, delta=1.0, dynamic_balance=True)


def test_mixed_supervision_loss_values():
    cls_logits = torch.tensor([0.0, 2.0])
    labels = torch.tensor([0.0, 1.0])
    seg_logits = torch.zeros(2, 1, 2, 2)
    targets = torch.zeros(2, 1, 2, 2)
    weights = torch.ones(2, 1, 2, 2)
    weights[0, 0, 0, 0] = 3.0  # mean weight 1.5 for sample 0
    gamma = torch.tensor([1.0, 0.0])
    terms = mixed_supervision_loss(cls_logits, labels, seg_logits, targets, weights, gamma,
                                   seg_weight=0.75, cls_weight=0.5)
    log2 = math.log(2)
    cls1 = math.log(1 + math.exp(-2.0))
    assert terms.seg.tolist() == pytest.approx([1.5 * log2, log2])
    assert terms.cls.tolist() == pytest.approx([log2, cls1])
    # Sample 1 has γ = 0: its segmentation term does not count.
    assert terms.total.tolist() == pytest.approx([0.75 * 1.5 * log2 + 0.5 * log2, 0.5 * cls1])
    only_cls = mixed_supervision_loss(cls_logits, labels, None, None, None, None, 0.0, 0.5)
    assert only_cls.total.tolist() == pytest.approx([0.5 * log2, 0.5 * cls1])
