"""One interface for every dataset: a table of samples plus decoding, resizing and caching.

Each loader only builds the table (anomalib's contract: one row per image with ``id``, ``split``,
``label``, ``image_path``, ``mask_path``, ``is_segmented``); everything that turns rows into arrays
lives here, so that all datasets are resized, checked and cached the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgl_utils.results import save_npz

TABLE_COLUMNS = ["id", "split", "label", "image_path", "mask_path", "is_segmented"]
"""Required columns. Optional: ``declared_label`` (the label the dataset's folders or metadata
state, where it can disagree with the mask) and ``group`` (e.g. the KSDD kos folder)."""


class DataError(ValueError):
    """Bad input data; the message names the file or parameter and the fault."""


@dataclass(frozen=True)
class Sample:
    """One image at the configured size: ``image`` H×W×C uint8, ``mask`` H×W uint8 in {0, 1}."""

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    label: int


@dataclass(frozen=True)
class SplitArrays:
    """A whole split decoded at one size, so that an epoch never decodes again."""

    ids: list[str]
    images: np.ndarray  # N×H×W×C uint8
    masks: np.ndarray  # N×H×W uint8 in {0, 1}; all zero where an image has no mask
    labels: np.ndarray  # N int64 in {0, 1}
    is_segmented: np.ndarray  # N bool: a pixel mask exists for this image

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> SplitArrays:
        index = np.asarray(index, dtype=np.int64)
        return SplitArrays(
            ids=[self.ids[i] for i in index],
            images=self.images[index],
            masks=self.masks[index],
            labels=self.labels[index],
            is_segmented=self.is_segmented[index],
        )


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Decode an image file to H×W×C uint8 (RGB order for 3 channels)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file is missing")
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise DataError(f"{path}: unreadable or corrupt image (OpenCV could not decode it)")
    if channels == 1:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask file to H×W uint8 in {0, 1}; any non-zero pixel (any colour) is defect."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file is missing")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"{path}: unreadable or corrupt mask (OpenCV could not decode it)")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return (mask > 0).astype(np.uint8)


def check_mask_size(mask_path: str | os.PathLike, mask_shape: tuple[int, ...],
                    image_path: str | os.PathLike, image_shape: tuple[int, ...]) -> None:
    """Stop when a mask (height, width) does not cover its image pixel for pixel."""
    if tuple(mask_shape[:2]) != tuple(image_shape[:2]):
        raise DataError(f"{mask_path}: mask is {mask_shape[1]}x{mask_shape[0]} but its image "
                        f"{image_path} is {image_shape[1]}x{image_shape[0]}")


def resize_pair(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize image and mask to ``size`` = (height, width), keeping them aligned.

    The mask is area-averaged and any covered pixel kept, so a thin defect never vanishes.
    """
    height, width = size
    channels = image.shape[2]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if resized.ndim == 2:
        resized = resized[..., None]
    assert resized.shape[2] == channels
    if mask is None:
        return resized, None
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return resized, (small > 0).astype(np.uint8)


class DefectDataset:
    """A binary surface-defect dataset described by its table (see ``TABLE_COLUMNS``).

    Subclasses override ``read_image``/``read_mask`` only when their masks are not files
    (e.g. run-length encoded); the table stays the single description of the data.
    """

    def __init__(self, name: str, table: pd.DataFrame, channels: int):
        missing = [c for c in TABLE_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(f"dataset {name!r}: table lacks columns {missing}")
        if table.empty:
            raise DataError(f"dataset {name!r}: no images found")
        if table["id"].duplicated().any():
            dupes = table.loc[table["id"].duplicated(), "id"].head(3).tolist()
            raise DataError(f"dataset {name!r}: duplicate image ids, e.g. {dupes}")
        if channels not in (1, 3):
            raise DataError(f"dataset {name!r}: channels must be 1 or 3, got {channels}")
        self.name = name
        self.channels = channels
        self.table = table.reset_index(drop=True)
        self._cache: dict[tuple[str, tuple[int, int]], Sample] = {}

    def __repr__(self) -> str:
        counts = self.table.groupby("split")["label"].agg(["sum", "count"])
        parts = [f"{s}: {int(r['sum'])} pos / {int(r['count'] - r['sum'])} neg"
                 for s, r in counts.iterrows()]
        return f"{type(self).__name__}({self.name!r}, {'; '.join(parts)})"

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(self.table["split"]))

    def split(self, name: str) -> pd.DataFrame:
        rows = self.table[self.table["split"] == name]
        if rows.empty:
            raise DataError(f"dataset {self.name!r}: split {name!r} is empty "
                            f"(splits present: {self.splits})")
        return rows

    def read_image(self, row: pd.Series) -> np.ndarray:
        return read_image(row["image_path"], self.channels)

    def read_mask(self, row: pd.Series) -> np.ndarray | None:
        if not row["is_segmented"]:
            return None
        return read_mask(row["mask_path"])

    def sample(self, row: pd.Series, size: tuple[int, int]) -> Sample:
        """Decode, check and resize one row; cached in memory per (id, size)."""
        key = (row["id"], tuple(size))
        if key not in self._cache:
            image = self.read_image(row)
            mask = self.read_mask(row)
            if mask is not None:
                check_mask_size(row["mask_path"], mask.shape, row["image_path"], image.shape[:2])
            image, mask = resize_pair(image, mask, size)
            self._cache[key] = Sample(row["id"], image, mask, int(row["label"]))
        return self._cache[key]

    def load_split(
        self, split: str, size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> SplitArrays:
        """Decode a whole split at ``size``; with ``cache_dir`` the arrays are kept on disk."""
        rows = self.split(split)
        cache_file = None
        if cache_dir is not None:
            key = hashlib.sha1(
                pd.util.hash_pandas_object(rows[TABLE_COLUMNS].astype(str), index=False)
                .values.tobytes() + repr((tuple(size), self.channels)).encode()
            ).hexdigest()[:16]
            cache_file = Path(cache_dir) / f"{self.name}_{split}_{size[0]}x{size[1]}_{key}.npz"
            if cache_file.is_file():
                with np.load(cache_file) as z:
                    return SplitArrays(list(z["ids"]), z["images"], z["masks"], z["labels"],
                                       z["is_segmented"])
        samples = [self.sample(row, size) for _, row in tqdm(
            rows.iterrows(), total=len(rows), desc=f"{self.name}/{split}", disable=not progress)]
        arrays = SplitArrays(
            ids=[s.id for s in samples],
            images=np.stack([s.image for s in samples]),
            masks=np.stack([s.mask if s.mask is not None else np.zeros(size, np.uint8)
                            for s in samples]),
            labels=np.array([s.label for s in samples], dtype=np.int64),
            is_segmented=rows["is_segmented"].to_numpy(dtype=bool),
        )
        if cache_file is not None:
            save_npz(cache_file, ids=np.array(arrays.ids), images=arrays.images,
                     masks=arrays.masks, labels=arrays.labels, is_segmented=arrays.is_segmented)
        return arrays
