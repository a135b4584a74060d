"""Notebook 05: the ablation over N_a — priors × N_a × seeds (× folds), baseline beside each.

Every grid cell is a unit computed once; ``ablation.csv`` is assembled from the cells the params
ask for, so an interrupted study, run again, trains only the missing cells.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from kgl_utils.evaluation.significance import Test, contrast_tests, p_columns
from kgl_utils.labels import system_name
from kgl_utils.published import CLASS_MEANS, published_ap
from kgl_utils.results import (
    across_folds,
    save_figure,
    summarize,
    to_markdown,
    write_csv,
    write_text,
)
from kgl_utils.stages.comparison import CONTRASTS, p_note, p_text, with_primary
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import control_cells
from kgl_utils.units.cells import Cell, cell_row

METRICS = ["ap", "ap_trapezoid", "auroc", "f1", "accuracy", "fp", "fn"]
GROUP = ["method", "prior", "control", "n_a"]


def ablation_cells(ctx: StudyContext) -> list[Cell]:
    """The grid's cells. The image-label-only baseline (N_a = 0) is always there: every KGL
    cell is tested against it. ``ablation.baseline`` adds the baseline with N_a human masks
    beside each N_a > 0, which needs that many positives with a mask (notebook 01 checks)."""
    config = ctx.config
    cells = []
    for fold in ctx.folds:
        for seed in config.seeds:
            for n_a in config.ablation.n_a:
                if config.ablation.baseline or n_a == 0:
                    cells.append(Cell.baseline(n_a, seed, fold))
                cells += [Cell("kgl", prior, n_a, seed, fold, config.ablation.prior_as_input)
                          for prior in config.ablation_priors]
                cells += control_cells(ctx, config.ablation.controls, config.ablation_priors,
                                       n_a, seed, fold, config.ablation.prior_as_input)
    return cells


def run_grid(ctx: StudyContext) -> pd.DataFrame:
    """Every cell of the grid (training the missing ones): ablation.csv, the long-form table."""
    table = pd.DataFrame([cell_row(ctx, cell) for cell in ablation_cells(ctx)])
    write_csv(ctx.paths.table("ablation.csv"), table)
    return table


def ablation_tests(frame: pd.DataFrame, test: Test = "wilcoxon") -> pd.DataFrame:
    """Each KGL cell (controls included) against the image-label-only baseline (N_a = 0, the
    weak protocol; ``vs_weak``, the headline contrast) and against the baseline with the same
    N_a of human masks (``vs_masks``), pairing runs of one seed and fold; Holm over both."""
    baseline = frame[frame["method"] == "baseline"]
    contrasts = {"vs_weak": (baseline[baseline["n_a"] == 0], ["seed", "fold"]),
                 "vs_masks": (baseline[baseline["n_a"] > 0], ["n_a", "seed", "fold"])}
    return contrast_tests(frame[frame["method"] == "kgl"], contrasts, GROUP, test=test)


def summary_table(frame: pd.DataFrame, test: Test = "wilcoxon") -> pd.DataFrame:
    """Mean ± std and the 95 % CI of AP per (method, prior, control, N_a) with the paired
    p-values of ``ablation_tests``, raw and Holm-adjusted (blank without two pairs).

    The spread is over seeds (folds aggregated first); the paired test pairs single runs, so
    with one seed it pairs folds."""
    summary = summarize(across_folds(frame, GROUP, METRICS), GROUP, METRICS, ci=["ap"])
    tests = p_columns(ablation_tests(frame, test), GROUP, CONTRASTS)
    return summary.merge(tests, on=GROUP, how="left")


def bold_best(summary: pd.DataFrame, metric: str = "ap") -> pd.DataFrame:
    """Mark the best mean per N_a in bold (Markdown)."""
    out = summary.copy()
    best = out.groupby("n_a")[f"_{metric}_mean"].transform("max")
    top = out[f"_{metric}_mean"] == best
    out.loc[top, metric] = "**" + out.loc[top, metric] + "**"
    return out


def published_comparison(dataset: str, summary: pd.DataFrame,
                         classes: int | None = None) -> pd.DataFrame:
    """Our mean AP (%) beside the papers' numbers at the same N_a, with the difference; ours
    by the same definition of AP as the published number (``metric``). ``classes``: the number
    of classes ``summary`` averages (see ``published.CLASS_MEANS``)."""
    published = published_ap(dataset, classes)
    if published.empty:
        return published
    metric = published["metric"].iloc[0]
    ours = summary[GROUP].assign(our_ap=100 * summary[f"_{metric}_mean"])
    joined = published.merge(ours, on=GROUP, how="left")
    joined["difference"] = joined["our_ap"] - joined["published_ap"]
    return joined


def class_mean_comparison(frames: Mapping[int, pd.DataFrame], dataset: str = "dagm",
                          test: Test = "wilcoxon") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation over every class of a ``CLASS_MEANS`` dataset (class → that class study's
    ablation.csv): per seed, each cell's metrics averaged over the classes, summarised, and
    compared with the published class means. Refuses a missing class or a cell that not
    every class has: a mean over some classes is not the papers' number."""
    expected = set(range(1, CLASS_MEANS[dataset] + 1))
    if set(frames) != expected:
        raise ValueError(f"{dataset}: the published numbers average classes "
                         f"{sorted(expected)}; got {sorted(frames)}")
    runs = pd.concat([f.assign(dataset_class=c) for c, f in frames.items()], ignore_index=True)
    runs = across_folds(runs, GROUP + ["dataset_class"], METRICS)
    have = runs.groupby(GROUP + ["seed"], dropna=False)["dataset_class"].nunique()
    if (have < len(expected)).any():
        missing = have[have < len(expected)].reset_index().iloc[0].to_dict()
        raise ValueError(f"{dataset}: not every class has the run {missing}")
    means = runs.groupby(GROUP + ["seed"], as_index=False, sort=False, dropna=False)[
        [m for m in METRICS if m in runs.columns]].mean().assign(fold=None)
    summary = summary_table(means, test)
    return summary, published_comparison(dataset, summary, classes=len(expected))


def ap_figure(frame: pd.DataFrame, published: pd.DataFrame) -> Figure:
    """AP against N_a per method and prior (mean with its spread), published points beside."""
    data = frame[frame["method"] != "primary"]
    data = data.assign(system=[system_name(row, counts=False) for _, row in data.iterrows()])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data, x="n_a", y="ap", hue="system", marker="o", errorbar="sd", ax=ax)
    primary = frame[frame["method"] == "primary"]
    if not primary.empty:
        ax.axhline(primary["ap"].mean(), color="grey", linestyle=":",
                   label=system_name({"method": "primary"}))
    for (method, prior), rows in published.groupby(["method", "prior"]):
        ax.plot(rows["n_a"], rows["published_ap"] / 100, linestyle="--", marker="x",
                label=f"published {method} · {prior}")
    ax.set(xlabel="N_a (positives with a mask or pseudo-mask)", ylabel="AP")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def run_ablation(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Run the grid, then write ablation.csv (via the grid), ablation_tests.csv, ablation.md and
    ablation_ap.png."""
    frame = with_primary(ctx, run_grid(ctx))
    test = ctx.config.ablation.test
    write_csv(ctx.paths.table("ablation_tests.csv"), ablation_tests(frame, test))
    summary = summary_table(frame, test)
    dataset = ctx.config.data.dataset
    published = published_comparison(dataset, summary)
    text = to_markdown(p_text(bold_best(summary)), f"Ablation over N_a — {ctx.config.study}")
    text += "\n" + p_note(test, "the baseline with the same N_a of human masks")
    if not published.empty:
        text += "\n" + to_markdown(published, "Against the published numbers (AP %)")
    elif dataset in CLASS_MEANS:
        text += (f"\nThe published {dataset} numbers are the mean over its "
                 f"{CLASS_MEANS[dataset]} classes: run one study per class and compare their "
                 f"mean with `kgl_utils.stages.ablation.class_mean_comparison`.\n")
    write_text(ctx.paths.table("ablation.md"), text)
    figure = ap_figure(frame, published)
    save_figure(figure, ctx.paths.table("ablation_ap.png"))
    return summary, figure
