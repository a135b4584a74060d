"""How well a saliency map (or a segmentation output) points at the defect a person marked.

Used twice: for the knowledge priors of the primary network (is the prior worth learning from?)
and for the segmentation outputs of the final networks ("more concentrated and intelligible" as
a number). Each metric takes one H×W map in [0, 1] and one H×W mask in {0, 1}; only defective
images with a non-empty mask are scored, since every metric is undefined without a defect.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from kgl_utils.saliency.pseudo_masks import make_pseudo_masks

METRICS = ("auroc", "pointing_game", "energy_inside", "iou", "entropy")
"""Per-image metric columns of :func:`evaluate_saliency`, in table order."""


def _check_pair(saliency: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saliency = np.asarray(saliency, dtype=np.float64)
    mask = np.asarray(mask) > 0
    if saliency.ndim != 2 or saliency.shape != mask.shape:
        raise ValueError(f"saliency and mask must both be H×W of one size, got saliency "
                         f"{saliency.shape} and mask {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: saliency metrics are defined only for images with a "
                         "marked defect")
    return saliency, mask


def pixel_auroc(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of the map as a pixel classifier of the mask.

    NaN when the mask covers the whole image (no background pixel to rank against).
    """
    saliency, mask = _check_pair(saliency, mask)
    if mask.all():
        return float("nan")
    return float(roc_auc_score(mask.ravel(), saliency.ravel()))


def pointing_game(saliency: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """A hit when the map's maximum lies inside the mask grown by ``tolerance`` pixels.

    With ties every maximal pixel must be inside, so a flat map is never a lucky hit.
    (Zhang et al. 2018 use a 15-pixel tolerance at ImageNet scale.)
    """
    saliency, mask = _check_pair(saliency, mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if tolerance > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return bool(mask[saliency == saliency.max()].all())


def energy_inside(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass that falls inside the mask; NaN for an all-zero map."""
    saliency, mask = _check_pair(saliency, mask)
    total = saliency.sum()
    if total <= 0:
        return float("nan")
    return float(saliency[mask].sum() / total)


def mask_iou(binary: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of a binary (pseudo-)mask with the ground-truth mask.

    A soft pseudo-mask counts where it is at least 0.5.
    """
    binary, mask = _check_pair(binary, mask)
    binary = binary >= 0.5
    return float((binary & mask).sum() / (binary | mask).sum())


def saliency_entropy(saliency: np.ndarray) -> float:
    """Entropy of the map read as a distribution over pixels, divided by its maximum log(H·W).

    0 means all mass on one pixel, 1 a flat map: lower is more concentrated. NaN for an
    all-zero map.
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim != 2:
        raise ValueError(f"saliency must be H×W, got shape {saliency.shape}")
    if (saliency < 0).any():
        raise ValueError("saliency must be non-negative to be read as a distribution")
    total = saliency.sum()
    if total <= 0 or saliency.size < 2:
        return float("nan")
    p = saliency.ravel() / total
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(saliency.size))


def evaluate_saliency(
    maps: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray | None = None,
    ids: list[str] | None = None,
    binary: np.ndarray | None = None,
    tolerance: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a stack of N×H×W maps against N×H×W masks; returns (per-image table, summary).

    Only images with ``labels == 1`` (when given) and a non-empty mask are scored. ``binary``
    holds the pseudo-masks whose IoU is reported; without it each map is binarised with Otsu's
    threshold, the default pseudo-mask rule. The summary has one row per metric with its mean,
    standard deviation and the number of images that defined it.
    """
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be N×H×W of one size, got maps "
                         f"{maps.shape} and masks {masks.shape}")
    n = len(maps)
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} maps")
    keep = masks.reshape(n, -1).any(axis=1)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        keep &= labels == 1
    index = np.flatnonzero(keep)
    if binary is None:
        binary = make_pseudo_masks(maps[index], method="otsu")
    else:
        if np.shape(binary) != maps.shape:
            raise ValueError(f"binary must match maps {maps.shape}, got {np.shape(binary)}")
        binary = np.asarray(binary)[index]
    rows = []
    for k, i in enumerate(index):
        saliency, mask = maps[i].astype(np.float32), masks[i]
        rows.append({
            "id": ids[i],
            "auroc": pixel_auroc(saliency, mask),
            "pointing_game": float(pointing_game(saliency, mask, tolerance)),
            "energy_inside": energy_inside(saliency, mask),
            "iou": mask_iou(binary[k], mask),
            "entropy": saliency_entropy(saliency),
            "mask_fraction": float((mask > 0).mean()),
        })
    per_image = pd.DataFrame(rows, columns=["id", *METRICS, "mask_fraction"])
    return per_image, summarize_saliency(per_image)


def summarize_saliency(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric over the scored images."""
    metrics = per_image[list(METRICS)].astype(float)
    summary = metrics.agg(["mean", "std", "count"]).T
    summary["count"] = summary["count"].astype(int)
    summary.index.name = "metric"
    return summary
