"""Notebook 03: the network knowledge prior — saliency maps of the primary network, computed once.

Real priors are units (one per method, split, seed and fold, from the ``grad-cam`` methods of
the study); control priors (random, shuffled, blurred, oracle) are derived from them on demand,
so the ablation can ask whether the primary network's knowledge helps or any map would do.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kgl_utils.evaluation.saliency_metrics import evaluate_saliency
from kgl_utils.plots import heatmap, image_grid, overlay, truth_title
from kgl_utils.results import save_figure, write_csv
from kgl_utils.stages.comparison import primary_caveat
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.priors import (
    SPLITS,
    control_pairs,
    ensure_priors,
    prior_maps,
    pseudo_masks,
)


def prior_quality(ctx: StudyContext) -> pd.DataFrame:
    """Each prior (and control) against the human masks, per seed, fold and split (positives
    only), and the share of a positive image its pseudo-mask covers (defined with or without
    masks). The pseudo-mask is the segmentation target as the network trains on it. Each row
    carries the provenance of the maps it scores. ``prior.quality_methods`` (e.g. FullGrad's
    reference normalisation beside grad-cam's) are scored beside ``prior.methods``, without
    controls: they train no cells.

    Without human masks (ELPV) ``images`` is 0 and the mask metrics are empty, so the table
    still says what was, and was not, measured.
    """
    methods = ctx.config.prior.methods
    variants = ([(m, "none") for m in (*methods, *ctx.config.prior.quality_methods)]
                + control_pairs(ctx.config.prior.controls, methods))
    rows = []
    for seed in ctx.config.seeds:
        for fold in ctx.folds:
            for split in SPLITS:
                arrays = ctx.arrays(split, fold)
                positive = arrays.labels == 1
                for prior, control in variants:
                    maps = prior_maps(ctx, prior, split, seed, fold, control)
                    binary = pseudo_masks(ctx, maps)
                    _, summary = evaluate_saliency(maps, arrays.masks, arrays.labels,
                                                   arrays.ids, binary=binary)
                    metrics = {"images": int(summary["count"].max()),
                               "pseudo_mask_area": float(binary[positive].mean())}
                    metrics |= {m: summary.loc[m, "mean"] for m in summary.index}
                    method = methods[0] if prior == "none" else prior  # the run behind the row
                    rows.append(ctx.row(ensure_priors(ctx, method, split, seed, fold), metrics,
                                        prior=prior, control=control, seed=seed, fold=fold,
                                        split=split))
    return pd.DataFrame(rows)


def prior_panels(ctx: StudyContext, count: int = 4
                 ) -> tuple[np.ndarray, list[list[np.ndarray]], list[str]]:
    """The first ``count`` test positives of the first seed and fold (their indices), and per
    image the panels image with mask, each prior as a heat map and the first prior's
    pseudo-mask, with the panels' titles."""
    seed, fold = ctx.config.seeds[0], ctx.folds[0]
    arrays = ctx.arrays("test", fold)
    pick = np.flatnonzero(arrays.labels == 1)[:count]
    names = list(ctx.config.prior.methods)
    maps = {n: prior_maps(ctx, n, "test", seed, fold)[pick] for n in names}
    masks = pseudo_masks(ctx, maps[names[0]])
    rows = [[overlay(arrays.images[i], arrays.masks[i]),
             *(heatmap(arrays.images[i], maps[n][k]) for n in names),
             overlay(arrays.images[i], masks[k])] for k, i in enumerate(pick)]
    titles = [truth_title(arrays.masks[pick]), *(f"prior: {n}" for n in names),
              f"pseudo-mask ({names[0]})"]
    return pick, rows, titles


def example_figure(ctx: StudyContext, count: int = 4) -> Figure:
    """Test positives: image with mask, each prior as a heat map, the first prior's
    pseudo-mask."""
    pick, rows, titles = prior_panels(ctx, count)
    return image_grid(rows, [ctx.arrays("test", ctx.folds[0]).ids[i] for i in pick], titles)


def prior_runs(ctx: StudyContext) -> list[tuple[str, str, int, int | None]]:
    """(method, split, seed, fold) of every prior unit the study reads: each method's maps (those
    of ``prior.quality_methods`` too) of the train and test splits, and of the validation split
    where the dataset has one (cells with the prior as input are scored there every epoch)."""
    prior = ctx.config.prior
    runs = []
    for seed in ctx.config.seeds:
        for fold in ctx.folds:
            validation = ("validation",) if "validation" in ctx.dataset(fold).splits else ()
            runs += [(method, split, seed, fold)
                     for method in (*prior.methods, *prior.quality_methods)
                     for split in (*SPLITS, *validation)]
    return runs


def run_priors(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Extract every prior (those of ``prior.quality_methods`` too), then write
    prior_quality.csv and prior_examples.png. Warns first when notebook 02's primary barely
    classifies (``primary_caveat``)."""
    primary = ctx.paths.table("primary.csv")
    caveat = primary_caveat(pd.read_csv(primary)) if primary.is_file() else ""
    if caveat:
        warnings.warn(caveat, stacklevel=2)
    for method, split, seed, fold in prior_runs(ctx):
        ensure_priors(ctx, method, split, seed, fold)
    quality = prior_quality(ctx)
    write_csv(ctx.paths.table("prior_quality.csv"), quality)
    figure = example_figure(ctx)
    save_figure(figure, ctx.paths.table("prior_examples.png"))
    return quality, figure
