"""The ``folder`` dataset: a user's own images in good/ and defect/ folders (optional masks/,
optional fixed train/ and test/), or a CSV manifest; and every way such input can be wrong."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
from conftest import open_study
from fixtures_data import picture, write, write_folder

from kgl_utils.data import load_dataset
from kgl_utils.data.base import DataError
from kgl_utils.stages.data_preparation import split_record
from kgl_utils.units.priors import prior_maps


def counts(dataset, split):
    rows = dataset.split(split)
    return int(rows["label"].sum()), int((rows["label"] == 0).sum())


def test_folders_with_some_masks_and_a_seeded_split(tmp_path):
    root = write_folder(tmp_path / "parts", good=6, defect=6, masked=4,
                        suffixes=(".png", ".jpg", ".bmp", ".tif"))
    dataset = load_dataset("folder", root, seed=0)
    table = dataset.table.set_index("id")
    assert dataset.name == "folder" and dataset.channels == 1
    assert len(table) == 12 and int(table["label"].sum()) == 6
    assert table.loc["defect/d00", "is_segmented"] and table.loc["defect/d03", "is_segmented"]
    assert not table.loc["defect/d04", "is_segmented"] and table.loc["defect/d04", "label"] == 1
    assert not table.loc["good/g00", "is_segmented"] and table.loc["good/g00", "label"] == 0
    assert table.loc["good/g01", "image_path"].endswith("g01.jpg")
    # stratified by label: ceil(0.3 * 12) = 4 test images, 2 of each class
    assert counts(dataset, "test") == (2, 2) and counts(dataset, "train") == (4, 4)
    assert dataset.splits == ["train", "test"]
    assert dataset.table.equals(load_dataset("folder", root, seed=0).table)
    other_seed = load_dataset("folder", root, seed=1)
    assert set(dataset.split("test")["id"]) != set(other_seed.split("test")["id"])
    assert counts(load_dataset("folder", root, test_fraction=0.5), "test") == (3, 3)
    # masks decode aligned with their images; an unmasked positive has an all-zero mask
    train = dataset.load_split("train", (20, 16), progress=False)
    for image, mask, label, segmented in zip(train.images[..., 0], train.masks, train.labels,
                                             train.is_segmented):
        assert mask.any() == bool(segmented)
        if segmented:
            assert label == 1 and image[mask == 1].mean() > 150 > image[mask == 0].mean()


def test_mask_suffix_names_the_masks(tmp_path):
    root = write_folder(tmp_path / "parts", good=3, defect=3, mask_suffix="_mask")
    dataset = load_dataset("folder", root, mask_suffix="_mask")
    assert dataset.table["is_segmented"].sum() == 3
    with pytest.raises(DataError, match=r"mask .*d00_mask.png belongs to no image of"):
        load_dataset("folder", root)
    with pytest.raises(DataError, match=r"mask .*d00_mask.png does not end in mask_suffix '_m'"):
        load_dataset("folder", root, mask_suffix="_m")


def test_fixed_train_and_test_folders(tmp_path):
    root = tmp_path / "parts"
    write_folder(root / "train", good=4, defect=3)
    write_folder(root / "test", good=2, defect=2, masked=0)
    dataset = load_dataset("folder", root, channels=3)
    assert counts(dataset, "train") == (3, 4) and counts(dataset, "test") == (2, 2)
    table = dataset.table.set_index("id")
    assert table.loc["train/defect/d00", "split"] == "train"
    assert table.loc["test/good/g00", "split"] == "test"
    assert not dataset.split("test")["is_segmented"].any()
    assert dataset.load_split("test", (20, 16), progress=False).images.shape == (4, 20, 16, 3)
    with pytest.raises(DataError, match=r"test_fraction=0.2 given, but .*parts fixes the split"):
        load_dataset("folder", root, test_fraction=0.2)


def test_csv_manifest_relative_and_absolute_paths(tmp_path):
    images = write_folder(tmp_path / "elsewhere", good=3, defect=3, masked=2)
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "parts.csv"
    lines = ["image,label,mask,split"]
    for i, split in enumerate(["train", "train", "test"]):
        lines.append(f"../elsewhere/good/g{i:02d}.png,{'good' if i else 0},,{split}")
        mask = f"{images}/masks/d{i:02d}.png" if i < 2 else ""
        lines.append(f"{images}/defect/d{i:02d}.png,{'Defect' if i else 1},{mask},{split}")
    manifest.write_text("\n".join(lines) + "\n")
    dataset = load_dataset("folder", manifest)
    table = dataset.table.set_index("id")
    assert counts(dataset, "train") == (2, 2) and counts(dataset, "test") == (1, 1)
    assert table.loc["../elsewhere/good/g00.png", "label"] == 0
    assert table.loc[f"{images}/defect/d01.png", "is_segmented"]
    assert not table.loc[f"{images}/defect/d02.png", "is_segmented"]
    arrays = dataset.load_split("train", (20, 16), progress=False)
    assert arrays.masks.reshape(4, -1).any(axis=1).tolist() == arrays.is_segmented.tolist()
    # without a split column the split is drawn, as for folders
    unsplit = tmp_path / "lists" / "unsplit.csv"
    unsplit.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    drawn = load_dataset("folder", unsplit, seed=0, test_fraction=0.33)
    assert counts(drawn, "test") == (1, 1) and counts(drawn, "train") == (2, 2)


def test_no_masks_at_all_is_image_labels_only(tmp_path):
    root = write_folder(tmp_path / "parts", good=4, defect=4, masked=0)
    dataset = load_dataset("folder", root)
    assert not (root / "masks").exists() and not dataset.table["is_segmented"].any()
    assert dataset.load_split("train", (20, 16), progress=False).masks.sum() == 0


# Each bad input: how to break a good folder (6 good, 6 defect, 4 masks), and the message.
def _garbage(path):
    path.write_bytes(b"not an image")


def _resize_mask(root):
    wrong = np.zeros((10, 12), np.uint8)
    wrong[2:4, 2:4] = 255
    cv2.imwrite(str(root / "masks" / "d00.png"), wrong)


def _fixed(root, test_good):
    shutil.rmtree(root)
    write_folder(root / "train", good=3, defect=3)
    write_folder(root / "test", good=test_good, defect=2)
    (root / "test" / "good").mkdir(exist_ok=True)  # present, but maybe empty


@pytest.mark.parametrize("breakage, message", [
    (lambda r: _garbage(r / "good" / "g01.png"), r"good/g01.png: unreadable or corrupt image"),
    (lambda r: _garbage(r / "masks" / "d01.png"), r"masks/d01.png: unreadable or corrupt mask"),
    (_resize_mask, r"masks/d00.png: mask is 12x10 but its image .*defect/d00.png is 32x40"),
    (lambda r: (r / "defect" / "d02.png").unlink(),
     r"mask .*masks/d02.png belongs to no image of .*good or .*defect"),
    (lambda r: cv2.imwrite(str(r / "masks" / "d03.png"), np.zeros((40, 32), np.uint8)),
     r"masks/d03.png: mask has no defect pixel, but its image .*d03.png is a defect image"),
    (lambda r: write(r / "masks" / "g00.png", picture(True, (40, 32), 0)[1]),
     r"masks/g00.png: mask marks 104 defect pixels, but its image .*g00.png is defect-free"),
    (lambda r: [p.unlink() for p in (r / "defect").iterdir()],
     r"belongs to no image"),
    (lambda r: (shutil.rmtree(r / "masks"), [p.unlink() for p in (r / "defect").iterdir()]),
     r"folder: .*parts holds 0 defect images; a seeded split needs at least 2"),
    (lambda r: [p.unlink() for p in list((r / "good").iterdir())[1:]],
     r"folder: .*parts holds 1 good images; a seeded split needs at least 2"),
    (lambda r: shutil.rmtree(r / "good"), r"folder: .*parts/good is not a folder"),
    (lambda r: shutil.rmtree(r), r"folder: root .*parts is neither a folder nor a .csv"),
    (lambda r: [shutil.rmtree(r / f) for f in ("good", "defect", "masks")],
     r"folder: .*parts holds no good/ and defect/ folders"),
    (lambda r: (r / "train").mkdir(), r"holds both train/ and good/, defect/, masks/"),
    (lambda r: (r / "good" / "notes.txt").write_text("x"),
     r"good/notes.txt is not an image file \(.png, .jpg"),
    (lambda r: (r / "good" / "sub").mkdir(), r"good/sub is not an image file"),
    (lambda r: shutil.copy(r / "good" / "g00.png", r / "good" / "g00.bmp"),
     r"good/g00.bmp and .*good/g00.png share the name 'g00'; keep one"),
    (lambda r: shutil.copy(r / "defect" / "d00.png", r / "good" / "d00.png"),
     r"mask .*masks/d00.png matches two images, .*good/d00.png and .*defect/d00.png"),
    (lambda r: _fixed(r, test_good=0), r"the test split of .*parts holds 0 good images; every "
                                       r"split needs good and defect images"),
    (lambda r: (_fixed(r, test_good=1), shutil.rmtree(r / "test")),
     r"parts holds train/ but no test/; fixed splits need both"),
])
def test_bad_folder_is_named(tmp_path, breakage, message):
    root = write_folder(tmp_path / "parts", good=6, defect=6, masked=4)
    breakage(root)
    with pytest.raises(DataError, match=message):
        load_dataset("folder", root)


@pytest.mark.parametrize("content, message", [
    ("picture,label\na.png,1\n", r"parts.csv has columns \['picture', 'label'\]; expected image, "
                                 r"label and optionally mask, split"),
    ("image,label,masks\n", r"has columns \['image', 'label', 'masks'\]"),
    ("image,label\n", r"parts.csv: lists no images"),
    ("", r"parts.csv: not a readable CSV manifest"),
    ("image,label\nimg/good/g00.png,ok\n",
     r"parts.csv, line 2: label 'ok' is not one of 0, 1, good, defect"),
    ("image,label,split\nimg/good/g00.png,0,train\nimg/good/g01.png,0,val\n",
     r"parts.csv, line 3: split 'val' is not one of train, test"),
    ("image,label\nimg/good/g00.png,0\n,1\n", r"parts.csv, line 3: the image entry is empty"),
    ("image,label\nimg/good/g00.png,0\nimg/good/g00.png,0\n",
     r"line 3: image 'img/good/g00.png' is listed again \(first on line 2\)"),
    ("image,label\nimg/good/gone.png,0\n", r"img/good/gone.png: image file is missing"),
    ("image,label,mask\nimg/defect/d00.png,1,img/masks/gone.png\n",
     r"img/masks/gone.png: mask file is missing"),
])
def test_bad_manifest_is_named(tmp_path, content, message):
    write_folder(tmp_path / "img", good=2, defect=2)
    manifest = tmp_path / "parts.csv"
    manifest.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset("folder", manifest)
    with pytest.raises(DataError, match=r"folder: manifest .*missing.csv is missing"):
        load_dataset("folder", tmp_path / "missing.csv")


STUDY = {
    "study": "own", "seeds": [0], "device": "cpu", "profile": "t",
    "data": {"dataset": "folder", "channels": 1},
    "profiles": {"t": {"input_size": [128, 128], "epochs": 1, "batch_size": 4}},
    "prior": {"methods": ["gradcam"], "controls": ["oracle"]},
}


@pytest.mark.parametrize("masked, lacking", [(6, 0), (3, 3), (0, 6)])
def test_oracle_needs_a_mask_on_every_positive(tmp_path, masked, lacking):
    """The oracle prior is the human mask: with masks on some or no defect images it would
    train "no defect" on the others, so notebook 01 refuses it naming them."""
    write_folder(tmp_path / "data", good=6, defect=6, masked=masked)
    ctx = open_study(tmp_path, STUDY)
    if not lacking:
        assert split_record(ctx)["folds"]["None"]["splits"]["train"]
        oracle = prior_maps(ctx, "none", "train", 0, control="oracle")
        np.testing.assert_array_equal(oracle, ctx.arrays("train").masks)
        return
    refusal = re.escape("control oracle: dataset 'folder' has ") + \
        r"\d (train|test) positives without a human mask"
    with pytest.raises(DataError, match=refusal):
        split_record(ctx)
    with pytest.raises(DataError, match=refusal):  # a notebook run on its own refuses too
        prior_maps(ctx, "none", "train", 0, control="oracle")
    without = open_study(tmp_path, STUDY, prior={"methods": ["gradcam"], "controls": []})
    assert split_record(without)["folds"]["None"]["masked"] == {"0": {"0": []}}


@pytest.mark.parametrize("masked", [6, 3])
def test_splits_record_the_pseudo_masked_positives_where_they_differ(tmp_path, masked):
    """With the N_a-mask baselines on, notebook 01 records the human-masked positives; the KGL
    cells give pseudo-masks to N_a positives drawn from all of them. With 3 of 6 defect images
    masked the two choices differ, and the record holds both; with all masked they agree."""
    write_folder(tmp_path / "data", good=6, defect=6, masked=masked)
    ctx = open_study(tmp_path, STUDY, prior={"methods": ["gradcam"]},
                     ablation={"n_a": [0, 2], "priors": ["gradcam"]})
    record = split_record(ctx)["folds"]["None"]
    assert record["masked"]["0"]["2"] == ctx.masked(2, 0, with_mask=True)
    pseudo = ctx.masked(2, 0, with_mask=False)
    if masked == 6:
        assert "pseudo_masked" not in record and pseudo == record["masked"]["0"]["2"]
    else:
        assert record["pseudo_masked"]["0"] == {"0": [], "2": pseudo}
        assert record["pseudo_masked"]["0"]["2"] != record["masked"]["0"]["2"]
