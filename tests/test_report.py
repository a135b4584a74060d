"""The README's headline tables come from the committed tables, which come from one clean
commit; the report names each row the one way and refuses mixed provenance."""

from pathlib import Path

import pandas as pd
import pytest

from kgl_utils.paths import MANIFEST
from kgl_utils.report import (
    ProvenanceError,
    check_provenance,
    compute_time,
    headline,
    headline_markdown,
    main,
    paired_markdown,
    paired_runs,
)
from kgl_utils.results import write_json

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("*/guided.csv"))
# The same studies rerun in another precision: results/precision/<study> beside results/<study>.
PRECISION = sorted(p.parent for p in (ROOT / "results" / "precision").glob("*/guided.csv"))
COMMIT = "0123456789"


def write_study(folder: Path) -> Path:
    stamp = {"git_commit": COMMIT, "prior_as_input": False, "guidance": "none", "prior": "none",
             "fold": None}
    pd.DataFrame([stamp | {"method": "primary", "n_a": 0, "seed": 0, "ap": 0.9,
                           "auroc": 0.95}]).to_csv(folder / "primary.csv", index=False)
    base = {"seed": 0, "fold": None, "prior_as_input": False, "guidance": "pseudo_mask",
            "auroc": 0.5, "git_commit": COMMIT, "control": "none"}
    rows = [
        {"method": "baseline", "prior": "none", "n_a": 0, "ap": 0.5, "guidance": "none"},
        {"method": "kgl", "prior": "fullgrad", "n_a": 12, "ap": 0.8},
        {"method": "kgl", "prior": "fullgrad", "n_a": 12, "ap": 0.7, "prior_as_input": True},
        {"method": "kgl", "prior": "layercam", "n_a": 5, "ap": 0.6},
        {"method": "kgl", "prior": "layercam", "n_a": 0, "ap": 0.55, "guidance": "consistency"},
        {"method": "kgl", "prior": "fullgrad", "control": "random", "n_a": 12, "ap": 0.3},
        {"method": "kgl", "prior": "none", "control": "full", "n_a": 12, "ap": 0.35},
        {"method": "distillation", "prior": "none", "n_a": 0, "ap": 0.65, "guidance": "none"},
        {"method": "baseline", "prior": "none", "n_a": 0, "ap": 0.1, "seed": 1,
         "guidance": "none"},
    ]
    pd.DataFrame([base | row for row in rows]).to_csv(folder / "guided.csv", index=False)
    return folder


def test_headline_names_each_system_once_with_its_mean_over_seeds(tmp_path):
    table = headline(write_study(tmp_path))
    assert table["system"].tolist() == [
        "primary (image labels only)",
        "baseline SegDecNet, 0 human masks",
        "KGL, fullgrad pseudo-masks for all 12 positives",
        "KGL, fullgrad pseudo-masks for all 12 positives + prior as input",
        "KGL, layercam pseudo-masks for 5 positives",
        "KGL, layercam consistency loss (0 human masks)",
        "KGL, random control of fullgrad pseudo-masks for all 12 positives",
        "KGL, full control pseudo-masks for all 12 positives",
        "distillation (unsupervised)",
    ]
    # The baseline without masks has two seeds: AP 0.5 and 0.1, mean 0.3, std 0.4 / √2.
    assert table["runs"].tolist() == [1, 2, 1, 1, 1, 1, 1, 1, 1]
    assert table["ap"].tolist() == ["0.900", "0.300 ± 0.283", "0.800", "0.700", "0.600", "0.550",
                                    "0.300", "0.350", "0.650"]
    assert table["p_vs_weak_holm"].isna().all()  # one seed of KGL: nothing to pair
    assert "| baseline SegDecNet, 0 human masks | 2 | 0.300 ± 0.283 | 0.500 ± 0.000 |  |" in \
        headline_markdown(tmp_path)


def test_a_primary_near_chance_is_said_beside_the_headline(tmp_path):
    assert "Caveat" not in headline_markdown(write_study(tmp_path))  # AUROC 0.95
    primary = pd.read_csv(tmp_path / "primary.csv", dtype={"git_commit": str})
    pd.concat([primary, primary.assign(seed=1, auroc=0.5)]).to_csv(tmp_path / "primary.csv",
                                                                   index=False)
    # Mean AUROC (0.95 + 0.5) / 2 = 0.725, under 0.75.
    text = headline_markdown(tmp_path)
    assert "**Caveat.** The primary classifier's test AUROC is 0.72, under 0.75" in text


def test_headline_tests_kgl_against_the_baseline_without_masks(tmp_path):
    """Five seeds: the baseline without masks at AP 0.5 + 0.01·s, with all 12 masks 0.45 above;
    KGL fullgrad 0.3 + 0.01·s above the first, layercam 0.1 + 0.01·s below it. Every one of the
    four paired tests (each KGL against each baseline) has all five differences on one side and
    no ties: exact two-sided Wilcoxon p = 2 / 2**5 = 0.0625; Holm over the four: 4 · 0.0625."""
    stamp = {"git_commit": COMMIT, "fold": None, "prior_as_input": False, "control": "none",
             "auroc": 0.5}
    pd.DataFrame([stamp | {"method": "primary", "prior": "none", "guidance": "none", "n_a": 0,
                           "seed": 0, "ap": 0.9}]).to_csv(tmp_path / "primary.csv", index=False)
    rows = []
    for seed in range(5):
        weak = 0.5 + 0.01 * seed
        rows += [{"method": "baseline", "prior": "none", "guidance": "none", "n_a": 0,
                  "ap": weak},
                 {"method": "baseline", "prior": "none", "guidance": "none", "n_a": 12,
                  "ap": weak + 0.45},
                 {"method": "kgl", "prior": "fullgrad", "guidance": "pseudo_mask", "n_a": 12,
                  "ap": weak + 0.3 + 0.01 * seed},
                 {"method": "kgl", "prior": "layercam", "guidance": "pseudo_mask", "n_a": 12,
                  "ap": weak - 0.1 - 0.01 * seed}]
        rows[-4:] = [stamp | row | {"seed": seed} for row in rows[-4:]]
    pd.DataFrame(rows).to_csv(tmp_path / "guided.csv", index=False)
    table = headline(tmp_path).set_index("system")
    fullgrad = table.loc["KGL, fullgrad pseudo-masks for all 12 positives"]
    # AP 0.8 + 0.02·s over s = 0 … 4: mean 0.84, std 0.02·√2.5 = 0.0316; layercam 0.4 each.
    assert (fullgrad["runs"], fullgrad["ap"]) == (5, "0.840 ± 0.032")
    assert table["p_vs_weak_holm"].dropna().tolist() == pytest.approx([0.25, 0.25])
    assert "| KGL, layercam pseudo-masks for all 12 positives | 5 | 0.400 ± 0.000 | " \
           "0.500 ± 0.000 | 0.250 |" in headline_markdown(tmp_path)


@pytest.mark.parametrize("commits", [["0123456789", "abcdefabcd"], ["0123456789+dirty"]],
                         ids=["two commits", "dirty tree"])
def test_report_refuses_a_table_of_mixed_or_dirty_provenance(tmp_path, capsys, commits):
    write_study(tmp_path)
    guided = pd.read_csv(tmp_path / "guided.csv")
    guided["git_commit"] = [commits[i % len(commits)] for i in range(len(guided))]
    guided.to_csv(tmp_path / "guided.csv", index=False)
    with pytest.raises(ProvenanceError) as err:
        headline_markdown(tmp_path)
    message = str(err.value)
    assert "guided.csv" in message and all(c in message for c in commits)
    assert f"primary.csv: {COMMIT}" in message
    assert main([str(tmp_path)]) == 1 and "not come from one clean commit" in \
        capsys.readouterr().err


def test_report_refuses_tables_of_two_clean_commits(tmp_path):
    write_study(tmp_path)
    primary = pd.read_csv(tmp_path / "primary.csv").assign(git_commit="abcdefabcd")
    primary.to_csv(tmp_path / "primary.csv", index=False)
    with pytest.raises(ProvenanceError, match="primary.csv: abcdefabcd"):
        check_provenance(tmp_path)


def test_compute_time_sums_the_units_made_at_the_tables_commit(tmp_path, capsys):
    write_study(tmp_path)
    units = [("primary", "a", COMMIT, 60.0), ("segdec", "b", COMMIT, 30.0),
             ("segdec", "c", COMMIT, 50.0), ("segdec", "d", "abcdefabcd", 999.0)]
    for kind, key, commit, seconds in units:  # d: superseded by a later commit's run
        write_json(tmp_path / "units" / kind / key / MANIFEST,
                   {"kind": kind, "key": key, "git_commit": commit, "seconds": seconds})
    table = compute_time(tmp_path).set_index("kind")
    assert table.loc["segdec"].tolist() == [2, 80.0, 30.0, 50.0]
    assert table.loc["all"].tolist() == [3, 140.0, 30.0, 60.0]
    assert main([str(tmp_path), "--time"]) == 0
    assert "| all | 3 | 140 | 30 | 60 |" in capsys.readouterr().out


def test_compute_time_refuses_a_study_without_units_of_its_commit(tmp_path):
    write_study(tmp_path)
    with pytest.raises(FileNotFoundError, match="no unit made at 0123456789"):
        compute_time(tmp_path)


def write_pair_study(folder: Path, primary_ap: list[float], seeds: list[int]) -> Path:
    """Primary and N = 0 baseline runs per seed, and the KGL twin of the baseline that the
    ablation table repeats (N_a = 0 pseudo-masks: the baseline's run)."""
    folder.mkdir()
    stamp = {"git_commit": COMMIT, "fold": None, "prior_as_input": False, "control": "none",
             "n_a": 0, "auroc": 0.5}
    pd.DataFrame([stamp | {"method": "primary", "prior": "none", "guidance": "none",
                           "seed": seed, "ap": ap} for seed, ap in zip(seeds, primary_ap)]
                 ).to_csv(folder / "primary.csv", index=False)
    baseline = [stamp | {"method": "baseline", "prior": "none", "guidance": "none",
                         "seed": seed, "ap": 0.5 - 0.2 * seed} for seed in seeds]
    pd.DataFrame(baseline).to_csv(folder / "guided.csv", index=False)
    twin = [row | {"method": "kgl", "prior": "fullgrad", "guidance": "pseudo_mask"}
            for row in baseline]
    pd.DataFrame(baseline + twin).to_csv(folder / "ablation.csv", index=False)
    return folder


def test_paired_runs_reads_each_difference_against_the_seed_spread(tmp_path, capsys):
    fp32 = write_pair_study(tmp_path / "fp32", [0.9, 0.8], [0, 1])
    bf16 = write_pair_study(tmp_path / "bf16", [0.92, 0.77], [0, 1])
    table = paired_runs(fp32, bf16).set_index("system")
    assert table.index.tolist() == ["primary (image labels only)",
                                    "baseline SegDecNet, 0 human masks"]  # the twin left out
    primary = table.loc["primary (image labels only)"]
    # Differences +0.02 and -0.03: mean -0.005, largest -0.03; the fp32 spread is the std of
    # 0.9 and 0.8, 0.1 / √2 = 0.0707, so the mean difference is 0.0707 of it.
    assert (primary["runs"], primary["ap"], primary["ap_other"]) == (
        2, "0.850 ± 0.071", "0.845 ± 0.106")
    assert primary[["difference", "largest", "spread", "in_spreads"]].tolist() == \
        pytest.approx([-0.005, -0.03, 0.0707107, 0.0707107], abs=1e-6)
    assert table.loc["baseline SegDecNet, 0 human masks", "difference"] == 0
    assert main([str(fp32), "--against", str(bf16)]) == 0
    assert "| primary (image labels only) | 2 | 0.850 ± 0.071 | 0.845 ± 0.106 | -0.005 | " \
           "-0.030 | 0.07 |" in capsys.readouterr().out


def test_only_the_baselines_own_run_is_left_out(tmp_path):
    """A KGL row at N_a = 0 with the prior as input is a run of its own, not the baseline's."""
    study = write_pair_study(tmp_path / "study", [0.9], [0])
    ablation = pd.read_csv(study / "ablation.csv", dtype={"git_commit": str})
    ablation.loc[1, "prior_as_input"] = True
    ablation.to_csv(study / "ablation.csv", index=False)
    systems = paired_runs(study, study)["system"].tolist()
    assert len(systems) == 3 and "prior as input" in systems[-1]


def test_paired_runs_refuses_studies_of_different_runs(tmp_path):
    fp32 = write_pair_study(tmp_path / "fp32", [0.9, 0.8], [0, 1])
    one_seed = write_pair_study(tmp_path / "bf16", [0.9], [0])
    with pytest.raises(ValueError, match="lacks primary .image labels only. seed 1"):
        paired_runs(fp32, one_seed)
    with pytest.raises(ValueError, match="do not hold the same runs$"):
        paired_runs(one_seed, fp32)


@pytest.mark.parametrize("study", COMMITTED, ids=lambda p: p.name)
def test_committed_tables_come_from_one_clean_commit(study):
    assert check_provenance(study)


@pytest.mark.parametrize("study", COMMITTED, ids=lambda p: p.name)
def test_readme_shows_the_committed_headline(study):
    readme = (ROOT / "README.md").read_text()
    assert headline_markdown(study) in readme, (
        f"README's table for {study.name} is out of date: "
        f"python -m kgl_utils.report results/{study.name}")


@pytest.mark.parametrize("study", PRECISION, ids=lambda p: p.name)
def test_readme_shows_the_committed_precision_pairs(study, monkeypatch):
    monkeypatch.chdir(ROOT)  # the table's header names the folders as the README's command does
    readme = (ROOT / "README.md").read_text()
    table = paired_markdown(f"results/{study.name}", f"results/precision/{study.name}")
    assert table in readme, (f"README's precision table for {study.name} is out of date: "
                             f"python -m kgl_utils.report results/{study.name} --against "
                             f"results/precision/{study.name}")
