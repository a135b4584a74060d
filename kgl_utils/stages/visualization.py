"""Notebook 06: what the priors and the final networks look at, as figures and as numbers.

Reads only what notebooks 03 and 04 saved (priors, test predictions), so it opens instantly on a
finished study.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kgl_utils.evaluation.saliency_metrics import evaluate_saliency
from kgl_utils.plots import heatmap, image_grid, overlay, truth_title
from kgl_utils.results import save_figure, write_csv
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import Cell, guided_cells
from kgl_utils.stages.priors import prior_maps, pseudo_masks


def label(cell: Cell) -> str:
    """A short readable name of a model for legends and menus."""
    if cell.method == "baseline":
        return f"baseline, {cell.n_a} human masks"
    extra = " + prior input" if cell.prior_as_input else ""
    return f"KGL {cell.prior} ({cell.guidance.replace('_', '-')}{extra})"


@dataclass(frozen=True)
class Predictions:
    """A trained model's saved test outputs, segmentation upsampled to the image size."""

    ids: list[str]
    scores: np.ndarray
    seg: np.ndarray  # N×H×W float32 in [0, 1]


def load_predictions(ctx: StudyContext, cell: Cell) -> Predictions:
    path = ctx.results / "predictions" / f"{cell.name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved predictions for {label(cell)}; "
                                "run notebook 04 first")
    height, width = ctx.config.scale.input_size
    with np.load(path) as z:
        seg = np.stack([cv2.resize(m.astype(np.float32), (width, height),
                                   interpolation=cv2.INTER_LINEAR) for m in z["seg"]])
        return Predictions([str(i) for i in z["ids"]], z["scores"], seg)


def shown_models(ctx: StudyContext) -> dict[str, Cell]:
    """The models of notebook 04 on the first fold, by readable name."""
    fold = ctx.folds[0]
    return {label(c): c for c in guided_cells(ctx) if c.fold == fold}


def saliency_metrics(ctx: StudyContext) -> pd.DataFrame:
    """Each final model's segmentation output against the human masks (test positives);
    ``images`` 0 and empty metrics where the test split has no masks."""
    rows = []
    for fold in ctx.folds:
        test = ctx.arrays("test", fold)
        for cell in guided_cells(ctx):
            if cell.fold != fold:
                continue
            seg = load_predictions(ctx, cell).seg
            _, summary = evaluate_saliency(seg, test.masks, test.labels, test.ids)
            row = {**cell.key(), "model": label(cell), "images": int(summary["count"].max())}
            rows.append(ctx.row(**row, **summary["mean"].to_dict()))
    return pd.DataFrame(rows)


def example_figure(ctx: StudyContext, count: int = 4) -> Figure:
    """Test positives: image with mask, priors, pseudo-mask, and each model's segmentation."""
    fold = ctx.folds[0]
    test = ctx.arrays("test", fold)
    pick = np.flatnonzero(test.labels == 1)[:count]
    methods = list(ctx.config.prior.methods)
    maps = {m: prior_maps(ctx, m, "test", fold)[pick] for m in methods}
    pseudo = pseudo_masks(ctx, maps[methods[0]])
    models = {name: load_predictions(ctx, cell).seg[pick]
              for name, cell in shown_models(ctx).items()
              if cell.method == "baseline" or (not cell.prior_as_input
                                               and cell.guidance == "pseudo_mask")}
    rows = [[overlay(test.images[i], test.masks[i]),
             *(heatmap(test.images[i], maps[m][k]) for m in methods),
             overlay(test.images[i], pseudo[k]),
             *(heatmap(test.images[i], seg[k]) for seg in models.values())]
            for k, i in enumerate(pick)]
    titles = [truth_title(test.masks[pick]), *(f"prior: {m}" for m in methods),
              f"pseudo-mask ({methods[0]})", *models]
    return image_grid(rows, [test.ids[i] for i in pick], titles)


def run_visualization(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Write saliency_metrics.csv and saliency_examples.png."""
    metrics = saliency_metrics(ctx)
    write_csv(ctx.results / "saliency_metrics.csv", metrics)
    figure = example_figure(ctx)
    save_figure(figure, ctx.results / "saliency_examples.png")
    return metrics, figure
