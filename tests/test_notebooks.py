"""The six notebooks executed headlessly through the study runner on a tiny synthetic study."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kgl_utils.study import NOTEBOOK_OUTPUTS

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


def test_committed_notebooks_are_thin_and_clean():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one parameters cell"
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name}: outputs"
        assert not any("def " in c.source or "class " in c.source for c in code), \
            f"{path.name}: logic belongs in kgl_utils"
