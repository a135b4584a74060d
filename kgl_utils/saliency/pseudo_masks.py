"""Turn prior maps into segmentation targets for the final network.

The paper binarises each map with Otsu's threshold; a fixed or percentile threshold and the soft
map itself are the alternatives the study compares. The distance-transform weighting of positive
pixels is applied by the training loop to whatever mask it receives, as for human masks.
"""

from __future__ import annotations

import cv2
import numpy as np

PSEUDO_MASK_METHODS = ("otsu", "fixed", "percentile", "soft")


def otsu_mask(saliency: np.ndarray) -> np.ndarray:
    """Binary H×W uint8 mask: pixels above Otsu's threshold of the map quantised to 8 bits."""
    quantised = np.round(np.clip(saliency, 0.0, 1.0) * 255).astype(np.uint8)
    _, mask = cv2.threshold(quantised, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask


def make_pseudo_masks(
    maps: np.ndarray,
    method: str = "otsu",
    threshold: float | None = None,
    dilate: int = 0,
) -> np.ndarray:
    """Pseudo-masks for a stack of N×H×W maps in [0, 1].

    ``method``: ``otsu`` (per image), ``fixed`` (``map > threshold``, a value in [0, 1]),
    ``percentile`` (per image, ``map >`` its ``threshold``-th percentile, in (0, 100)) give uint8
    masks in {0, 1}; ``soft`` returns the maps as float32 targets. ``dilate`` grows each mask
    (a soft map: its maxima) by that many pixels, since saliency maps tend to cover only the most
    telling part of a defect.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be N×H×W, got shape {maps.shape}")
    if method not in PSEUDO_MASK_METHODS:
        raise ValueError(f"pseudo-mask method {method!r} is unknown; allowed: "
                         f"{', '.join(PSEUDO_MASK_METHODS)}")
    if method == "fixed" and (threshold is None or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"method 'fixed' needs threshold in [0, 1], got {threshold}")
    if method == "percentile" and (threshold is None or not 0.0 < threshold < 100.0):
        raise ValueError(f"method 'percentile' needs threshold (a percentile) in (0, 100), "
                         f"got {threshold}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    maps = maps.astype(np.float32)
    if len(maps) == 0:
        return maps if method == "soft" else maps.astype(np.uint8)
    if method == "otsu":
        masks = np.stack([otsu_mask(m) for m in maps])
    elif method == "fixed":
        masks = (maps > threshold).astype(np.uint8)
    elif method == "percentile":
        cut = np.percentile(maps.reshape(len(maps), -1), threshold, axis=1)
        masks = (maps > cut[:, None, None]).astype(np.uint8)
    else:
        masks = maps
    if dilate:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2)
        masks = np.stack([cv2.dilate(m, kernel) for m in masks])
    return masks
