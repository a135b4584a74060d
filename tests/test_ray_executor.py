"""The Ray executor on a local two-CPU Ray instance: the small study's grid computed as Ray tasks
gives the local executor's rows, a unit left incomplete is computed again on the next run, a
unit whose worker is killed mid-run is retried to the same result, a failing unit is reported
with what it kept from running, and a request no node can meet is refused."""

import signal
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import torch_threads
from test_executors import NOTEBOOKS, SMALL, write_params

from kgl_utils.executors import ExecutorError, LocalExecutor, RayExecutor, StudyRef
from kgl_utils.grid import Job, study_grid
from kgl_utils.paths import MANIFEST, ROW
from kgl_utils.stages.ablation import run_grid
from kgl_utils.stages.guided import run_guided
from kgl_utils.units.primary import primary_unit

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    """A new local Ray instance for the module (its start takes tens of seconds here), whether
    or not this machine is part of a Ray cluster."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One params file (one data folder, so local and Ray runs share unit keys) and its grid
    computed by the local executor into ``results/local``, at one thread as each Ray task
    runs: sums split over another number of threads differ in their last digits."""
    folder = tmp_path_factory.mktemp("ray")
    params = write_params(folder)
    with torch_threads(1):
        LocalExecutor().compute(StudyRef(params, None, folder / "results" / "local"), NOTEBOOKS)
    return params


def _open(params: Path, run: str):
    return StudyRef(params, None, params.parent / "results" / run).open()


def tables(params: Path, run: str) -> pd.DataFrame:
    """guided.csv and ablation.csv of a run, as notebooks 04 and 05 assemble them."""
    ctx = _open(params, run)
    return pd.concat([run_guided(ctx), run_grid(ctx)], ignore_index=True)


def finished(params: Path, run: str) -> dict[str, float]:
    """When each unit of a run was finished, by key."""
    ctx = _open(params, run)
    return {unit.key: ctx.units.done(unit).manifest["finished"]
            for _, unit in study_grid(ctx, NOTEBOOKS)}


@pytest.fixture(scope="module")
def ray_run(cluster, study) -> Path:
    RayExecutor().compute(StudyRef(study, None, study.parent / "results" / "ray"), NOTEBOOKS)
    return study


def test_ray_computes_the_grid_as_the_local_executor_does(ray_run):
    ctx = _open(ray_run, "ray")
    grid = study_grid(ctx, NOTEBOOKS)
    assert all(ctx.units.done(unit) is not None for _, unit in grid)  # notebooks only assemble
    before = finished(ray_run, "ray")
    local, remote = tables(ray_run, "local"), tables(ray_run, "ray")
    assert len(remote) == 10  # 5 comparison cells and the distillation run, 4 ablation cells
    pd.testing.assert_frame_equal(remote, local)  # metrics, keys and provenance alike
    assert finished(ray_run, "ray") == before  # assembling the tables computed nothing


def test_a_unit_left_incomplete_is_computed_on_the_next_run(ray_run, capsys):
    ctx = _open(ray_run, "ray")
    grid = study_grid(ctx, NOTEBOOKS)
    job, unit = next((job, unit) for job, unit in grid if job.kind == "segdec"
                     and unit.spec["cell"]["method"] == "kgl")
    folder = ctx.units.folder(unit)
    row = (folder / ROW).read_text()
    before = finished(ray_run, "ray")
    (folder / MANIFEST).unlink()  # as a task killed before its manifest leaves it
    capsys.readouterr()
    RayExecutor().compute(StudyRef(ray_run, None, ray_run.parent / "results" / "ray"), NOTEBOOKS)
    assert f"1 of {len(grid)} units to compute" in capsys.readouterr().out
    after = finished(ray_run, "ray")
    assert after.pop(unit.key) > before.pop(unit.key)
    assert after == before  # every other unit untouched
    assert (folder / ROW).read_text() == row


def test_a_unit_whose_worker_is_killed_is_retried(cluster, study):
    results = study.parent / "results" / "killed"
    ctx = StudyRef(study, None, results).open()
    primary = primary_unit(ctx, 0, None)
    title = f"ray::{Job('primary', (0, None))}"  # Ray names a busy worker after its task
    errors = []

    def compute() -> None:
        try:
            RayExecutor().compute(StudyRef(study, None, results), ["03_prior_extraction"])
        except Exception as exc:  # handed to the test's thread, which raises it
            errors.append(exc)
    run = threading.Thread(target=compute)
    run.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        for process in psutil.Process().children(recursive=True):
            try:
                if process.cmdline()[:1] != [title]:
                    continue
                process.send_signal(signal.SIGSTOP)  # holds it while we look
                if process.cmdline()[:1] == [title] and ctx.units.done(primary) is None:
                    killed = process.pid
                    process.send_signal(signal.SIGKILL)
                else:
                    process.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.02)
    run.join(timeout=300)
    assert killed is not None, "the primary's task was never seen running"
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    assert not run.is_alive()
    if errors:
        raise errors[0]
    done = ctx.units.done(primary)
    assert done is not None  # retried in a fresh worker, which finished the unit
    local = _open(study, "local").units.done(primary)
    assert done.metrics() == local.metrics()


def test_a_failing_unit_is_named_and_the_units_reading_it_are_not_computed(cluster, tmp_path):
    params = write_params(tmp_path, SMALL | {"primary": SMALL["primary"]
                                             | {"weights": str(tmp_path / "missing.pt")}})
    with pytest.raises(ExecutorError) as failure:
        RayExecutor().compute(StudyRef(params, None, tmp_path / "results"), NOTEBOOKS)
    report = str(failure.value)
    assert report.startswith("1 of 11 units failed")
    assert "primary seed=0: " in report and f"weights file {tmp_path}/missing.pt" in report
    # Its two prior units, the four KGL cells and the distillation run read it; the three
    # baselines do not, and are stored.
    assert "7 units were not computed, because a unit they read failed" in report
    ctx = StudyRef(params, None, tmp_path / "results").open()
    stored = [job.kind for job, unit in study_grid(ctx, NOTEBOOKS) if ctx.units.done(unit)]
    assert stored == ["segdec"] * 3


def test_a_cuda_study_needs_a_node_with_a_gpu(cluster, tmp_path):
    params = write_params(tmp_path, SMALL | {"device": "cuda"})
    with pytest.raises(ExecutorError, match="a unit asks for 1.0 GPU .device cuda., but no node "
                                            "of the Ray cluster has more than 0"):
        RayExecutor().compute(StudyRef(params, None, tmp_path / "results"), NOTEBOOKS)
