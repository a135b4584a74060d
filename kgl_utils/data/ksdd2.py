"""KolektorSDD2 (Božič et al. 2021): ``train/`` and ``test/`` with ``<id>.png`` + ``<id>_GT.png``.

Colour images; an image is positive when its ground-truth mask has a defect pixel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset, read_mask
from kgl_utils.data.splits import apply_split_file, read_split_file

SPLITS = ("train", "test")


def ksdd2_table(root: str | os.PathLike) -> pd.DataFrame:
    root = Path(root)
    rows = []
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"ksdd2: {folder} is not a folder (expected train/ and test/ "
                            f"under the root)")
        for image in sorted(p for p in folder.glob("*.png") if not p.stem.endswith("_GT")):
            mask = image.with_name(f"{image.stem}_GT.png")
            rows.append(dict(id=image.stem, split=split, image_path=str(image),
                             mask_path=str(mask), label=int(read_mask(mask).any()),
                             is_segmented=True))
    if not rows:
        raise DataError(f"ksdd2: no images under {root} (expected <split>/<id>.png with "
                        f"<id>_GT.png)")
    return pd.DataFrame(rows)


def load_ksdd2(
    root: str | os.PathLike, *, split_file: str | os.PathLike | None = None, channels: int = 3,
) -> DefectDataset:
    """KolektorSDD2; an official ``split_file`` (``split_{N}.pyb``) selects images and flags."""
    table = ksdd2_table(root)
    if split_file is not None:
        official = read_split_file(split_file, "ksdd2")
        key = table["id"].map(lambda s: str(int(s)) if s.isdigit() else s)
        table = apply_split_file(table, official, key, split_file, native_split=True)
    return DefectDataset("ksdd2", table, channels)
