"""Notebook 05: the ablation over N_a — priors × N_a × seeds (× folds), baseline beside each.

Every grid cell is a unit computed once; ``ablation.csv`` is assembled from the cells the params
ask for, so an interrupted study, run again, trains only the missing cells.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from kgl_utils.evaluation.significance import paired_against
from kgl_utils.labels import system_name
from kgl_utils.published import published_ap
from kgl_utils.results import save_figure, summarize, to_markdown, write_csv, write_text
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import control_cells
from kgl_utils.units.cells import Cell, cell_row

METRICS = ["ap", "ap_trapezoid", "auroc", "f1", "accuracy", "fp", "fn"]
GROUP = ["method", "prior", "control", "n_a"]


def ablation_cells(ctx: StudyContext) -> list[Cell]:
    config = ctx.config
    cells = []
    for fold in ctx.folds:
        for seed in config.seeds:
            for n_a in config.ablation.n_a:
                if config.ablation.baseline:
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


def with_primary(ctx: StudyContext, frame: pd.DataFrame) -> pd.DataFrame:
    """The image-labels-only primary classifier of notebook 02 as a row of the table."""
    primary = pd.read_csv(ctx.paths.table("primary.csv"))
    return pd.concat([frame, primary], ignore_index=True)


def across_folds(frame: pd.DataFrame) -> pd.DataFrame:
    """Cross-validated runs as the KolektorSDD papers report them: per seed, AP, AUROC, F1 and
    accuracy averaged over the folds, FP and FN summed."""
    if frame["fold"].nunique() <= 1:
        return frame
    how = {m: "sum" if m in ("fp", "fn") else "mean" for m in METRICS if m in frame.columns}
    return frame.groupby(GROUP + ["seed"], as_index=False, sort=False, dropna=False).agg(how)


def summary_table(frame: pd.DataFrame, test: str = "wilcoxon") -> pd.DataFrame:
    """Mean ± std per (method, prior, N_a) with the paired p-value against the baseline.

    The spread is over seeds (folds aggregated first); the paired test pairs single runs, so
    with one seed it pairs folds."""
    summary = summarize(across_folds(frame), GROUP, METRICS)
    if (frame["method"] == "baseline").any():
        kgl = frame[frame["method"] == "kgl"]
        pairs = paired_against(pd.concat([kgl, frame[frame["method"] == "baseline"]]),
                               {"method": "baseline"}, ["n_a", "seed", "fold"], GROUP,
                               test=test)
        summary = summary.merge(pairs[GROUP + ["p_value"]], on=GROUP, how="left")
    return summary


def bold_best(summary: pd.DataFrame, metric: str = "ap") -> pd.DataFrame:
    """Mark the best mean per N_a in bold (Markdown)."""
    out = summary.copy()
    best = out.groupby("n_a")[f"_{metric}_mean"].transform("max")
    top = out[f"_{metric}_mean"] == best
    out.loc[top, metric] = "**" + out.loc[top, metric] + "**"
    return out


def published_comparison(ctx: StudyContext, summary: pd.DataFrame) -> pd.DataFrame:
    """Our mean AP (%) beside the papers' numbers at the same N_a, with the difference; ours
    by the same definition of AP as the published number (``metric``)."""
    published = published_ap(ctx.config.data.dataset)
    if published.empty:
        return published
    metric = published["metric"].iloc[0]
    ours = summary[GROUP].assign(our_ap=100 * summary[f"_{metric}_mean"])
    joined = published.merge(ours, on=GROUP, how="left")
    joined["difference"] = joined["our_ap"] - joined["published_ap"]
    return joined


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
    """Run the grid, then write ablation.csv (via the grid), ablation.md and ablation_ap.png."""
    frame = with_primary(ctx, run_grid(ctx))
    summary = summary_table(frame, ctx.config.ablation.test)
    published = published_comparison(ctx, summary)
    text = to_markdown(bold_best(summary), f"Ablation over N_a — {ctx.config.study}")
    if not published.empty:
        text += "\n" + to_markdown(published, "Against the published numbers (AP %)")
    write_text(ctx.paths.table("ablation.md"), text)
    figure = ap_figure(frame, published)
    save_figure(figure, ctx.paths.table("ablation_ap.png"))
    return summary, figure
