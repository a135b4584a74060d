"""The six notebooks executed headlessly through the study runner on a tiny synthetic study."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from conftest import TINY_STUDY
from fixtures_data import write_folder

from kgl_utils.study import NOTEBOOK_OUTPUTS, run_study

REPO = Path(__file__).resolve().parent.parent

@pytest.mark.slow
def test_every_notebook_writes_its_outputs(tiny_study):
    for notebook, outputs in NOTEBOOK_OUTPUTS.items():
        assert (tiny_study.executed / f"{notebook}.ipynb").is_file(), notebook
        for output in outputs:
            assert (tiny_study.results / output).is_file(), output


@pytest.mark.slow
def test_tables_hold_the_study_rows(tiny_study):
    summary = pd.read_csv(tiny_study.results / "data_summary.csv")
    assert set(summary["split"]) == {"train", "test"}
    guided = pd.read_csv(tiny_study.results / "guided.csv")
    assert {"baseline", "kgl", "distillation"} <= set(guided["method"])
    assert guided["ap"].between(0, 1).all()
    ablation = pd.read_csv(tiny_study.results / "ablation.csv")
    # 2 N_a values × (baseline + gradcam): 4 cells, each exactly once.
    assert len(ablation) == 4 and not ablation.duplicated(["method", "n_a"]).any()
    assert (ablation["params_hash"] == ablation["params_hash"].iloc[0]).all()
    assert "**" in (tiny_study.results / "ablation.md").read_text()


@pytest.mark.slow
def test_executed_copy_has_injected_parameters_and_widget(tiny_study):
    nb = nbformat.read(tiny_study.executed / "06_saliency_visualization.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "tiny.yaml" in injected[0].source
    widget_outputs = [o for o in nb.cells[-1].outputs
                      if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_outputs, "the comparison widget did not build"


@pytest.mark.slow
def test_tiny_study_on_a_users_own_folder(tmp_path):
    """The tiny study on a folder of a user's own images (a bright square on noise), with masks
    for 10 of its 12 defect images: positives without a mask train with their image label."""
    root = write_folder(tmp_path / "parts", good=20, defect=12, masked=10, size=(96, 128))
    params = dict(TINY_STUDY, study="tiny_folder",
                  data={"dataset": "folder", "root": str(root), "channels": 1, "dilate": 3},
                  guided={"prior_as_input": [False], "guidance": ["pseudo_mask"]},
                  distillation={"enabled": False})
    path = tmp_path / "tiny_folder.yaml"
    path.write_text(yaml.safe_dump(params))
    paths = run_study(path, results_root=tmp_path / "results", timeout=600)
    for outputs in NOTEBOOK_OUTPUTS.values():
        assert all((paths.results / output).is_file() for output in outputs), outputs
    summary = pd.read_csv(paths.results / "data_summary.csv").set_index("split")
    # seeded 70/30 split by label: ceil(0.3 * 32) = 10 test images, 4 of them defective
    assert summary.loc["train", ["positives", "negatives"]].tolist() == [8, 14]
    assert summary.loc["test", ["positives", "negatives"]].tolist() == [4, 6]
    assert summary["positives_with_masks"].sum() == 10
    guided = pd.read_csv(paths.results / "guided.csv")
    assert set(guided["method"]) == {"baseline", "kgl"}
    assert guided["ap"].between(0, 1).all() and (guided["dataset"] == "folder").all()
    baselines = guided.loc[guided["method"] == "baseline", "n_a"]
    assert sorted(baselines) == [0, summary.loc["train", "positives_with_masks"]]
    assert (guided.loc[guided["method"] == "kgl", "n_a"] == 8).all()  # masked or not
    quality = pd.read_csv(paths.results / "prior_quality.csv")  # scored where a mask is
    assert (quality["images"] == quality["split"].map(summary["positives_with_masks"])).all()
    assert len(pd.read_csv(paths.results / "ablation.csv")) == 4


def test_committed_notebooks_are_thin_and_clean():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one parameters cell"
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name}: outputs"
        assert not any("def " in c.source or "class " in c.source for c in code), \
            f"{path.name}: logic belongs in kgl_utils"
