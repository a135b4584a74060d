"""ELPV (Deitsch et al. 2019), as shipped by the ``elpv-dataset`` package: 2,624 electroluminescence
images of solar cells, each with a defect probability (0, 1/3, 2/3 or 1) and its module type.

Image labels only: a cell is defective when its probability reaches ``threshold``. The table is
built from ``labels.csv`` alone; the package's own loader decodes every image up front.
"""

from __future__ import annotations

import os
from pathlib import Path

import elpv_dataset
import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.splits import stratified_split, train_first

PACKAGE_DATA = Path(elpv_dataset.__file__).parent / "data"
"""The folder holding ``labels.csv`` and ``images/`` in the installed package."""


def elpv_table(root: str | os.PathLike, threshold: float) -> pd.DataFrame:
    labels = Path(root) / "labels.csv"
    if not labels.is_file():
        raise DataError(f"elpv: {labels} is missing (expected labels.csv beside images/)")
    table = pd.read_csv(labels, sep=r"\s+", header=None, names=["path", "probability", "type"])
    if table.empty or table["probability"].isna().any():
        raise DataError(f"elpv: {labels} must hold 'path probability type' on each line")
    paths = [Path(root) / p for p in table["path"]]
    return pd.DataFrame({
        "id": [p.stem for p in paths],
        "split": "",
        "label": (table["probability"] >= threshold).astype(int),
        "image_path": [str(p) for p in paths],
        "mask_path": None,
        "is_segmented": False,
        "probability": table["probability"],
        "module_type": table["type"],
    })


def load_elpv(
    root: str | os.PathLike | None = None, *, threshold: float = 0.5, test_fraction: float = 0.25,
    seed: int = 0, channels: int = 1,
) -> DefectDataset:
    """ELPV from ``root`` (default: the installed package's data), split by label and module
    type with a seeded ``test_fraction`` held out."""
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"elpv: threshold must be in (0, 1], got {threshold!r}")
    table = elpv_table(PACKAGE_DATA if root is None else root, threshold)
    table["split"] = stratified_split(table, test_fraction, seed, by=["label", "module_type"])
    return DefectDataset("elpv", train_first(table), channels)
