"""The synthetic generator: deterministic, regenerated only when its parameters change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kgl_utils.data import load_dataset
from kgl_utils.data.base import DataError, read_mask
from kgl_utils.data.synthetic import MANIFEST, load_synthetic

SMALL = dict(n_train=12, n_test=6, size=(48, 64), positive_fraction=0.5, progress=False)


def test_same_parameters_give_the_same_files(tmp_path):
    first = load_synthetic(tmp_path / "a", seed=3, **SMALL)
    second = load_synthetic(tmp_path / "b", seed=3, **SMALL)
    assert first.table.drop(columns=["image_path", "mask_path"]).equals(
        second.table.drop(columns=["image_path", "mask_path"]))
    for name in ("train/train_0000.png", "test/test_0005.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = load_synthetic(tmp_path / "c", seed=4, **SMALL)
    a = first.load_split("train", (48, 64), progress=False)
    c = other.load_split("train", (48, 64), progress=False)
    assert not np.array_equal(a.images, c.images)


def test_regenerated_only_when_parameters_change(tmp_path):
    root = tmp_path / "synthetic"
    load_synthetic(root, seed=0, **SMALL)
    image = root / "train" / "train_0000.png"
    stamp = image.stat().st_mtime_ns
    load_dataset("synthetic", root, seed=0, **SMALL)
    assert image.stat().st_mtime_ns == stamp  # reused, not redrawn
    bigger = load_dataset("synthetic", root, seed=0, **{**SMALL, "n_train": 16})
    assert len(bigger.split("train")) == 16
    assert len(list((root / "train").glob("train_[0-9][0-9][0-9][0-9].png"))) == 16
    assert json.loads((root / MANIFEST).read_text())["n_train"] == 16
    resized = load_synthetic(root, seed=0, **{**SMALL, "size": (32, 40)})
    arrays = resized.load_split("test", (32, 40), progress=False)
    assert arrays.images.shape == (6, 32, 40, 1)


def test_masks_lie_inside_images_and_mark_the_defect(tmp_path):
    dataset = load_synthetic(tmp_path, seed=1, **SMALL)
    table = dataset.table
    assert table.groupby("split")["label"].sum().to_dict() == {"test": 3, "train": 6}
    assert (table["is_segmented"] == (table["label"] == 1)).all()
    for _, row in table[table["label"] == 1].iterrows():
        mask = read_mask(row["mask_path"])
        assert mask.shape == (48, 64) and mask.sum() > 20
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    assert table.loc[table["label"] == 0, "mask_path"].isna().all()


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(DataError, match="synthetic: n_train must be an integer >= 2, got 1"):
        load_synthetic(tmp_path, **{**SMALL, "n_train": 1})
    with pytest.raises(DataError, match=r"synthetic: positive_fraction must be in \(0, 1\)"):
        load_synthetic(tmp_path, **{**SMALL, "positive_fraction": 1.0})
