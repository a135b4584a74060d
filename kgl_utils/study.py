"""The study runner: executes the numbered notebooks in order with papermill.

``python -m kgl_utils.study run params/default.yaml`` is what ``make study`` calls. Each notebook
gets the study's params file injected into its ``parameters`` cell; its executed copy goes to
``results/<study>/executed/``. Every notebook runs each time: its work lives in run units
(``kgl_utils.units``) that are computed once and reused, so a rerun of a finished study only
reassembles its tables and figures, and an interrupted one resumes with the missing units.
``--force`` recomputes the units of the chosen notebooks.

Before the first notebook that computes units, an executor computes every unit the chosen
notebooks read (``kgl_utils.executors``): ``local``, the default, one after another in this
process; ``ray``, as tasks on a Ray cluster of one or many machines (``--address``). The
notebooks then find their units done and assemble the tables and figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kgl_utils.config import ConfigError, load_params
from kgl_utils.executors import (
    EXECUTORS,
    Executor,
    ExecutorError,
    LocalExecutor,
    StudyRef,
    make_executor,
)
from kgl_utils.paths import NOTEBOOK_DIR, REPO_ROOT, StudyPaths
from kgl_utils.units.store import UnitStore

KERNEL_NAME = "kgl-utils"

# What each notebook must leave in results/<study>/ for its work to count as done.
NOTEBOOK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "01_data_preparation": ("data_summary.csv", "splits.json", "data_examples.png"),
    "02_primary_training": ("primary.csv", "primary_learning_curve.png"),
    "03_prior_extraction": ("prior_quality.csv", "prior_examples.png"),
    "04_guided_training": ("guided.csv", "guided.md", "guided_tests.csv", "inference_cost.csv"),
    "05_ablation_na": ("ablation.csv", "ablation_tests.csv", "ablation.md", "ablation_ap.png"),
    "06_saliency_visualization": ("saliency_metrics.csv", "saliency_examples.png"),
}

# The kinds of unit each notebook computes: what --force recomputes for it (the executor
# computes those of the grid, ``kgl_utils.grid``, before the first of these notebooks runs).
NOTEBOOK_UNITS: dict[str, tuple[str, ...]] = {
    "02_primary_training": ("primary",),
    "03_prior_extraction": ("priors",),
    "04_guided_training": ("segdec", "distillation", "inference_cost"),
    "05_ablation_na": ("segdec",),
}


class StudyError(RuntimeError):
    """A notebook of the study failed; the message names it and the failing cell's error."""


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(notebook: Path, output: Path, parameters: dict, timeout: int) -> None:
    """Execute one notebook with papermill; a failing cell becomes a StudyError."""
    import papermill as pm
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        raise StudyError(f"Jupyter kernel {KERNEL_NAME!r} is not installed; run `make setup`, "
                         "which registers it for this virtual environment") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
            cwd=str(REPO_ROOT), execution_timeout=timeout, progress_bar=False,
            request_save_on_cell_execute=True,
        )
    except pm.PapermillExecutionError as exc:
        raise StudyError(f"{notebook.name} failed in cell {exc.exec_count}: "
                         f"{exc.ename}: {exc.evalue}\n(executed copy: {output})") from None


def run_study(
    params_path: str | Path, profile: str | None = None, results_root: str | Path = "results",
    force: bool = False, only: list[str] | None = None, timeout: int = 3600,
    notebook_dir: Path = NOTEBOOK_DIR, executor: Executor | None = None,
) -> StudyPaths:
    """Run every numbered notebook (or those in ``only``) for one params file; ``force``
    recomputes the units those notebooks compute. ``executor`` (default: local) computes the
    units of the chosen notebooks before the first of them that computes any."""
    params_path = Path(params_path).resolve()
    config = load_params(params_path, profile)
    paths = StudyPaths.of(config.study, results_root)
    chosen = [nb for nb in notebooks(notebook_dir)
              if not only or any(nb.stem.startswith(o) for o in only)]
    print(f"study {config.study!r} (params {config.params_hash()}, profile {config.profile}) "
          f"→ {paths.results}", flush=True)
    if force:
        UnitStore(paths.units).mark_for_recompute(
            tuple(kind for nb in chosen for kind in NOTEBOOK_UNITS.get(nb.stem, ())))
    parameters = {"params_path": str(params_path), "profile": config.profile,
                  "results_root": str(paths.results.parent)}
    computing = [nb.stem for nb in chosen if nb.stem in NOTEBOOK_UNITS]
    for i, nb in enumerate(chosen, 1):
        if computing and nb.stem == computing[0]:
            print(f"units of {', '.join(computing)} …", flush=True)
            start = time.perf_counter()
            (executor or LocalExecutor()).compute(
                StudyRef(params_path, config.profile, paths.results.parent), computing)
            print(f"units done in {time.perf_counter() - start:.0f} s", flush=True)
        prefix = f"[{i}/{len(chosen)}] {nb.stem}"
        print(f"{prefix}: running …", flush=True)
        start = time.perf_counter()
        run_notebook(nb, paths.executed / nb.name, parameters, timeout)
        seconds = time.perf_counter() - start
        missing = [o for o in NOTEBOOK_OUTPUTS.get(nb.stem, ())
                   if not (paths.results / o).exists()]
        if missing:
            raise StudyError(f"{nb.name} finished but did not write {missing} "
                             f"in {paths.results}")
        print(f"{prefix}: done in {seconds:.0f} s", flush=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kgl_utils.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study's notebooks in order")
    run.add_argument("params", help="params YAML, e.g. params/default.yaml")
    run.add_argument("--profile", help="scale profile to use instead of the file's")
    run.add_argument("--results", default="results", help="results root (default: results)")
    run.add_argument("--force", action="store_true",
                     help="recompute the units of the chosen notebooks")
    run.add_argument("--only", nargs="+", help="notebook prefixes to run, e.g. 01 02")
    run.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="what computes the units: local (default, one after another here) "
                          "or ray (tasks on a Ray cluster)")
    run.add_argument("--address", help="ray: the cluster's head, HOST:PORT (default: the "
                                       "cluster `ray start` runs here, else Ray started for "
                                       "this run on this machine)")
    run.add_argument("--cpus-per-unit", type=int,
                     help="ray: CPU threads each unit's task asks for and uses (default 1)")
    run.add_argument("--gpus-per-unit", type=float,
                     help="ray: GPUs each unit's task asks for on a CUDA study (default 1)")
    args = parser.parse_args(argv)
    try:
        executor = make_executor(args.executor, args.address, args.cpus_per_unit,
                                 args.gpus_per_unit)
        run_study(args.params, args.profile, args.results, args.force, args.only, args.timeout,
                  executor=executor)
    except (ConfigError, StudyError, ExecutorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
