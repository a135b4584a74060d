"""Every preset's cpu profile trains: two epochs on fixture data of its dataset's layout, for
both protocols (image labels only, and pixel targets), with finite and decreasing loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fixtures_data import (
    write_dagm,
    write_elpv,
    write_folder,
    write_ksdd,
    write_ksdd2,
    write_magnetic_tile,
    write_pickle,
    write_severstal,
)

from kgl_utils.paths import LOSSES, REPO_ROOT, ROW
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import all_positives
from kgl_utils.units.cells import Cell, ensure_cell

PRESETS = sorted(p.stem for p in (REPO_ROOT / "params").glob("*.yaml")
                 if "cpu" in yaml.safe_load(p.read_text())["profiles"] and p.stem != "default")


def _split(n: int, prefix: str = "") -> dict[str, bool]:
    return {f"{prefix}{i:04d}": i % 3 == 0 for i in range(n)}


def write_fixture(dataset: str, root: Path) -> None:
    """About 48 training images, a third of them defective, in the dataset's own layout."""
    if dataset == "ksdd":  # fold 0 tests kos02 and kos08
        write_ksdd(root, {f"kos{k:02d}": [True, True] + [False] * 4 for k in (1, 3, 4, 6, 7, 9,
                                                                             10, 11, 2, 8)},
                   size=(120, 48))
    elif dataset == "ksdd2":
        write_ksdd2(root, {"train": _split(48), "test": _split(12, "t")}, size=(120, 48))
    elif dataset == "dagm":
        write_dagm(root, 1, {"Train": _split(48), "Test": _split(12)}, size=(96, 96))
    elif dataset == "severstal":  # with the official split file's validation list
        write_severstal(root, {f"im{i}": [3] if i % 3 == 0 else [] for i in range(64)},
                        size=(64, 128))
        lists = [[(f"im{i}", False) for i in part] for part in (range(40), range(40, 52),
                                                                range(52, 64))]
        write_pickle(root / "split.pyb", lists)  # train, test, validation
    elif dataset == "magnetic_tile":
        write_magnetic_tile(root, per_class=12, empty_uneven=2)
    elif dataset == "folder":  # masks for half the defect images
        write_folder(root, good=40, defect=20, masked=10, size=(96, 96))
    elif dataset == "elpv":
        write_elpv(root, [1.0 if i % 3 == 0 else 0.0 for i in range(64)], size=(96, 96))
    else:
        raise AssertionError(f"no fixture writer for {dataset}")


@pytest.mark.parametrize("preset", PRESETS)
def test_each_presets_cpu_profile_trains(preset, tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "params" / f"{preset}.yaml").read_text())
    write_fixture(raw["data"]["dataset"], tmp_path / "data")
    raw |= {"profile": "cpu", "seeds": [0], "device": "cpu"}
    raw["profiles"]["cpu"]["epochs"] = 2
    raw["data"] |= {"root": str(tmp_path / "data")}
    if raw["data"].get("folds"):
        raw["data"]["folds"] = [0]
    if (tmp_path / "data" / "split.pyb").is_file():
        raw["data"]["split_file"] = str(tmp_path / "data" / "split.pyb")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ctx = StudyContext.open(tmp_path / "params.yaml", results_root=tmp_path / "results")
    fold = ctx.folds[0]
    # Image labels only (the weak protocol), and a pixel target for every positive (the mixed
    # protocol; the ``full`` control needs no mask, so ELPV has it too).
    weak = Cell.baseline(0, 0, fold)
    mixed = Cell("kgl", "none", all_positives(ctx, fold, with_mask=False), 0, fold,
                 control="full")
    for cell, column in ((weak, "loss"), (mixed, "loss_seg")):
        unit = ensure_cell(ctx, cell)
        losses = pd.read_csv(unit.file(LOSSES))
        assert len(losses) == 2 and all(map(math.isfinite, losses["loss"])), losses
        # The weak protocol's weights are constant, so its total loss compares across epochs;
        # the mixed one moves weight to the classifier, so its segmentation term is compared.
        assert losses[column].iloc[1] < losses[column].iloc[0], (cell.protocol, losses)
        # Severstal keeps the epoch that scores best on the split file's validation list.
        validated = "validation_ap" in losses.columns
        assert validated == (preset == "severstal")
        if validated:
            best = json.loads(unit.file(ROW).read_text())["best_epoch"]
            assert best == int(losses["validation_ap"].to_numpy().argmax())
