"""Run units: a unit is reused exactly when nothing it depends on changed, a study grows by its
new units only, a table row is never trusted without its unit, and a killed study resumes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import open_study, synthetic_study

from kgl_utils.paths import MANIFEST, PACKAGE_DIR
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import guided_cells, run_guided
from kgl_utils.stages.primary import run_primary
from kgl_utils.units import cells
from kgl_utils.units.cells import CELL_KEY
from kgl_utils.units.store import Unit, UnitStore, code_version

KINDS = ("primary", "priors", "segdec")


# --- the store ---------------------------------------------------------------------------


def counting(calls: list, name: str = "out.txt"):
    def compute(folder: Path) -> dict:
        calls.append(folder)
        (folder / name).write_text(str(len(calls)))
        return {name: "a number"}
    return compute


def test_a_unit_is_done_only_with_a_manifest_naming_outputs_that_exist(tmp_path):
    store, calls = UnitStore(tmp_path), []
    unit = Unit("kind", {"a": 1, "b": (2, 3)}, code="c1")
    done = store.ensure(unit, counting(calls))
    assert done.folder == tmp_path / "kind" / unit.key and len(calls) == 1
    assert json.loads((done.folder / MANIFEST).read_text())["spec"] == {"a": 1, "b": [2, 3]}
    store.ensure(unit, counting(calls))
    assert len(calls) == 1  # reused
    (done.folder / "out.txt").unlink()  # an output lost: the unit is not done
    assert store.done(unit) is None
    store.ensure(unit, counting(calls))
    assert len(calls) == 2


def test_the_key_covers_spec_inputs_and_code(tmp_path):
    base = Unit("kind", {"a": 1}, ("k1",), code="c1")
    assert base.key == Unit("kind", {"a": 1}, ["k1"], code="c1").key
    others = [Unit("kind", {"a": 2}, ("k1",), code="c1"), Unit("kind", {"a": 1}, ("k2",), "c1"),
              Unit("kind", {"a": 1}, ("k1",), code="c2"), Unit("other", {"a": 1}, ("k1",), "c1")]
    assert len({base.key, *(u.key for u in others)}) == 5


def test_a_unit_killed_before_its_manifest_is_redone(tmp_path):
    store, calls = UnitStore(tmp_path), []
    unit = Unit("kind", {}, code="c1")

    def killed(folder: Path) -> dict:
        (folder / "out.txt").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        store.ensure(unit, killed)
    assert store.done(unit) is None
    assert store.ensure(unit, counting(calls)).file("out.txt").read_text() == "1"


def test_force_mark_recomputes_each_unit_once(tmp_path):
    store, calls = UnitStore(tmp_path), []
    a, b = Unit("a", {}, code="c"), Unit("b", {}, code="c")
    store.ensure(a, counting(calls))
    store.ensure(b, counting(calls))
    store.mark_for_recompute(("a",))
    store.ensure(a, counting(calls))
    store.ensure(a, counting(calls))
    store.ensure(b, counting(calls))
    assert len(calls) == 3  # a twice (before and after the mark), b once


def test_code_version_follows_computing_modules_not_plots(tmp_path):
    package = tmp_path / "kgl_utils"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_version(package)
    assert before == code_version(PACKAGE_DIR)
    for name in ("plots.py", "report.py", "widgets.py", "study.py", "stages/ablation.py",
                 "units/store.py"):
        (package / name).write_text((package / name).read_text() + "\n# a comment\n")
    assert code_version(package) == before  # a figure or a table view retrains nothing
    (package / "training.py").write_text((package / "training.py").read_text() + "\n#\n")
    assert code_version(package) != before
    # A unit of the changed code has another key, so it is computed again.
    store, calls = UnitStore(tmp_path / "units"), []
    store.ensure(Unit("segdec", {"x": 1}, code=before), counting(calls))
    store.ensure(Unit("segdec", {"x": 1}, code=code_version(package)), counting(calls))
    assert len(calls) == 2


# --- a tiny study grows by units -----------------------------------------------------------

TINY = {**synthetic_study("units", n_train=24, n_test=12, positive_fraction=0.5, epochs=2,
                          batch_size=4, width=0.0625),
        "prior": {"methods": ["gradcam"]}}


def counts(ctx: StudyContext) -> dict[str, int]:
    """Unit folders of each kind, done or started."""
    return {kind: sum(p.is_dir() for p in (ctx.paths.units / kind).glob("*")) for kind in KINDS}


def finished(ctx: StudyContext) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["finished"]
            for p in ctx.paths.units.glob(f"*/*/{MANIFEST}")}


@pytest.fixture
def trainings(monkeypatch):
    """Counts the SegDecNet trainings the cells run."""
    calls = []
    real = cells.train

    def train(*args, **kwargs):
        calls.append(kwargs["run_dir"])
        return real(*args, **kwargs)
    monkeypatch.setattr(cells, "train", train)
    return calls


def test_adding_a_seed_trains_only_its_units(tmp_path, trainings):
    one = open_study(tmp_path, TINY)
    run_primary(one)
    first = run_guided(one)
    # Per seed: a primary, gradcam priors of train, and three cells (baseline at 0 and all
    # masks, KGL for all positives); the test priors are not needed without prior input.
    assert counts(one) == {"primary": 1, "priors": 1, "segdec": 3} and len(trainings) == 3
    before = finished(one)

    two = open_study(tmp_path, TINY, seeds=[0, 1])
    assert two.params_hash != one.params_hash
    run_primary(two)
    table = run_guided(two)
    assert counts(two) == {"primary": 2, "priors": 2, "segdec": 6} and len(trainings) == 6
    assert {k: v for k, v in finished(two).items() if k in before} == before  # untouched
    assert len(table) == 6 and not table.duplicated(CELL_KEY).any()
    seed0 = table[table["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(seed0.drop(columns="params_hash"),
                                  first.drop(columns="params_hash"))
    # Seed 1 trains its own primary: the whole pipeline is seeded.
    primaries = pd.read_csv(two.paths.table("primary.csv"))
    assert primaries["seed"].tolist() == [0, 1] and primaries["ap"].nunique() == 2

    # Removing the seed again drops its rows and trains nothing.
    again = run_guided(open_study(tmp_path, TINY))
    assert len(trainings) == 6 and set(again["seed"]) == {0}


def test_a_committed_row_without_its_unit_is_recomputed(tmp_path, trainings):
    ctx = open_study(tmp_path, TINY)
    cells_ = guided_cells(ctx)
    forged = [{"dataset": "synthetic", **c.key(), "hybrid": False, "ap": 0.123,
               "params_hash": ctx.params_hash, "git_commit": "0000000000"} for c in cells_]
    pd.DataFrame(forged).to_csv(ctx.paths.table("guided.csv"), index=False)
    table = run_guided(ctx)
    assert len(trainings) == len(cells_) == 3
    assert (table["ap"] != 0.123).all() and (table["git_commit"] != "0000000000").all()


def test_a_study_killed_mid_unit_completes_only_what_is_missing(tmp_path, trainings,
                                                                monkeypatch):
    ctx = open_study(tmp_path, TINY, seeds=[0, 1])
    real = cells.predict
    done = []

    def predict(*args, **kwargs):  # killed after the third run trained, before its outputs
        if len(trainings) == 3 and not done:
            done.append(True)
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(cells, "predict", predict)
    with pytest.raises(KeyboardInterrupt):
        run_guided(ctx)
    # Seed 0 only: its primary, its train priors and the two baselines are done.
    assert counts(ctx)["segdec"] == 3 and len(finished(ctx)) == 1 + 1 + 2
    killed = trainings[2]
    table = run_guided(ctx)
    # The killed run resumes from its final checkpoint (no epoch retrained), then the rest.
    assert trainings[3] == killed and len(trainings) == 3 + 4
    assert len(table) == 6 and not table.duplicated(CELL_KEY).any()
    losses = pd.read_csv(killed / "losses.csv")
    assert losses["epoch"].tolist() == [0, 1]
    assert np.isfinite(table["ap"]).all()
