"""Each loader on tiny files written in its dataset's native layout: labels, splits, split files,
resizing, caching and the summary."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_data import (
    picture,
    write_dagm,
    write_elpv,
    write_ksdd,
    write_ksdd2,
    write_magnetic_tile,
    write_pickle,
    write_severstal,
)

from kgl_utils.data import DATASETS, load_dataset
from kgl_utils.data.base import DataError
from kgl_utils.data.ksdd import TEST_FOLDS
from kgl_utils.data.severstal import decode_rle
from kgl_utils.data.splits import choose_masked
from kgl_utils.data.summary import disagreements, summarize

KSDD_FOLDERS = {"kos01": [False, True, False], "kos02": [True, False],
                "kos05": [False, False, True], "kos07": [False, False]}


def counts(dataset, split):
    rows = dataset.split(split)
    return int(rows["label"].sum()), int((rows["label"] == 0).sum())


def test_registry_names_every_dataset():
    assert list(DATASETS) == ["synthetic", "ksdd", "ksdd2", "dagm", "severstal",
                              "magnetic_tile", "elpv", "folder"]


def test_ksdd_labels_from_masks_and_folds(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", KSDD_FOLDERS)
    fold0 = load_dataset("ksdd", root, fold=0)
    assert fold0.channels == 1
    assert set(fold0.split("test")["group"]) == {"kos02"}
    assert counts(fold0, "train") == (2, 6) and counts(fold0, "test") == (1, 1)
    assert fold0.table.set_index("id").loc["kos01/Part1", "label"] == 1
    assert fold0.splits == ["train", "test"]
    fold1 = load_dataset("ksdd", root, fold=1)
    assert set(fold1.split("test")["group"]) == {"kos01"}
    fold2 = load_dataset("ksdd", root, fold=2)
    assert set(fold2.split("test")["group"]) == {"kos05", "kos07"}
    # the three published test folds partition kos01..kos50
    assert sorted(k for fold in TEST_FOLDS for k in fold) == list(range(1, 51))
    with pytest.raises(DataError, match="ksdd: fold must be 0, 1 or 2, got 3"):
        load_dataset("ksdd", root, fold=3)


def test_ksdd_leaves_out_kos21_part7_as_the_authors_do(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", {"kos21": [True] + [False] * 7, "kos22": [True, False]})
    ids = set(load_dataset("ksdd", root, fold=0).table["id"])
    assert "kos21/Part7" not in ids and "kos21/Part6" in ids and len(ids) == 7 + 2


def test_ksdd_official_split_file(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", KSDD_FOLDERS)
    train = [[("kos01", True), ("kos05", False)], [("kos02", True)], [("kos05", True)]]
    test = [[("kos02", True)], [("kos01", True)], [("kos01", True)]]
    split_file = write_pickle(tmp_path / "split_2_1.pyb", (train, test))
    dataset = load_dataset("ksdd", root, split_file=split_file, fold=0)
    assert set(dataset.split("train")["group"]) == {"kos01", "kos05"}  # kos07 unused
    assert set(dataset.split("test")["group"]) == {"kos02"}
    assert choose_masked(dataset, [1], seed=0) == {1: ["kos01/Part1"]}
    with pytest.raises(DataError, match="N_a=2 but its official split file marks 1"):
        choose_masked(dataset, [2], seed=0)
    fold2 = load_dataset("ksdd", root, split_file=split_file, fold=2)
    assert choose_masked(fold2, [1], seed=5) == {1: ["kos05/Part2"]}


def test_ksdd2_colour_labels_and_split_file(tmp_path):
    root = write_ksdd2(tmp_path / "ksdd2", {
        "train": {"10001": True, "10002": False, "10003": True, "10004": False},
        "test": {"20001": True, "20002": False}})
    dataset = load_dataset("ksdd2", root)
    assert dataset.channels == 3
    assert counts(dataset, "train") == (2, 2) and counts(dataset, "test") == (1, 1)
    arrays = dataset.load_split("train", (24, 12), progress=False)
    assert arrays.images.shape == (4, 24, 12, 3)
    assert not np.array_equal(arrays.images[..., 0], arrays.images[..., 2])  # colour kept
    assert load_dataset("ksdd2", root, channels=1).load_split(
        "test", (24, 12), progress=False).images.shape == (2, 24, 12, 1)
    split_file = write_pickle(tmp_path / "split_1.pyb", [
        [(10001, False), (10002, True), (10003, True)], [(20001, True), (20002, True)]])
    official = load_dataset("ksdd2", root, split_file=split_file)
    assert official.split("train")["id"].tolist() == ["10001", "10002", "10003"]
    assert choose_masked(official, [1], seed=0) == {1: ["10003"]}


def test_dagm_one_class_label_files_and_split_file(tmp_path):
    root = write_dagm(tmp_path / "dagm", 3, {
        "Train": {"0001": True, "0002": False, "0003": False},
        "Test": {"0001": False, "0002": True}})
    write_dagm(root, 4, {"Train": {"0001": True}, "Test": {"0001": False}})
    dataset = load_dataset("dagm", root, dagm_class=3)
    assert counts(dataset, "train") == (1, 2) and counts(dataset, "test") == (1, 1)
    table = dataset.table.set_index("id")
    assert table.loc["test/0002", "mask_path"].endswith("Class3/Test/Label/0002_label.PNG")
    assert not table.loc["train/0002", "is_segmented"]
    assert len(load_dataset("dagm", root, dagm_class=4).table) == 2
    with pytest.raises(DataError, match="dagm_class must be 1..10, got 11"):
        load_dataset("dagm", root, dagm_class=11)
    # the file names repeat between Train and Test: each entry matches its own split only
    classes = [[]] * 10
    train, test = list(classes), list(classes)
    train[2] = [("0001.PNG", False), ("0002.PNG", True)]
    test[2] = [("0002.PNG", True)]
    split_file = write_pickle(tmp_path / "split_0.pyb", (train, test))
    official = load_dataset("dagm", root, dagm_class=3, split_file=split_file)
    assert official.table["id"].tolist() == ["train/0001", "train/0002", "test/0002"]
    assert choose_masked(official, [0], seed=0) == {0: []}


def test_severstal_class3_positives_and_rle_masks(tmp_path):
    root = write_severstal(tmp_path / "steel", {
        "a1": [3], "a2": [1, 3], "a3": [], "a4": [2], "a5": [], "a6": [3], "a7": [], "a8": []})
    dataset = load_dataset("severstal", root, test_fraction=0.5, seed=1)
    table = dataset.table.set_index("id")
    assert sorted(table.index) == ["a1", "a2", "a3", "a5", "a6", "a7", "a8"]  # a4: class 2 only
    assert table["label"].to_dict() == {"a1": 1, "a2": 1, "a3": 0, "a5": 0, "a6": 1, "a7": 0,
                                        "a8": 0}
    arrays = dataset.load_split("train", (32, 64), progress=False)
    for i, name in enumerate(arrays.ids):
        expected = picture(table.loc[name, "label"] == 1, (32, 64), seed=int(name[1]) - 1)[1]
        assert np.array_equal(arrays.masks[i], (expected > 0).astype(np.uint8)), name
    assert decode_rle("1 2 5 1", (2, 3)).tolist() == [[1, 0, 1], [1, 0, 0]]
    with pytest.raises(DataError, match="runs fall outside a 3x2 image"):
        decode_rle("6 2", (2, 3))
    split_file = write_pickle(tmp_path / "split_2_1.pyb", [
        [("a1", True), ("a3", True)], [("a2", True), ("a5", True)], [("a6", False)]])
    official = load_dataset("severstal", root, split_file=split_file)
    assert official.splits == ["train", "validation", "test"]
    assert official.split("validation")["id"].tolist() == ["a6"]


def test_magnetic_tile_declared_labels_and_stratified_split(tmp_path):
    root = write_magnetic_tile(tmp_path / "mt", per_class=4, empty_uneven=2)
    dataset = load_dataset("magnetic_tile", root, seed=0)
    assert len(load_dataset("magnetic_tile", root / "MagneticTile").table) == 24
    table = dataset.table
    assert int(table["label"].sum()) == 18 and int((table["declared_label"] == 0).sum()) == 4
    assert disagreements(dataset)["id"].tolist() == ["Uneven/exp4_num_0", "Uneven/exp4_num_1"]
    # stratified by class and label: every class is in both splits, and so is each kind of
    # Uneven image (empty mask or not)
    assert dataset.table.groupby(["group", "label"])["split"].nunique().eq(2).all()
    assert (table["split"] == "test").sum() == 8  # ceil(0.3 * 24)
    assert dataset.table.equals(load_dataset("magnetic_tile", root, seed=0).table)
    other_seed = load_dataset("magnetic_tile", root, seed=1)
    assert set(dataset.split("test")["id"]) != set(other_seed.split("test")["id"])
    summary = summarize(dataset).set_index("split")
    assert summary["disagreements"].sum() == 2 and summary["images"].sum() == 24
    assert summary["min_height"].min() == 40 and summary["max_width"].max() == 35


def test_elpv_threshold_and_split(tmp_path):
    probabilities = [0.0, 1 / 3, 2 / 3, 1.0] * 5
    root = write_elpv(tmp_path / "elpv", probabilities)
    dataset = load_dataset("elpv", root, seed=0)
    assert int(dataset.table["label"].sum()) == 10
    assert load_dataset("elpv", root, threshold=0.3).table["label"].sum() == 15
    assert set(dataset.table.columns) >= {"probability", "module_type"}
    assert not dataset.table["is_segmented"].any()
    assert len(dataset.split("test")) == 5
    arrays = dataset.load_split("test", (16, 16), progress=False)
    assert arrays.masks.sum() == 0 and arrays.images.shape == (5, 16, 16, 1)
    with pytest.raises(DataError, match=r"threshold must be in \(0, 1\], got 0"):
        load_dataset("elpv", root, threshold=0)


def test_elpv_installed_package_table():
    dataset = load_dataset("elpv", None)
    assert len(dataset.table) == 2624
    probabilities = dataset.table["probability"]
    assert int(dataset.table["label"].sum()) == int((probabilities >= 0.5).sum())
    assert set(dataset.table["module_type"]) == {"mono", "poly"}


def test_resize_keeps_image_and_mask_aligned(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", KSDD_FOLDERS)  # native heights 64 and 68
    dataset = load_dataset("ksdd", root, fold=0)
    arrays = dataset.load_split("train", (32, 16), progress=False)
    assert arrays.images.shape == (8, 32, 16, 1) and arrays.masks.shape == (8, 32, 16)
    for image, mask, label in zip(arrays.images[..., 0], arrays.masks, arrays.labels):
        assert mask.any() == bool(label)
        if label:
            assert image[mask == 1].mean() > 150 > image[mask == 0].mean()
            inner = mask.astype(bool) & (np.roll(mask, 1, 0) & np.roll(mask, -1, 0)
                                         & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)).astype(bool)
            assert image[inner].min() > 200  # the bright rectangle lies under the mask


def test_load_split_disk_cache_is_reused(tmp_path):
    root = write_ksdd2(tmp_path / "ksdd2", {"train": {"1": True, "2": False},
                                            "test": {"3": True}})
    cache = tmp_path / "cache"
    first = load_dataset("ksdd2", root).load_split("train", (16, 8), cache_dir=cache,
                                                   progress=False)
    assert len(list(cache.glob("ksdd2_train_16x8_*.npz"))) == 1
    dataset = load_dataset("ksdd2", root)
    for path in (root / "train").glob("*.png"):
        if not path.stem.endswith("_GT"):
            path.write_bytes(b"")  # a decode would now fail: the cache must answer
    again = dataset.load_split("train", (16, 8), cache_dir=cache, progress=False)
    assert again.ids == first.ids and np.array_equal(again.images, first.images)
    assert np.array_equal(again.masks, first.masks)
    with pytest.raises(DataError, match="unreadable or corrupt image"):
        dataset.load_split("train", (16, 16), cache_dir=cache, progress=False)


def test_summary_counts_and_sizes(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", KSDD_FOLDERS)
    summary = summarize(load_dataset("ksdd", root, fold=0))
    assert summary["split"].tolist() == ["train", "test"]
    train = summary.iloc[0]
    assert (train["positives"], train["negatives"], train["positives_with_masks"]) == (2, 6, 2)
    assert (train["min_height"], train["max_height"], train["min_width"]) == (64, 68, 24)
    assert train["distinct_shapes"] == 2 and train["disagreements"] == 0
    assert summary.iloc[1]["distinct_shapes"] == 1
    assert disagreements(load_dataset("ksdd", root)).empty
