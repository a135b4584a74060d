"""KolektorSDD (Tabernik et al. 2019): ``kosNN/PartK.jpg`` with ``PartK_label.bmp`` beside it.

An image is positive exactly when its mask has a defect pixel. The paper's 3-fold cross-validation
splits by kos folder (one electrical commutator each), so no commutator is in train and test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset, read_mask
from kgl_utils.data.splits import apply_split_file, read_split_file, train_first

TEST_FOLDS = (
    (2, 8, 9, 10, 15, 19, 21, 25, 27, 28, 30, 37, 38, 41, 43, 46, 47),
    (1, 3, 4, 6, 11, 17, 22, 24, 29, 31, 32, 36, 39, 40, 42, 44, 48),
    (5, 7, 12, 13, 14, 16, 18, 20, 23, 26, 33, 34, 35, 45, 49, 50),
)
"""The kos folders tested in each fold of the mixed-supervision paper; each trains on the rest."""

EXCLUDED = ("kos21/Part7",)
"""Left out of training and evaluation by the mixed-supervision authors' loader, so every
published KolektorSDD number is without it."""


def test_folders(fold: int) -> set[str]:
    if fold not in range(len(TEST_FOLDS)):
        raise DataError(f"ksdd: fold must be 0, 1 or 2, got {fold!r}")
    return {f"kos{k:02d}" for k in TEST_FOLDS[fold]}


def ksdd_table(root: str | os.PathLike) -> pd.DataFrame:
    """Every part image of every kos folder, labelled by its mask (split left empty)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ksdd: root {root} is not a folder")
    rows = []
    for folder in sorted(p for p in root.glob("kos*") if p.is_dir()):
        for image in sorted(folder.glob("Part*.jpg")):
            if f"{folder.name}/{image.stem}" in EXCLUDED:
                continue
            mask = image.with_name(f"{image.stem}_label.bmp")
            rows.append(dict(id=f"{folder.name}/{image.stem}", split="", image_path=str(image),
                             mask_path=str(mask), label=int(read_mask(mask).any()),
                             is_segmented=True, group=folder.name))
    if not rows:
        raise DataError(f"ksdd: no images under {root} (expected kosNN/PartK.jpg with "
                        f"PartK_label.bmp)")
    return pd.DataFrame(rows)


def load_ksdd(
    root: str | os.PathLike, *, fold: int = 0, split_file: str | os.PathLike | None = None,
    channels: int = 1,
) -> DefectDataset:
    """KolektorSDD for one cross-validation ``fold`` (0-2).

    With an official ``split_file`` (``split_{P}_{N}.pyb``) its train and test folders for the
    fold are used and its fully-labelled flags kept in ``fully_labeled``.
    """
    test = test_folders(fold)
    table = ksdd_table(root)
    if split_file is not None:
        official = read_split_file(split_file, "ksdd", fold)
        table = apply_split_file(table, official, table["group"], split_file)
    else:
        table["split"] = ["test" if g in test else "train" for g in table["group"]]
    return DefectDataset("ksdd", train_first(table), channels)
