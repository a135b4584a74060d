"""The mixed-supervision loss and its segmentation targets (Božič, Tabernik, Skočaj 2021).

``L = λ·γ·L_seg + (1-λ)·δ·L_cls``: a per-pixel weighted BCE on the 1/8-resolution segmentation
logits, switched off (γ = 0) for positives without a mask, plus a BCE on the image logit, with λ
moving the weight from segmentation to classification over training. Targets and weights follow
the authors' code, computed once per image before training.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DOWNSAMPLE_FACTOR = 8


def dilate_mask(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Grow a mask with a ``kernel``×``kernel`` square (a soft mask: grey dilation, a max filter).

    Defect borders are uncertain and often drawn tight; dilation gives the segmentation net a
    larger, easier target (the authors' ``DILATE``). ``kernel`` 0 or 1 leaves the mask as it is.
    """
    if kernel < 0:
        raise ValueError(f"dilate kernel must be >= 0, got {kernel}")
    if kernel <= 1:
        return mask
    return cv2.dilate(mask, np.ones((kernel, kernel), np.uint8))


def positive_pixel_weights(mask: np.ndarray, w_pos: float, p: float) -> np.ndarray:
    """Full-size loss weights: ``w_pos·(d/d_max)^p`` on defect pixels, 1 on background.

    ``d`` is the Euclidean distance to the nearest background pixel (OpenCV, exact), so pixels at
    the defect's uncertain border count little and its centre counts ``w_pos``. Defect pixels are
    those of at least one half: exactly the authors' rule for binary masks; for soft pseudo-masks,
    weaker pixels keep background weight while their soft target still counts.
    """
    support = (mask >= 0.5).astype(np.uint8)
    weights = np.ones(mask.shape, np.float32)
    if support.any():
        dist = cv2.distanceTransform(support, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        positive = support > 0
        weights[positive] = w_pos * (dist[positive] / dist.max()) ** p
    return weights


def downsample(maps: np.ndarray, factor: int = DOWNSAMPLE_FACTOR) -> np.ndarray:
    """H×W or N×H×W maps to 1/``factor``: the authors' reflection-padded average pool.

    The window is 2·factor+1 wide at stride ``factor``, so each output cell also sees half of its
    neighbours: a thin defect still leaves a (small) target in the cells beside it.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be H×W or N×H×W, got shape {maps.shape}")
    if maps.shape[-2] % factor or maps.shape[-1] % factor:
        raise ValueError(f"map size {maps.shape[-2]}x{maps.shape[-1]} is not a multiple of "
                         f"{factor}")
    x = torch.from_numpy(np.ascontiguousarray(maps)).reshape(-1, 1, *maps.shape[-2:])
    x = F.pad(x, (factor,) * 4, mode="reflect")
    pooled = F.avg_pool2d(x, kernel_size=2 * factor + 1, stride=factor)
    return pooled.reshape(*maps.shape[:-2], *pooled.shape[-2:]).numpy()


def segmentation_targets(
    masks: np.ndarray,
    *,
    dilate: int,
    w_pos: float,
    p: float,
    factor: int = DOWNSAMPLE_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and loss weights at 1/``factor`` for N×H×W masks in [0, 1] (binary or soft).

    Each mask is dilated, its weights are computed at full size, then both are average-pooled to
    the logits' resolution (as the authors do): a cell on the defect border gets a fractional
    target and a weight mixing background and border pixels, rather than the weight of whichever
    pixel a subsampling would pick. An all-zero mask (a negative) gives target 0 and weight 1.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be N×H×W, got shape {masks.shape}")
    if masks.size and (masks.min() < 0 or masks.max() > 1):
        raise ValueError(f"masks must lie in [0, 1], got values in "
                         f"[{masks.min()}, {masks.max()}]")
    n, height, width = masks.shape
    shape = (n, height // factor, width // factor)
    targets, weights = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    for i in np.flatnonzero(masks.any(axis=(1, 2))):
        mask = dilate_mask(masks[i].astype(np.float32), dilate)
        targets[i] = downsample(mask, factor)
        weights[i] = downsample(positive_pixel_weights(mask, w_pos, p), factor)
    return targets, weights


def segmentation_gamma(labels: np.ndarray, segmented: np.ndarray) -> np.ndarray:
    """γ per image: 0 only for a positive without a mask; a negative's all-zero target is known."""
    labels, segmented = np.asarray(labels), np.asarray(segmented, dtype=bool)
    if labels.shape != segmented.shape:
        raise ValueError(f"labels {labels.shape} and segmented {segmented.shape} differ in shape")
    return ((labels == 0) | segmented).astype(np.float32)


def loss_weights(
    epoch: int, epochs: int, delta: float, dynamic_balance: bool
) -> tuple[float, float]:
    """(segmentation weight, classification weight) for 0-based ``epoch`` of ``epochs``.

    Dynamically balanced: ``λ = 1 - epoch/epochs`` and ``(1-λ)·δ``, so the classifier starts once
    the segmentation has something to show; otherwise the authors' constant ``(1, δ)``.
    """
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
    if not dynamic_balance:
        return 1.0, delta
    lam = 1.0 - epoch / epochs
    return lam, (1.0 - lam) * delta


class LossTerms(NamedTuple):
    """Per-sample terms, shape [B]: the weighted total and its two unweighted parts."""

    total: torch.Tensor
    seg: torch.Tensor
    cls: torch.Tensor


def mixed_supervision_loss(
    cls_logits: torch.Tensor,
    labels: torch.Tensor,
    seg_logits: torch.Tensor | None,
    seg_targets: torch.Tensor | None,
    seg_weights: torch.Tensor | None,
    gamma: torch.Tensor | None,
    seg_weight: float,
    cls_weight: float,
) -> LossTerms:
    """``seg_weight·γ·L_seg + cls_weight·L_cls`` per sample, BCE with logits for both.

    ``L_seg`` is the mean over pixels of the weighted BCE (the authors' reduction). Without
    segmentation logits (an image classifier) only ``cls_weight·L_cls`` remains.
    """
    cls = F.binary_cross_entropy_with_logits(cls_logits.float(), labels.float(), reduction="none")
    if seg_logits is None:
        return LossTerms(cls_weight * cls, torch.zeros_like(cls), cls)
    if seg_targets is None or seg_weights is None or gamma is None:
        raise ValueError("segmentation logits need seg_targets, seg_weights and gamma")
    seg = F.binary_cross_entropy_with_logits(seg_logits.float(), seg_targets, reduction="none")
    seg = (seg * seg_weights).flatten(1).mean(dim=1)
    return LossTerms(seg_weight * gamma * seg + cls_weight * cls, seg, cls)
