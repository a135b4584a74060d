"""What a dataset holds, per split: counts, masks, native image sizes and label disagreements.

Sizes are read from the file headers (PIL opens lazily and does not decode the pixels), so a
summary of thousands of images takes seconds; the disagreements make visible where a dataset's
folders or metadata state a label that its masks contradict, instead of hiding it.
"""

from __future__ import annotations

import pandas as pd
from PIL import Image, UnidentifiedImageError

from kgl_utils.data.base import DataError, DefectDataset


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as err:
        raise DataError(f"{path}: image file is missing") from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable or corrupt image ({err})") from err
    return height, width


def disagreements(dataset: DefectDataset) -> pd.DataFrame:
    """The images whose declared label (folder or metadata) differs from the mask's label."""
    table = dataset.table
    if "declared_label" not in table.columns:
        return table.iloc[0:0]
    return table[table["declared_label"].notna() & (table["declared_label"] != table["label"])]


def summarize(dataset: DefectDataset) -> pd.DataFrame:
    """Per split: positives, negatives, positives with masks, native sizes, disagreements."""
    table = dataset.table
    sizes = pd.DataFrame([image_size(p) for p in table["image_path"]],
                         columns=["height", "width"], index=table.index)
    disagreeing = table.index.isin(disagreements(dataset).index)
    rows = []
    for split in dataset.splits:
        part = table["split"] == split
        rows_split, size = table[part], sizes[part]
        positive = rows_split["label"] == 1
        rows.append({
            "split": split,
            "images": int(part.sum()),
            "positives": int(positive.sum()),
            "negatives": int((~positive).sum()),
            "positives_with_masks": int((positive & rows_split["is_segmented"].astype(bool)).sum()),
            "min_height": int(size["height"].min()),
            "max_height": int(size["height"].max()),
            "min_width": int(size["width"].min()),
            "max_width": int(size["width"].max()),
            "distinct_shapes": int(len(size.drop_duplicates())),
            "disagreements": int((disagreeing & part).sum()),
        })
    return pd.DataFrame(rows)
