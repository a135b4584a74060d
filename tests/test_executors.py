"""The study's grid and the executors that compute it: every unit once, inputs first, the same
units the notebooks enumerate; the default local executor never imports Ray."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_STUDY, open_study

from kgl_utils import grid
from kgl_utils.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor
from kgl_utils.grid import GridError, Job, study_grid
from kgl_utils.stages.ablation import ablation_cells
from kgl_utils.stages.guided import guided_cells
from kgl_utils.study import NOTEBOOK_UNITS
from kgl_utils.units.cells import cell_unit
from kgl_utils.units.primary import primary_unit

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = list(NOTEBOOK_UNITS)  # 02 … 05, the notebooks that compute units

# The tiny study's grid on fewer, smaller runs: 24 training images, one epoch, an eighth of the
# width.
SMALL = {**TINY_STUDY,
         "data": {**TINY_STUDY["data"], "options": {**TINY_STUDY["data"]["options"],
                                                     "n_train": 24, "n_test": 16}},
         "profiles": {"t": {**TINY_STUDY["profiles"]["t"], "epochs": 1, "width": 0.125}}}


def write_params(folder: Path, params: dict = SMALL) -> Path:
    """The params file of a study whose data lives under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(params | {"data": params["data"]
                                            | {"root": str(folder / "data")}}))
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return open_study(tmp_path_factory.mktemp("grid"), SMALL)


def test_grid_holds_each_unit_once_after_its_inputs(ctx):
    units = study_grid(ctx, NOTEBOOKS)
    keys = [unit.key for _, unit in units]
    assert len(keys) == len(set(keys))
    for position, (_, unit) in enumerate(units):
        assert set(unit.inputs) <= set(keys[:position]), unit
    kinds = [unit.kind for _, unit in units]
    assert kinds[:3] == ["primary", "priors", "priors"]  # primary, then its train/test maps
    # Notebook 04: baselines at N = 0 and all 10 masks, KGL gradcam with and without the prior
    # as input, its random control; notebook 05 adds the baseline and KGL at N_a = 4 (KGL at
    # N_a = 0 trains the baseline at 0): 7 SegDecNet runs, and one distillation run.
    assert sorted(kinds[3:]) == ["distillation"] + ["segdec"] * 7


def test_grid_cells_are_the_notebooks_cells(ctx):
    cells = guided_cells(ctx) + ablation_cells(ctx)
    grid_keys = {unit.key for job, unit in study_grid(ctx, NOTEBOOKS) if job.kind == "segdec"}
    assert grid_keys == {cell_unit(ctx, cell).key for cell in cells}


def test_a_notebooks_grid_brings_the_units_it_reads(ctx):
    units = study_grid(ctx, ["05_ablation_na"])
    # The ablation's cells read only the training split's maps: no test maps.
    assert [(job.kind, job.args[:2]) for job, _ in units if job.kind != "segdec"] == [
        ("primary", (0, None)), ("priors", ("gradcam", "train"))]
    assert sum(job.kind == "segdec" for job, _ in units) == 3  # baseline 0 and 4, KGL at 4


def test_a_unit_reading_what_no_notebook_computes_is_refused(ctx, monkeypatch):
    jobs = grid.notebook_jobs(ctx)
    monkeypatch.setattr(grid, "notebook_jobs",
                        lambda _: {k: v for k, v in jobs.items() if k != "03_prior_extraction"})
    with pytest.raises(GridError, match="segdec method=kgl prior=gradcam .* reads unit"):
        study_grid(ctx, ["04_guided_training"])


def test_jobs_name_what_they_compute():
    assert str(Job("primary", (2, None))) == "primary seed=2"
    assert str(Job("priors", ("layercam", "test", 0, 1))) == (
        "priors method=layercam split=test seed=0 fold=1")


def test_executor_options_belong_to_ray():
    assert isinstance(make_executor("local"), LocalExecutor)
    assert make_executor("ray", "head:6379", 4) == RayExecutor("head:6379", 4, 1.0)
    with pytest.raises(ExecutorError, match="--address, --gpus-per-unit apply to --executor ray"):
        make_executor("local", address="head:6379", gpus_per_unit=0.5)
    with pytest.raises(ExecutorError, match="executor must be one of local, ray"):
        make_executor("dask")
    with pytest.raises(ExecutorError, match="CPUs per unit must be at least 1, got 0"):
        make_executor("ray", cpus_per_unit=0)
    with pytest.raises(ExecutorError, match=r"GPUs per unit must be in \(0, 1\], got 2"):
        make_executor("ray", gpus_per_unit=2)


LOCAL_RUN = """
import sys
from pathlib import Path
from kgl_utils.study import main  # the command line's imports
from kgl_utils.executors import StudyRef, make_executor
make_executor("local").compute(StudyRef(Path(sys.argv[1]), None, Path(sys.argv[2])),
                               ["02_primary_training"])
print("ray imported:", "ray" in sys.modules)
"""


@pytest.mark.slow
def test_local_executor_computes_here_without_importing_ray(tmp_path):
    params = write_params(tmp_path)
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(params), str(results)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "1 of 1 units to compute"
    assert run.stdout.splitlines()[-1] == "ray imported: False"
    ctx = open_study(tmp_path, SMALL)
    assert ctx.units.done(primary_unit(ctx, 0, None)) is not None
