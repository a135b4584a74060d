"""Notebook 04's comparison as a table, and the README's headline as its view: every system of
``primary.csv`` and ``guided.csv`` with folds aggregated first, mean ± std and the 95 % CI of AP
over seeds, and each KGL row (controls included) tested against the image-label-only baseline
(N = 0, weak protocol: the headline contrast) and against the baseline with all human masks.

It reads tables only, so the report can rebuild it from a study's committed CSVs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from kgl_utils.evaluation.significance import Test, contrast_tests, format_p, p_columns
from kgl_utils.labels import system_name
from kgl_utils.results import across_folds, summarize, to_markdown, write_csv, write_text

if TYPE_CHECKING:  # the report imports this module without the training stack
    from kgl_utils.stages.context import StudyContext

METRICS = ["ap", "auroc", "f1"]
# A system of notebook 04 across seeds and folds: its cell key without N_a, whose count of all
# positives differs between KolektorSDD folds, but with whether it has pixel targets at all
# (the baseline at N = 0 against the one with all masks; consistency cells have none).
SYSTEM = ["method", "prior", "control", "prior_as_input", "guidance", "clipped", "pixel_targets"]
# The headline contrast, against the image-label-only baseline, then the one against masks.
CONTRASTS = ("vs_weak", "vs_masks")


PRIMARY_AUROC_FLOOR = 0.75
"""Below this test AUROC the primary barely classifies, so its saliency cannot point at defects."""


def primary_caveat(primary: pd.DataFrame) -> str:
    """What a reader must know beside the KGL rows when the primary's mean test AUROC is under
    ``PRIMARY_AUROC_FLOOR``: its priors cannot be informative, so KGL against its controls
    tests the training targets, not the primary's knowledge. Empty otherwise."""
    auroc = float(primary["auroc"].mean())
    if auroc >= PRIMARY_AUROC_FLOOR:
        return ""
    return (f"The primary classifier's test AUROC is {auroc:.2f}, under "
            f"{PRIMARY_AUROC_FLOOR}: it barely classifies, so its priors cannot be informative "
            f"and the KGL rows do not test the prior's knowledge.")


def with_primary(ctx: StudyContext, frame: pd.DataFrame) -> pd.DataFrame:
    """The image-labels-only primary classifier of notebook 02 as a row of the table."""
    primary = pd.read_csv(ctx.paths.table("primary.csv"))
    return pd.concat([frame, primary], ignore_index=True)


def system_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with their ``SYSTEM`` key and readers' name; "all N positives" counts the
    pseudo-masked positives of the run's own seed and fold."""
    # Rows fresh from the units (fold None) meet rows read back from a CSV (fold NaN).
    runs = runs.assign(fold=pd.to_numeric(runs["fold"]))
    pseudo = runs[(runs["method"] == "kgl") & (runs["guidance"] == "pseudo_mask")]
    n_all = pseudo.groupby(["seed", "fold"], dropna=False)["n_a"].max().rename("n_all")
    runs = runs.merge(n_all.reset_index(), on=["seed", "fold"], how="left")
    names = [system_name(row, None if pd.isna(row["n_all"]) else int(row["n_all"]))
             for _, row in runs.iterrows()]
    # Rows without the column (the primary's, older tables) are not clipped.
    clipped = runs["clipped"].eq(True) if "clipped" in runs else False
    return runs.drop(columns="n_all").assign(system=names, pixel_targets=runs["n_a"] > 0,
                                             clipped=clipped)


def comparison_tables(runs: pd.DataFrame, test: Test = "wilcoxon"
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary, one row per system (its name is its first run's), and the long-form tests
    behind its ``p_vs_weak`` and ``p_vs_masks`` columns: pairs are runs of one seed and fold,
    ``p_holm`` is Holm-adjusted over every test of the table. A clipped (consistency) run is
    tested against the clipped baseline at N = 0, so the contrast is the loss alone."""
    runs = system_runs(runs)
    names = runs.groupby(SYSTEM, sort=False, dropna=False)["system"].first().reset_index()
    baseline = runs[runs["method"] == "baseline"]
    contrasts = {"vs_weak": (baseline[baseline["n_a"] == 0], ["seed", "fold", "clipped"]),
                 "vs_masks": (baseline[baseline["n_a"] > 0], ["seed", "fold"])}
    tests = contrast_tests(runs[runs["method"] == "kgl"], contrasts, SYSTEM, test=test)
    summary = summarize(across_folds(runs, SYSTEM, METRICS), SYSTEM, METRICS, ci=["ap"])
    summary = names.merge(summary, on=SYSTEM, how="left").merge(
        p_columns(tests, SYSTEM, CONTRASTS), on=SYSTEM, how="left")
    tests = tests.merge(names, on=SYSTEM, how="left")
    return summary, tests[["system", *tests.columns.drop("system")]]


def p_text(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with its p columns as a reader's text (``format_p``), for Markdown."""
    return summary.assign(**{c: summary[c].map(format_p) for c in summary.columns
                             if c.startswith("p_vs_")})


def p_note(test: Test, masks: str) -> str:
    """What a summary's p columns are, printed under it."""
    name = {"wilcoxon": "Wilcoxon signed-rank", "ttest": "paired t"}[test]
    return (f"Two-sided {name} tests, pairing runs of one seed and fold: `p_vs_weak` against "
            f"the image-label-only baseline (N_a = 0, weak protocol; for gradient-clipped "
            f"consistency runs, the baseline clipped alike), `p_vs_masks` against "
            f"{masks}; `_holm`: Holm-adjusted over every test of the table. Blank: fewer than "
            f"two pairs, or identical runs.\n")


def run_comparison(ctx: StudyContext, guided: pd.DataFrame) -> pd.DataFrame:
    """Write guided.md (notebook 04's summary) and guided_tests.csv; return the summary."""
    test = ctx.config.ablation.test
    summary, tests = comparison_tables(with_primary(ctx, guided), test)
    write_csv(ctx.paths.table("guided_tests.csv"), tests)
    text = to_markdown(p_text(summary).drop(columns=SYSTEM),
                       f"Guided training — {ctx.config.study}")
    write_text(ctx.paths.table("guided.md"),
               text + "\n" + p_note(test, "the baseline with all human masks"))
    return summary
