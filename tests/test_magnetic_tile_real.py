"""The loader on the real Magnetic Tile archive (skipped where /work/shared/data is absent)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from kgl_utils.data import load_dataset
from kgl_utils.data.splits import choose_masked
from kgl_utils.data.summary import disagreements, summarize

ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/MagneticTile.tar.gz"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    if not ARCHIVE.is_file():
        pytest.skip(f"real Magnetic Tile archive not present at {ARCHIVE}")
    root = tmp_path_factory.mktemp("magnetic_tile")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return load_dataset("magnetic_tile", root, seed=0)


def test_counts_and_masks(dataset):
    table = dataset.table
    positives = table[table["label"] == 1]
    assert len(positives) == 388 and positives["is_segmented"].all()
    assert int((table["declared_label"] == 0).sum()) == 952  # MT_Free
    assert int((table["label"] == 0).sum()) == 952 + 4  # plus the empty-mask Uneven images


def test_empty_mask_uneven_images_are_reported(dataset):
    reported = disagreements(dataset)
    assert len(reported) == 4
    assert set(reported["group"]) == {"Uneven"}
    assert (reported["declared_label"] == 1).all() and (reported["label"] == 0).all()
    summary = summarize(dataset).set_index("split")
    assert summary["disagreements"].sum() == 4
    assert summary["distinct_shapes"].sum() > 500  # sizes vary: loaders must resize


def test_seeded_stratified_split(dataset):
    summary = summarize(dataset).set_index("split")
    assert summary.loc["train", "positives"] + summary.loc["test", "positives"] == 388
    assert summary.loc["test", "images"] == 404  # ceil(0.3 * 1344)
    assert 110 <= summary.loc["test", "positives"] <= 125
    assert len(choose_masked(dataset, [16, 271], seed=0)[271]) == summary.loc["train", "positives"]
