"""DAGM 2007: ``Class<K>/{Train,Test}/<name>.PNG``; positive when ``Label/<name>_label.PNG`` exists.

Each of the ten classes (a texture with its own defect) is its own binary problem, as in the
mixed-supervision paper; its masks are the loose ellipses DAGM publishes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.splits import apply_split_file, read_split_file

SPLITS = {"Train": "train", "Test": "test"}
N_CLASSES = 10


def dagm_table(root: str | os.PathLike, dagm_class: int) -> pd.DataFrame:
    if dagm_class not in range(1, N_CLASSES + 1):
        raise DataError(f"dagm: dagm_class must be 1..{N_CLASSES}, got {dagm_class!r}")
    base = Path(root) / f"Class{dagm_class}"
    rows = []
    for folder_name, split in SPLITS.items():
        folder = base / folder_name
        if not folder.is_dir():
            raise DataError(f"dagm: {folder} is not a folder (expected Class<K>/Train and "
                            f"Class<K>/Test)")
        for image in sorted(folder.glob("*.PNG")):
            mask = folder / "Label" / f"{image.stem}_label.PNG"
            positive = mask.is_file()
            rows.append(dict(id=f"{split}/{image.stem}", split=split, image_path=str(image),
                             mask_path=str(mask) if positive else None, label=int(positive),
                             is_segmented=positive, file_name=image.name))
    if not rows:
        raise DataError(f"dagm: no images under {base} (expected Train/<name>.PNG)")
    return pd.DataFrame(rows)


def load_dagm(
    root: str | os.PathLike, *, dagm_class: int = 1, split_file: str | os.PathLike | None = None,
    channels: int = 1,
) -> DefectDataset:
    """One DAGM class (1-10); an official ``split_file`` (``split_{N}.pyb``) selects and flags."""
    table = dagm_table(root, dagm_class)
    if split_file is not None:
        official = read_split_file(split_file, "dagm", dagm_class - 1)
        table = apply_split_file(table, official, table["file_name"], split_file,
                                 native_split=True)
    return DefectDataset("dagm", table, channels)
