"""Magnetic Tile (Huang et al. 2020): ``MagneticTile/MT_<Class>/Imgs/<name>.jpg`` + ``<name>.png``.

The label is the mask's (defective exactly when it has a defect pixel); the class folder's label
is kept as ``declared_label``, so the MT_Uneven images with an empty mask are reported rather
than hidden. There is no official split: a seeded split stratified by class and label.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset, read_mask
from kgl_utils.data.splits import stratified_split, train_first

CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven", "Free")
DEFECT_FREE = "Free"


def _locate(root: str | os.PathLike) -> Path:
    """Accept the folder holding ``MagneticTile/`` as well as ``MagneticTile/`` itself."""
    root = Path(root)
    for candidate in (root, root / "MagneticTile"):
        if all((candidate / f"MT_{name}" / "Imgs").is_dir() for name in CLASSES):
            return candidate
    raise DataError(f"magnetic_tile: {root} holds no MT_<Class>/Imgs folders for all of "
                    f"{', '.join(CLASSES)} (directly or under MagneticTile/)")


def magnetic_tile_table(root: str | os.PathLike) -> pd.DataFrame:
    base = _locate(root)
    rows = []
    for name in CLASSES:
        for image in sorted((base / f"MT_{name}" / "Imgs").glob("*.jpg")):
            mask = image.with_suffix(".png")
            rows.append(dict(id=f"{name}/{image.stem}", split="", image_path=str(image),
                             mask_path=str(mask), label=int(read_mask(mask).any()),
                             is_segmented=True, declared_label=int(name != DEFECT_FREE),
                             group=name))
    if not rows:
        raise DataError(f"magnetic_tile: no images under {base}/MT_<Class>/Imgs")
    return pd.DataFrame(rows)


def load_magnetic_tile(
    root: str | os.PathLike, *, test_fraction: float = 0.3, seed: int = 0, channels: int = 1,
) -> DefectDataset:
    """Magnetic Tile with a seeded ``test_fraction`` held out per class (and label)."""
    table = magnetic_tile_table(root)
    table["split"] = stratified_split(table, test_fraction, seed, by=["group", "label"])
    return DefectDataset("magnetic_tile", train_first(table), channels)
