"""Notebook 06: what the priors and the final networks look at, as figures and as numbers.

Reads the units of notebooks 03 and 04 (priors, test predictions), so it opens instantly on a
finished study (and computes whatever of them is missing).
"""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.figure import Figure

from kgl_utils.evaluation.saliency_metrics import evaluate_saliency
from kgl_utils.labels import system_name
from kgl_utils.plots import heatmap, image_grid
from kgl_utils.results import save_figure, write_csv
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import all_positives, guided_cells
from kgl_utils.stages.priors import prior_panels
from kgl_utils.units.cells import Cell, cell_segmentation, ensure_cell


def shown_models(ctx: StudyContext) -> dict[str, Cell]:
    """The models of notebook 04 on the first seed and fold, by readable name."""
    seed, fold = ctx.config.seeds[0], ctx.folds[0]
    n_all = all_positives(ctx, fold, with_mask=False)
    return {system_name(c.key(), n_all): c for c in guided_cells(ctx)
            if c.fold == fold and c.seed == seed}


def saliency_metrics(ctx: StudyContext) -> pd.DataFrame:
    """Each final model's segmentation output against the human masks (test positives);
    ``images`` 0 and empty metrics where the test split has no masks."""
    rows = []
    for cell in guided_cells(ctx):
        test = ctx.arrays("test", cell.fold)
        seg = cell_segmentation(ctx, cell)
        _, summary = evaluate_saliency(seg, test.masks, test.labels, test.ids)
        metrics = {"images": int(summary["count"].max()), **summary["mean"].to_dict()}
        rows.append(ctx.row(ensure_cell(ctx, cell), metrics, **cell.key()))
    return pd.DataFrame(rows)


def example_figure(ctx: StudyContext, count: int = 4) -> Figure:
    """Test positives: image with mask, priors, pseudo-mask, and each model's segmentation."""
    test = ctx.arrays("test", ctx.folds[0])
    pick, rows, titles = prior_panels(ctx, count)
    models = {name: cell_segmentation(ctx, cell)[pick]
              for name, cell in shown_models(ctx).items()
              if cell.method == "baseline" or (not cell.prior_as_input
                                               and cell.guidance == "pseudo_mask")}
    rows = [[*panels, *(heatmap(test.images[i], seg[k]) for seg in models.values())]
            for k, (i, panels) in enumerate(zip(pick, rows))]
    titles = [textwrap.fill(t, 24) for t in (*titles, *models)]  # long names, narrow columns
    return image_grid(rows, [test.ids[i] for i in pick], titles)


def run_visualization(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Write saliency_metrics.csv and saliency_examples.png."""
    metrics = saliency_metrics(ctx)
    write_csv(ctx.paths.table("saliency_metrics.csv"), metrics)
    figure = example_figure(ctx)
    save_figure(figure, ctx.paths.table("saliency_examples.png"), dpi=80)  # a wide grid
    return metrics, figure
