"""Bad input stops early with a message naming the file or parameter and the fault."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from fixtures_data import (
    write_dagm,
    write_ksdd,
    write_ksdd2,
    write_magnetic_tile,
    write_pickle,
    write_severstal,
)

from kgl_utils.data import load_dataset
from kgl_utils.data.base import DataError
from kgl_utils.data.summary import summarize

FOLDERS = {"kos01": [False, True], "kos02": [True, False]}


def test_unknown_dataset_name_lists_the_allowed_ones():
    with pytest.raises(DataError, match="dataset: unknown name 'kolektor'; allowed: synthetic, "
                                        "ksdd, ksdd2, dagm, severstal, magnetic_tile, elpv, "
                                        "folder"):
        load_dataset("kolektor", "x")


def test_unknown_option_lists_the_loaders_options(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'ksdd': unknown option\(s\) \['folds'\]; "
                                        r"allowed: fold$"):
        load_dataset("ksdd", tmp_path, folds=1)
    with pytest.raises(DataError, match=r"unknown option\(s\) \['n_pos'\]; allowed: n_train, "
                                        r"n_test, size, positive_fraction, progress"):
        load_dataset("synthetic", tmp_path, n_pos=3)


def test_root_and_split_file_only_where_they_make_sense(tmp_path):
    with pytest.raises(DataError, match="dataset 'ksdd2': root is required"):
        load_dataset("ksdd2", None)
    root = write_magnetic_tile(tmp_path / "mt")
    with pytest.raises(DataError, match="dataset 'magnetic_tile': split_file='s.pyb' given, but "
                                        "only ksdd, ksdd2, dagm and severstal have official"):
        load_dataset("magnetic_tile", root, split_file="s.pyb")


def test_corrupt_image_is_named(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", FOLDERS)
    bad = root / "kos01" / "Part0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    dataset = load_dataset("ksdd", root, fold=0)
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: unreadable or corrupt image"):
        dataset.load_split("train", (32, 16), progress=False)
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: unreadable or corrupt image"):
        summarize(dataset)


def test_corrupt_mask_is_named(tmp_path):
    root = write_ksdd2(tmp_path / "ksdd2", {"train": {"1": True}, "test": {"2": True}})
    bad = root / "train" / "1_GT.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: unreadable or corrupt mask"):
        load_dataset("ksdd2", root)


@pytest.mark.parametrize("dataset, write, missing", [
    ("ksdd", lambda r: write_ksdd(r, FOLDERS), "kos02/Part1_label.bmp"),
    ("ksdd2", lambda r: write_ksdd2(r, {"train": {"1": True}, "test": {"2": False}}),
     "test/2_GT.png"),
    ("magnetic_tile", lambda r: write_magnetic_tile(r),
     "MagneticTile/MT_Crack/Imgs/exp2_num_1.png"),
])
def test_missing_mask_is_named(tmp_path, dataset, write, missing):
    root = write(tmp_path / dataset)
    (root / missing).unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(root / missing))}: mask file is missing"):
        load_dataset(dataset, root)


def test_mask_of_another_size_is_named(tmp_path):
    root = write_ksdd(tmp_path / "ksdd", FOLDERS)
    mask = root / "kos01" / "Part1_label.bmp"
    wrong = np.zeros((10, 12), np.uint8)
    wrong[2:4, 2:4] = 255
    cv2.imwrite(str(mask), wrong)
    dataset = load_dataset("ksdd", root, fold=0)
    with pytest.raises(DataError, match=rf"{re.escape(str(mask))}: mask is 12x10 but its "
                                        r"image .*Part1.jpg is 24x64"):
        dataset.load_split("train", (32, 16), progress=False)


@pytest.mark.parametrize("dataset, prepare, message", [
    ("ksdd", lambda r: r.mkdir(), "ksdd: no images under .* \\(expected kosNN/PartK.jpg"),
    ("ksdd", lambda r: None, "ksdd: root .* is not a folder"),
    ("ksdd2", lambda r: [(r / s).mkdir(parents=True) for s in ("train", "test")],
     "ksdd2: no images under"),
    ("ksdd2", lambda r: r.mkdir(), "ksdd2: .*train is not a folder"),
    ("dagm", lambda r: [(r / "Class1" / s).mkdir(parents=True) for s in ("Train", "Test")],
     "dagm: no images under .*Class1"),
    ("severstal", lambda r: r.mkdir(), "severstal: expected .*train.csv"),
    ("magnetic_tile", lambda r: r.mkdir(), "magnetic_tile: .* holds no MT_<Class>/Imgs"),
    ("elpv", lambda r: r.mkdir(), "elpv: .*labels.csv is missing"),
])
def test_empty_dataset_is_named(tmp_path, dataset, prepare, message):
    root = tmp_path / "data"
    prepare(root)
    with pytest.raises(DataError, match=message):
        load_dataset(dataset, root)


def test_training_split_without_positives(tmp_path):
    root = write_ksdd2(tmp_path / "ksdd2", {"train": {"1": False, "2": False},
                                            "test": {"3": True}})
    with pytest.raises(DataError, match=r"dataset 'ksdd2': the training split has no positive "
                                        r"image \(2 images, all negative\)"):
        load_dataset("ksdd2", root)


def test_split_file_that_does_not_fit_the_data(tmp_path):
    root = write_dagm(tmp_path / "dagm", 1, {"Train": {"0001": True}, "Test": {"0002": True}})
    split_file = write_pickle(tmp_path / "split_0.pyb", (
        [[("0001.PNG", True), ("0007.PNG", False)]] * 10, [[("0002.PNG", True)]] * 10))
    with pytest.raises(DataError, match=r"split_0.pyb: 1 train entries match no image, "
                                        r"e.g. \['0007.PNG'\]"):
        load_dataset("dagm", root, split_file=split_file)


def test_severstal_csv_with_other_columns(tmp_path):
    root = write_severstal(tmp_path / "steel", {"a": [3], "b": []})
    (root / "train.csv").write_text("ImageId_ClassId,EncodedPixels\na.jpg_3,1 2\n")
    with pytest.raises(DataError, match=r"train.csv has columns \['ImageId_ClassId', "
                                        r"'EncodedPixels'\]; expected \['ImageId', 'ClassId'"):
        load_dataset("severstal", root)
