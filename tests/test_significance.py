"""The statistics over the whole pipeline: Holm's correction, the t-interval of a cell, and
notebook 04's comparison, which tests KGL against the baseline without masks (the headline
contrast) and against the baseline with all masks, folds aggregated before the spread."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kgl_utils.evaluation.significance import holm, t_interval
from kgl_utils.results import summarize, to_markdown
from kgl_utils.stages.comparison import SYSTEM, comparison_tables, run_comparison


def test_holm_adjusts_step_down_monotone_and_capped():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the running
    # maximum makes the last 0.06; back in the input order:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.3·3 = 0.9, 0.6·2 = 1.2 and 0.9·1 = 0.9 (1.2 by monotony): capped at 1.
    np.testing.assert_allclose(holm([0.3, 0.6, 0.9]), [0.9, 1.0, 1.0])
    # A NaN is no test: it stays blank and the family has two members.
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    assert holm([]).shape == (0,)


def test_t_interval_on_a_hand_worked_sample():
    # Mean 0.7, s = 0.2, t(0.975, 2) = 4.303: 0.7 ± 4.303 · 0.2 / √3 = 0.7 ± 0.4969.
    low, high = t_interval([0.5, 0.7, 0.9])
    assert (low, high) == pytest.approx((0.2031, 1.1969), abs=1e-4)
    assert np.isnan(t_interval([0.5])).all()  # one run: no spread, no interval


def test_summary_puts_the_interval_beside_its_metric_and_blanks_single_runs():
    frame = pd.DataFrame({"method": ["a", "a", "a", "b"], "ap": [0.5, 0.7, 0.9, 0.4]})
    out = summarize(frame, ["method"], ["ap"], ci=["ap"])
    assert out.columns.tolist() == ["method", "runs", "ap", "_ap_mean", "ap_ci95"]
    assert out["ap_ci95"].tolist() == ["[0.203, 1.197]", ""]


def test_markdown_leaves_a_missing_number_blank():
    text = to_markdown(pd.DataFrame({"system": ["x", "y"], "p": [0.25, np.nan]}))
    assert text.splitlines()[3].replace(" ", "") == "|y||"
    assert "nan" not in text


N_ALL = {0: 35, 1: 35, 2: 34}  # positives per training fold differ, as KolektorSDD's do
ROUGH = [0.01, -0.02, 0.03, -0.04, 0.05, -0.06]  # the random control: signs alternate


def guided_runs() -> pd.DataFrame:
    """Two seeds × three folds of notebook 04's systems, plus the primary.

    The baseline without masks has AP 0.5 + 0.041·s + 0.01·f, the one with all masks 0.4 more.
    KGL fullgrad is 0.3 + 0.001·k above the first (k = 3s + f: all six pairs on one side, no
    ties), consistency 0.05 + 0.001·k below it, the random control ±0.01·(k + 1), alternating.
    """
    rows = []
    for seed in (0, 1):
        for fold, n_all in N_ALL.items():
            weak, k = 0.5 + 0.041 * seed + 0.01 * fold, 3 * seed + fold
            key = {"seed": seed, "fold": fold, "prior_as_input": False, "control": "none"}
            rows += [key | row for row in [
                {"method": "primary", "prior": "none", "guidance": "none", "n_a": 0, "ap": 0.9},
                {"method": "baseline", "prior": "none", "guidance": "none", "n_a": 0,
                 "ap": weak},
                {"method": "baseline", "prior": "none", "guidance": "none", "n_a": n_all,
                 "ap": weak + 0.4},
                {"method": "kgl", "prior": "fullgrad", "guidance": "pseudo_mask", "n_a": n_all,
                 "ap": weak + 0.3 + 0.001 * k},
                {"method": "kgl", "prior": "fullgrad", "guidance": "consistency", "n_a": 0,
                 "ap": weak - 0.05 - 0.001 * k},
                {"method": "kgl", "prior": "fullgrad", "guidance": "pseudo_mask", "n_a": n_all,
                 "ap": weak + ROUGH[k]} | {"control": "random"},
                {"method": "distillation", "prior": "none", "guidance": "none", "n_a": 0,
                 "ap": 0.7}]]
    return pd.DataFrame(rows)


def test_comparison_aggregates_folds_then_tests_both_contrasts_with_holm():
    summary, tests = comparison_tables(guided_runs())
    summary = summary.set_index("system")
    # One row per system although "all positives" counts 35 or 34 by fold (named by fold 0).
    fullgrad = "KGL, fullgrad pseudo-masks for all 35 positives"
    assert summary.index.tolist() == [
        "primary (image labels only)", "baseline SegDecNet, 0 human masks",
        "baseline SegDecNet, 35 human masks", fullgrad,
        "KGL, fullgrad consistency loss (0 human masks)",
        "KGL, random control of fullgrad pseudo-masks for all 35 positives",
        "distillation (unsupervised)"]
    # Per seed over the folds: 0.5 + 0.041·s + 0.01 + 0.3 + 0.001·(3s + 1) = 0.811 + 0.044·s,
    # so 0.811 and 0.855 over the two seeds: mean 0.833, std 0.044/√2 = 0.031; the interval
    # 0.833 ± t(0.975, 1) · 0.022 = 0.833 ± 12.706 · 0.022 = 0.833 ± 0.2795.
    assert summary.loc[fullgrad, "runs"] == 2
    assert summary.loc[fullgrad, "ap"] == "0.833 ± 0.031"
    assert summary.loc[fullgrad, "ap_ci95"] == "[0.553, 1.113]"
    # Six (seed, fold) pairs all on one side: exact two-sided Wilcoxon p = 2 / 2**6 = 1/32.
    # The random control against the weak baseline: ranks 1…6 with signs +−+−+−, W+ = 9;
    # 27 of the 64 sign patterns give W+ ≤ 9, so p = 2 · 27/64 = 0.84375.
    expected = {fullgrad: (1 / 32, 1 / 32),
                "KGL, fullgrad consistency loss (0 human masks)": (1 / 32, 1 / 32),
                "KGL, random control of fullgrad pseudo-masks for all 35 positives":
                    (0.84375, 1 / 32)}
    for system, (weak, masks) in expected.items():
        assert summary.loc[system, ["p_vs_weak", "p_vs_masks"]].tolist() == pytest.approx(
            [weak, masks]), system
    # Holm over the table's six tests: five tie at 1/32, scaled by 6 … 2 and made monotone,
    # each 6/32; the largest keeps 0.84375 (times 1, above 6/32).
    holm_ = summary.loc[list(expected), ["p_vs_weak_holm", "p_vs_masks_holm"]].to_numpy()
    np.testing.assert_allclose(holm_, [[6 / 32, 6 / 32], [6 / 32, 6 / 32], [0.84375, 6 / 32]])
    untested = ["primary (image labels only)", "baseline SegDecNet, 0 human masks",
                "baseline SegDecNet, 35 human masks", "distillation (unsupervised)"]
    assert summary.loc[untested, ["p_vs_weak", "p_vs_masks"]].isna().all().all()

    assert tests.columns.tolist() == ["system", *SYSTEM, "contrast", "pairs", "test",
                                      "difference", "p_value", "p_holm"]
    assert len(tests) == 6 and (tests["pairs"] == 6).all()
    assert tests.groupby("contrast", sort=False).size().to_dict() == {"vs_weak": 3,
                                                                      "vs_masks": 3}
    fullgrad_weak = tests[(tests["system"] == fullgrad) & (tests["contrast"] == "vs_weak")]
    assert fullgrad_weak["difference"].item() == pytest.approx(0.3025)  # 0.3 + 0.001·2.5


def test_clipped_consistency_runs_are_tested_against_the_clipped_baseline():
    runs = guided_runs().assign(clipped=lambda f: f["guidance"] == "consistency")
    weak = runs[(runs["method"] == "baseline") & (runs["n_a"] == 0)]
    # The clipped baseline is 0.1 below the plain one: consistency (0.05 + 0.001·k below the
    # plain one) is then 0.05 − 0.001·k above it, 0.0475 on average over k = 0…5.
    runs = pd.concat([runs, weak.assign(clipped=True, ap=weak["ap"] - 0.1)], ignore_index=True)
    summary, tests = comparison_tables(runs)
    assert "baseline SegDecNet, 0 human masks, gradient clipped" in summary["system"].tolist()
    row = tests[(tests["guidance"] == "consistency") & (tests["contrast"] == "vs_weak")]
    assert row["difference"].item() == pytest.approx(0.0475)
    assert row["pairs"].item() == 6 and row["p_value"].item() == pytest.approx(1 / 32)


def test_one_seed_and_one_fold_leave_the_tests_blank():
    runs = guided_runs()
    summary, tests = comparison_tables(runs[(runs["seed"] == 0) & (runs["fold"] == 0)])
    assert (tests["pairs"] == 1).all()
    assert tests[["p_value", "p_holm"]].isna().all().all()
    assert summary.filter(like="p_vs").isna().all().all()
    assert (summary["ap_ci95"] == "").all() and (summary["runs"] == 1).all()
    # Without any KGL row there is nothing to test, and the columns say so.
    untested, tests = comparison_tables(runs[runs["method"] != "kgl"])
    assert tests.empty
    assert untested[["p_vs_weak", "p_vs_weak_holm", "p_vs_masks", "p_vs_masks_holm"]].isna().all(
        ).all()


def test_run_comparison_writes_the_summary_and_its_tests(tmp_path):
    runs = guided_runs()
    runs[runs["method"] == "primary"].to_csv(tmp_path / "primary.csv", index=False)
    ctx = SimpleNamespace(paths=SimpleNamespace(table=lambda name: tmp_path / name),
                          config=SimpleNamespace(study="tiny",
                                                 ablation=SimpleNamespace(test="ttest")))
    summary = run_comparison(ctx, runs[runs["method"] != "primary"])
    assert len(summary) == 7 and summary["system"].iloc[-1] == "primary (image labels only)"
    tests = pd.read_csv(tmp_path / "guided_tests.csv")
    assert len(tests) == 6 and set(tests["test"]) == {"ttest"}
    text = (tmp_path / "guided.md").read_text()
    assert text.startswith("## Guided training — tiny")
    assert "| p_vs_weak " in text and "| < 0.001 " in text and "| 0.784 " in text
    assert "paired t tests" in text and "method" not in text
