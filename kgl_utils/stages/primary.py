"""Notebook 02: the primary classifier, trained with image labels only (stage 1 of KGL)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from kgl_utils.paths import LOSSES, PREDICTIONS
from kgl_utils.results import save_figure, write_csv
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.primary import ensure_primary


def learning_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Training loss and accuracy per epoch, one line per seed and fold."""
    frame = pd.concat([h.assign(run=r) for r, h in histories.items()], ignore_index=True)
    long = frame.melt(id_vars=["epoch", "run"], value_vars=["loss", "accuracy"])
    grid = sns.relplot(long, x="epoch", y="value", hue="run", col="variable", kind="line",
                       facet_kws={"sharey": False}, height=3, aspect=1.3)
    grid.set_titles("{col_name}")
    return grid.figure


def primary_runs(ctx: StudyContext) -> list[tuple[int, int | None]]:
    """(seed, fold) of every primary the study trains."""
    return [(seed, fold) for seed in ctx.config.seeds for fold in ctx.folds]


def run_primary(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Train the primary of every seed and fold; write primary.csv, its per-image predictions
    and the learning curves."""
    rows, histories, predictions = [], {}, []
    for seed, fold in primary_runs(ctx):
        done = ensure_primary(ctx, seed, fold)
        rows.append(ctx.row(done, method="primary", prior="none", control="none", n_a=0,
                            prior_as_input=False, guidance="none", seed=seed, fold=fold))
        histories[f"seed {seed}, fold {fold}"] = pd.read_csv(done.file(LOSSES))
        with np.load(done.file(PREDICTIONS)) as z:
            predictions.append(pd.DataFrame({"seed": seed, "fold": fold, "id": z["ids"],
                                             "label": z["labels"], "score": z["scores"]}))
    table = pd.DataFrame(rows)
    write_csv(ctx.paths.table("primary.csv"), table)
    write_csv(ctx.paths.table("primary_predictions.csv"), pd.concat(predictions))
    figure = learning_curves(histories)
    save_figure(figure, ctx.paths.table("primary_learning_curve.png"))
    return table, figure
