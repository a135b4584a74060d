"""The papermill runner: order, injected parameters, the executor's place, --force, clear
failures."""

from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from kgl_utils.study import StudyError, main, run_study

REPO = Path(__file__).resolve().parent.parent

APPEND = """
from pathlib import Path
from kgl_utils.config import load_params
config = load_params(params_path, profile)
out = Path(results_root) / config.study / "calls.txt"
out.parent.mkdir(parents=True, exist_ok=True)
with out.open("a") as f:
    f.write(NAME + " " + config.profile + "\\n")
"""


def notebook(path: Path, body: str) -> None:
    params = new_code_cell('params_path = ""\nprofile = None\nresults_root = ""')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "kgl-utils", "display_name": "kgl", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def study(tmp_path):
    params = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    params["study"] = "tiny"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(params))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    notebook(notebooks / "01_first.ipynb", 'NAME = "first"' + APPEND)
    notebook(notebooks / "02_second.ipynb", 'NAME = "second"' + APPEND)
    return path, notebooks, tmp_path / "results"


def test_runs_in_order_every_time_and_force_marks_the_notebooks_units(study):
    params, notebooks, results = study
    paths = run_study(params, results_root=results, notebook_dir=notebooks, timeout=120)
    calls = results / "tiny" / "calls.txt"
    assert calls.read_text().splitlines() == ["first cpu", "second cpu"]
    assert (paths.executed / "01_first.ipynb").is_file()
    # A rerun executes every notebook again: their work lives in units, reused there.
    run_study(params, results_root=results, notebook_dir=notebooks, timeout=120)
    assert len(calls.read_text().splitlines()) == 4
    assert not paths.units.exists()  # nothing forced, nothing marked
    run_study(params, profile="gpu", results_root=results, notebook_dir=notebooks, timeout=120)
    assert calls.read_text().splitlines()[-2:] == ["first gpu", "second gpu"]


class Recorder:
    """An executor that computes nothing: it notes what it was asked for, and which notebooks
    had run by then."""

    def __init__(self, calls: Path):
        self.calls, self.asked = calls, []

    def compute(self, study, notebooks):
        ran = self.calls.read_text().split() if self.calls.exists() else []
        self.asked.append((study.params_path.name, list(notebooks), ran[::2]))


def test_the_executor_computes_the_chosen_notebooks_units_before_the_first_of_them(
        study, monkeypatch):
    params, notebooks, results = study
    monkeypatch.setattr("kgl_utils.study.NOTEBOOK_OUTPUTS", {})
    for name in ("02_primary_training", "05_ablation_na"):
        notebook(notebooks / f"{name}.ipynb", f'NAME = "{name[:2]}"' + APPEND)
    recorder = Recorder(results / "tiny" / "calls.txt")
    run_study(params, results_root=results, notebook_dir=notebooks, only=["01", "02", "05"],
              timeout=120, executor=recorder)
    assert recorder.asked == [("tiny.yaml", ["02_primary_training", "05_ablation_na"],
                               ["first"])]


def test_force_marks_only_the_chosen_notebooks_unit_kinds(study, monkeypatch):
    params, notebooks, results = study
    for name in ("02_primary_training", "04_guided_training"):
        notebook(notebooks / f"{name}.ipynb", "pass")
    monkeypatch.setattr("kgl_utils.study.NOTEBOOK_OUTPUTS", {})
    recorder = Recorder(results / "tiny" / "calls.txt")
    paths = run_study(params, results_root=results, notebook_dir=notebooks, only=["04"],
                      force=True, timeout=120, executor=recorder)
    marked = sorted(p.parent.name for p in paths.units.glob("*/.recompute_before.json"))
    assert marked == ["distillation", "inference_cost", "segdec"]
    assert [notebooks for _, notebooks, _ in recorder.asked] == [["04_guided_training"]]


def test_failing_notebook_names_itself_and_the_error(study):
    params, notebooks, results = study
    notebook(notebooks / "01_first.ipynb", 'raise ValueError("boom in the data")')
    with pytest.raises(StudyError) as err:
        run_study(params, results_root=results, notebook_dir=notebooks, timeout=120)
    assert "01_first.ipynb failed" in str(err.value)
    assert "ValueError: boom in the data" in str(err.value)
    assert not (results / "tiny" / "calls.txt").exists()  # 02 never ran


def test_cli_reports_bad_params_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nseeds: [0]\n")
    assert main(["run", str(bad)]) == 1
    assert "data: required key is missing" in capsys.readouterr().err
