from pathlib import Path

import pandas as pd
import pytest

from kgl_utils.report import headline, headline_markdown

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("*/guided.csv"))


def write_study(folder: Path) -> Path:
    pd.DataFrame([{"method": "primary (image labels only)", "ap": 0.9, "auroc": 0.95}]).to_csv(
        folder / "primary.csv", index=False)
    base = {"seed": 0, "prior_as_input": False, "guidance": "pseudo_mask", "auroc": 0.5}
    rows = [
        {"method": "baseline", "prior": "none", "n_a": 0, "ap": 0.5},
        {"method": "kgl", "prior": "fullgrad", "n_a": 12, "ap": 0.8},
        {"method": "kgl", "prior": "fullgrad", "n_a": 12, "ap": 0.7, "prior_as_input": True},
        {"method": "kgl", "prior": "layercam", "n_a": 5, "ap": 0.6},
        {"method": "kgl", "prior": "layercam", "n_a": 0, "ap": 0.55, "guidance": "consistency"},
        {"method": "kgl", "prior": "random", "n_a": 12, "ap": 0.3},
        {"method": "distillation", "prior": "none", "n_a": 0, "ap": 0.65, "guidance": "none"},
        {"method": "baseline", "prior": "none", "n_a": 0, "ap": 0.1, "seed": 1},
    ]
    pd.DataFrame([base | row for row in rows]).to_csv(folder / "guided.csv", index=False)
    return folder


def test_headline_names_each_system_of_the_first_seed(tmp_path):
    table = headline(write_study(tmp_path))
    assert table["system"].tolist() == [
        "primary (image labels only)",
        "baseline SegDecNet, 0 human masks",
        "KGL, fullgrad pseudo-masks for all 12 positives",
        "KGL, fullgrad pseudo-masks for all 12 positives + prior as input",
        "KGL, layercam pseudo-masks for 5 positives",
        "KGL, layercam consistency loss (0 human masks)",
        "KGL, random control pseudo-masks for all 12 positives",
        "distillation (unsupervised)",
    ]
    assert table["ap"].tolist() == [0.9, 0.5, 0.8, 0.7, 0.6, 0.55, 0.3, 0.65]
    assert "| baseline SegDecNet, 0 human masks | 0.500 | 0.500 |" in headline_markdown(tmp_path)


@pytest.mark.parametrize("study", COMMITTED, ids=lambda p: p.name)
def test_readme_shows_the_committed_headline(study):
    readme = (ROOT / "README.md").read_text()
    assert headline_markdown(study) in readme, (
        f"README's table for {study.name} is out of date: "
        f"python -m kgl_utils.report results/{study.name}")
