"""Figures the notebooks save; each returns the matplotlib Figure so a notebook can also show it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

MASK_COLOUR = np.array([1.0, 0.15, 0.1])


def overlay(image: np.ndarray, mask: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """An RGB float image with the mask (binary or soft, H×W in [0, 1]) tinted on top."""
    rgb = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(float)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if mask is None:
        return rgb
    weight = alpha * np.clip(mask.astype(np.float32), 0, 1)[..., None]
    return (1 - weight) * rgb + weight * MASK_COLOUR


def truth_title(masks: np.ndarray) -> str:
    """The title of a column of images with their masks; says so where there is none (ELPV)."""
    return "ground truth" if np.any(masks) else "image (no mask)"


def heatmap(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with a saliency map (H×W in [0, 1]) in the jet colour map on top."""
    base = overlay(image, None)
    colours = plt.get_cmap("jet")(np.clip(saliency.astype(np.float32), 0, 1))[..., :3]
    return (1 - alpha) * base + alpha * colours


def image_grid(
    panels: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str],
    column_titles: Sequence[str], cell_size: float = 2.0,
) -> plt.Figure:
    """A grid of RGB panels: one row per image, one column per view."""
    rows, cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols, cell_size * rows),
                             squeeze=False)
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                ax.imshow(np.clip(row[c], 0, 1), cmap="gray")
            if r == 0 and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=9)
        axes[r][0].text(-0.05, 0.5, row_titles[r], transform=axes[r][0].transAxes, fontsize=8,
                        ha="right", va="center", rotation=90)
    fig.tight_layout()
    return fig
