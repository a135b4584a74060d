"""The study runner: executes the numbered notebooks in order with papermill.

``python -m kgl_utils.study run params/default.yaml`` is what ``make study`` calls. Each notebook
gets the study's params file injected into its ``parameters`` cell; its executed copy goes to
``results/<study>/executed/``. A notebook whose outputs are complete for the same params hash is
skipped on a rerun, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kgl_utils.config import ConfigError, StudyConfig, load_params
from kgl_utils.results import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "kgl-utils"

# What each notebook must leave in results/<study>/ for its work to count as done.
NOTEBOOK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "01_data_preparation": ("data_summary.csv", "splits.json", "data_examples.png"),
    "02_primary_training": ("primary.csv", "primary_learning_curve.png"),
    "03_prior_extraction": ("prior_quality.csv", "prior_examples.png"),
    "04_guided_training": ("guided.csv", "inference_cost.csv"),
    "05_ablation_na": ("ablation.csv", "ablation.md", "ablation_ap.png"),
    "06_saliency_visualization": ("saliency_metrics.csv", "saliency_examples.png"),
}


class StudyError(RuntimeError):
    """A notebook of the study failed; the message names it and the failing cell's error."""


@dataclass(frozen=True)
class StudyPaths:
    """Where a study writes: its results folder and the executed notebooks in it."""

    results: Path

    @classmethod
    def of(cls, config: StudyConfig, results_root: str | Path = "results") -> StudyPaths:
        root = Path(results_root)
        root = root if root.is_absolute() else REPO_ROOT / root
        return cls(root / config.study)

    @property
    def executed(self) -> Path:
        return self.results / "executed"

    def stamp(self, notebook: str) -> Path:
        return self.executed / f"{notebook}.done.json"


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def is_complete(paths: StudyPaths, notebook: str, params_hash: str) -> bool:
    stamp = paths.stamp(notebook)
    if not stamp.is_file():
        return False
    if json.loads(stamp.read_text()).get("params_hash") != params_hash:
        return False
    return all((paths.results / out).exists() for out in NOTEBOOK_OUTPUTS.get(notebook, ()))


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
    notebook_dir: Path = NOTEBOOK_DIR,
) -> StudyPaths:
    """Run every numbered notebook (or those in ``only``) for one params file."""
    params_path = Path(params_path).resolve()
    config = load_params(params_path, profile)
    params_hash = config.params_hash()
    paths = StudyPaths.of(config, results_root)
    chosen = [nb for nb in notebooks(notebook_dir)
              if not only or any(nb.stem.startswith(o) for o in only)]
    print(f"study {config.study!r} (params {params_hash}, profile {config.profile}) "
          f"→ {paths.results}", flush=True)
    parameters = {"params_path": str(params_path), "profile": config.profile,
                  "results_root": str(paths.results.parent)}
    for i, nb in enumerate(chosen, 1):
        prefix = f"[{i}/{len(chosen)}] {nb.stem}"
        if not force and is_complete(paths, nb.stem, params_hash):
            print(f"{prefix}: complete for params {params_hash}, skipped", flush=True)
            continue
        print(f"{prefix}: running …", flush=True)
        start = time.perf_counter()
        run_notebook(nb, paths.executed / nb.name, parameters, timeout)
        seconds = time.perf_counter() - start
        missing = [o for o in NOTEBOOK_OUTPUTS.get(nb.stem, ())
                   if not (paths.results / o).exists()]
        if missing:
            raise StudyError(f"{nb.name} finished but did not write {missing} "
                             f"in {paths.results}")
        write_json(paths.stamp(nb.stem), {"params_hash": params_hash, "seconds": seconds})
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
    run.add_argument("--force", action="store_true", help="rerun complete notebooks too")
    run.add_argument("--only", nargs="+", help="notebook prefixes to run, e.g. 01 02")
    run.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    try:
        run_study(args.params, args.profile, args.results, args.force, args.only, args.timeout)
    except (ConfigError, StudyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
