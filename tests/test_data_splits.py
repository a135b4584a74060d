"""The mixed-supervision choice of N_a masked positives, split files and stratified splits."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.splits import (
    apply_split_file,
    choose_masked,
    read_split_file,
    stratified_split,
)


def table_dataset(n_pos: int = 40, n_neg: int = 20, unsegmented: int = 0,
                  fully_labeled: list[bool] | None = None) -> DefectDataset:
    """A train split of ``n_pos`` positives (the last ``unsegmented`` without a mask)."""
    rows = [dict(id=f"p{i:02d}", split="train", label=1, image_path=f"p{i}.png",
                 mask_path=f"p{i}_m.png", is_segmented=i < n_pos - unsegmented)
            for i in range(n_pos)]
    rows += [dict(id=f"n{i:02d}", split="train", label=0, image_path=f"n{i}.png",
                  mask_path=None, is_segmented=False) for i in range(n_neg)]
    rows += [dict(id="t0", split="test", label=1, image_path="t.png", mask_path="t_m.png",
                  is_segmented=True)]
    table = pd.DataFrame(rows)
    if fully_labeled is not None:
        table["fully_labeled"] = fully_labeled + [True] * (n_neg + 1)
    return DefectDataset("table", table, 1)


def test_choice_is_deterministic_nested_and_counted():
    dataset = table_dataset()
    chosen = choose_masked(dataset, [0, 5, 16, 40], seed=3)
    assert chosen == choose_masked(dataset, [0, 5, 16, 40], seed=3)
    assert [len(chosen[n]) for n in (0, 5, 16, 40)] == [0, 5, 16, 40]
    assert set(chosen[5]) <= set(chosen[16]) <= set(chosen[40])
    assert all(i.startswith("p") for i in chosen[40])
    assert choose_masked(dataset, [16], seed=4)[16] != chosen[16]
    # asking for one N_a alone gives the same set as asking within a list
    assert choose_masked(dataset, [16], seed=3)[16] == chosen[16]


def test_with_mask_both_ways():
    full = table_dataset()
    assert (choose_masked(full, [10], 0, with_mask=True)
            == choose_masked(full, [10], 0, with_mask=False))
    partial = table_dataset(n_pos=40, unsegmented=30)
    masked = choose_masked(partial, [10], 0, with_mask=True)[10]
    assert set(masked) == {f"p{i:02d}" for i in range(10)}
    anyone = choose_masked(partial, [10, 40], 0, with_mask=False)
    assert len(anyone[40]) == 40 and set(anyone[10]) <= set(anyone[40])
    with pytest.raises(DataError, match=r"N_a=11 exceeds the 10 train positives with a pixel "
                                        r"mask available \(masks required: True\)"):
        choose_masked(partial, [11], 0)
    with pytest.raises(DataError, match=r"N_a=41 exceeds the 40 train positives available "
                                        r"\(masks required: False\)"):
        choose_masked(partial, [41], 0, with_mask=False)
    with pytest.raises(DataError, match="N_a must be an integer >= 0"):
        choose_masked(partial, [-1], 0)


def test_official_split_flags_are_respected():
    flags = [i in (3, 7, 11) for i in range(40)]
    dataset = table_dataset(fully_labeled=flags)
    for seed in (0, 1):
        assert sorted(choose_masked(dataset, [3], seed)[3]) == ["p03", "p07", "p11"]
        assert sorted(choose_masked(dataset, [3], seed, with_mask=False)[3]) == [
            "p03", "p07", "p11"]
    assert choose_masked(dataset, [0, 3], 0, with_mask=False)[0] == []
    with pytest.raises(DataError, match="N_a=5 but its official split file marks 3 train "
                                        "positives fully labelled"):
        choose_masked(dataset, [5], 0)


def test_read_split_file_shapes(tmp_path):
    ksdd = tmp_path / "split_2_1.pyb"
    folds = [[("kos01", True), ("kos02", False)], [("kos03", True)], [("kos04", False)]]
    ksdd.write_bytes(pickle.dumps((folds, [[("kos09", True)]] * 3)))
    assert read_split_file(ksdd, "ksdd", 0) == {
        "train": {"kos01": True, "kos02": False}, "test": {"kos09": True}}
    assert read_split_file(ksdd, "ksdd", 2)["train"] == {"kos04": False}
    with pytest.raises(DataError, match=r"holds 3 ksdd lists; index 3 is not in 0..2"):
        read_split_file(ksdd, "ksdd", 3)
    ksdd2 = tmp_path / "split_1.pyb"
    ksdd2.write_bytes(pickle.dumps([[(10001, True), (10002, False)], [(20001, True)]]))
    assert read_split_file(ksdd2, "ksdd2") == {
        "train": {"10001": True, "10002": False}, "test": {"20001": True}}
    with pytest.raises(DataError, match=r"expected a sequence \(train, test, validation\)"):
        read_split_file(ksdd2, "severstal")
    bad = tmp_path / "bad.pyb"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="bad.pyb: not a readable split pickle"):
        read_split_file(bad, "ksdd2")
    with pytest.raises(DataError, match="missing.pyb: file is missing"):
        read_split_file(tmp_path / "missing.pyb", "ksdd2")
    with pytest.raises(DataError, match="split file kind 'kolektor' unknown"):
        read_split_file(ksdd2, "kolektor")


def test_apply_split_file_names_unmatched_entries():
    table = table_dataset().table
    official = {"train": {"p00": True, "n00": False}, "test": {"t0": True}}
    applied = apply_split_file(table, official, table["id"], "x.pyb")
    assert dict(zip(applied["id"], applied["split"])) == {"p00": "train", "n00": "train",
                                                          "t0": "test"}
    assert dict(zip(applied["id"], applied["fully_labeled"])) == {"p00": True, "n00": True,
                                                                  "t0": True}
    with pytest.raises(DataError, match=r"x.pyb: 1 test entries match no image, e.g. \['zz'\]"):
        apply_split_file(table, {"test": {"zz": True}}, table["id"], "x.pyb")


def test_stratified_split_is_seeded_and_stratified():
    table = pd.DataFrame({"label": [1] * 30 + [0] * 70, "kind": ["a", "b"] * 50})
    split = stratified_split(table, 0.3, seed=1)
    assert split.equals(stratified_split(table, 0.3, seed=1))
    assert not split.equals(stratified_split(table, 0.3, seed=2))
    assert (split == "test").sum() == 30
    assert ((split == "test") & (table["label"] == 1)).sum() == 9
    by_two = stratified_split(table, 0.3, seed=1, by=["label", "kind"])
    assert ((by_two == "test") & (table["kind"] == "a")).sum() == 15
    with pytest.raises(DataError, match="test_fraction must be in"):
        stratified_split(table, 1.5)
