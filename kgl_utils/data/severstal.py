"""Severstal steel defects: ``train_images/<id>.jpg`` with run-length-encoded masks in a csv.

As in the mixed-supervision paper, positives are the images with a class-3 defect and negatives
the images with no defect at all (absent from the csv); images with only other classes are left
out. The masks are decoded from the csv when an image is read, never written as files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.splits import apply_split_file, read_split_file, stratified_split, train_first

CSV_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]


def decode_rle(encoded: str, shape: tuple[int, int], source: str = "mask") -> np.ndarray:
    """Decode Kaggle run-length encoding (1-based starts, column-major) to H×W uint8 {0, 1}."""
    height, width = shape
    try:
        numbers = np.asarray(str(encoded).split(), dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{source}: EncodedPixels is not a list of integers ({err})") from err
    if len(numbers) % 2:
        raise DataError(f"{source}: EncodedPixels holds an odd count of numbers "
                        f"({len(numbers)}); expected start/length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if len(starts) and (starts.min() < 0 or lengths.min() < 1
                        or (starts + lengths).max() > height * width):
        raise DataError(f"{source}: EncodedPixels runs fall outside a {width}x{height} image")
    flat = np.zeros(height * width, np.uint8)
    for start, length in zip(starts, lengths):
        flat[start:start + length] = 1
    return flat.reshape((height, width), order="F")


class SeverstalDataset(DefectDataset):
    """Masks come from the ``encoded_pixels`` column, decoded at the image's own size."""

    def read_mask(self, row: pd.Series) -> np.ndarray | None:
        if not row["is_segmented"]:
            return None
        with Image.open(row["image_path"]) as image:
            width, height = image.size
        return decode_rle(row["encoded_pixels"], (height, width),
                          f"{row['mask_path']} ({row['id']})")


def severstal_table(root: str | os.PathLike, defect_class: int) -> pd.DataFrame:
    root = Path(root)
    csv, folder = root / "train.csv", root / "train_images"
    if not csv.is_file() or not folder.is_dir():
        raise DataError(f"severstal: expected {csv} and {folder}/")
    annotations = pd.read_csv(csv)
    if list(annotations.columns[:3]) != CSV_COLUMNS:
        raise DataError(f"severstal: {csv} has columns {list(annotations.columns)}; "
                        f"expected {CSV_COLUMNS}")
    wanted = annotations[annotations["ClassId"] == defect_class]
    wanted = wanted.groupby("ImageId")["EncodedPixels"].agg(" ".join)
    defective = set(annotations["ImageId"])
    rows = []
    for image in sorted(folder.glob("*.jpg")):
        if image.name in wanted.index:
            label, encoded = 1, wanted[image.name]
        elif image.name in defective:
            continue  # only other defect classes: neither positive nor defect-free
        else:
            label, encoded = 0, ""
        rows.append(dict(id=image.stem, split="", label=label, image_path=str(image),
                         mask_path=str(csv), is_segmented=bool(label), encoded_pixels=encoded))
    if not rows:
        raise DataError(f"severstal: no class-{defect_class} or defect-free images in {folder}")
    return pd.DataFrame(rows)


def load_severstal(
    root: str | os.PathLike, *, defect_class: int = 3,
    split_file: str | os.PathLike | None = None, test_fraction: float = 0.3, seed: int = 0,
    channels: int = 1,
) -> DefectDataset:
    """Severstal as a binary problem for ``defect_class`` (the paper's: 3).

    An official ``split_file`` (``STEEL/split_{P}_{N}.pyb``) gives train, test and validation;
    otherwise a seeded split stratified by label holds out ``test_fraction``.
    """
    if defect_class not in (1, 2, 3, 4):
        raise DataError(f"severstal: defect_class must be 1-4, got {defect_class!r}")
    table = severstal_table(root, defect_class)
    if split_file is not None:
        official = read_split_file(split_file, "severstal")
        table = apply_split_file(table, official, table["id"], split_file)
    else:
        table["split"] = stratified_split(table, test_fraction, seed)
        table = train_first(table)
    return SeverstalDataset("severstal", table, channels)
