"""Notebook 03: the network knowledge prior — saliency maps of the primary network, computed once.

Real priors come from the ``grad-cam`` methods of the study and are stored per split; control
priors (random, shuffled, blurred, oracle) are derived from them on demand, so the ablation can
ask whether the primary network's knowledge helps or any map would do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kgl_utils.config import SALIENCY_METHODS
from kgl_utils.evaluation.saliency_metrics import evaluate_saliency
from kgl_utils.plots import heatmap, image_grid, overlay, truth_title
from kgl_utils.results import save_figure, write_csv
from kgl_utils.saliency.controls import make_control_prior
from kgl_utils.saliency.priors import cached_priors
from kgl_utils.saliency.pseudo_masks import make_pseudo_masks
from kgl_utils.saliency.store import PriorStore, hash_params
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.primary import load_primary

SPLITS = ("train", "test")


def prior_store(ctx: StudyContext, fold: int | None) -> PriorStore:
    return PriorStore(ctx.results / "priors" / f"fold-{fold}")


def extraction_params(ctx: StudyContext) -> str:
    """What besides the primary checkpoint shapes the maps: a changed value recomputes them."""
    config = ctx.config
    return hash_params({"input_size": config.scale.input_size, "data": config.data,
                        "layer": config.prior.layer})


def extract_all(ctx: StudyContext, fold: int | None = None) -> None:
    """Compute (or reuse) the maps of every prior method for the train and test split."""
    model, checkpoint = load_primary(ctx, fold)
    store = prior_store(ctx, fold)
    for method in ctx.config.prior.methods:
        for split in SPLITS:
            cached_priors(store, model, ctx.arrays(split, fold), split, method, checkpoint,
                          extraction_params(ctx), layer=ctx.config.prior.layer,
                          batch_size=ctx.config.scale.batch_size, device=ctx.device)


def prior_maps(ctx: StudyContext, name: str, split: str, fold: int | None = None,
               seed: int = 0) -> np.ndarray:
    """N×H×W maps in [0, 1] of prior ``name`` for ``split``, in the split's image order.

    A saliency method's maps are read from the store notebook 03 filled; a control prior is
    derived from the first saliency method's maps (shuffled among positives only, so every
    defective image gets another defect's map).
    """
    arrays = ctx.arrays(split, fold)
    if name in SALIENCY_METHODS:
        store = prior_store(ctx, fold)
        return store.load(name, split).for_split(split, arrays.ids).astype(np.float32)
    base = prior_maps(ctx, ctx.config.prior.methods[0], split, fold)
    if name != "shuffled":
        return make_control_prior(name, base, arrays.masks, seed).astype(np.float32)
    maps = base.copy()
    positives = np.flatnonzero(arrays.labels == 1)
    maps[positives] = make_control_prior(name, base[positives], arrays.masks[positives], seed)
    return maps


def pseudo_masks(ctx: StudyContext, maps: np.ndarray) -> np.ndarray:
    """The segmentation targets a prior gives (Otsu by default), as float in [0, 1]."""
    prior = ctx.config.prior
    return make_pseudo_masks(maps, prior.pseudo_mask, prior.threshold,
                             prior.dilate).astype(np.float32)


def prior_quality(ctx: StudyContext) -> pd.DataFrame:
    """Each prior (and control) against the human masks, per fold and split (positives only),
    and the share of a positive image its pseudo-mask covers (defined with or without masks).

    Without human masks (ELPV) ``images`` is 0 and the mask metrics are empty, so the table
    still says what was, and was not, measured.
    """
    rows = []
    for fold in ctx.folds:
        for split in SPLITS:
            arrays = ctx.arrays(split, fold)
            positive = arrays.labels == 1
            for name in (*ctx.config.prior.methods, *ctx.config.prior.controls):
                maps = prior_maps(ctx, name, split, fold, ctx.config.seeds[0])
                binary = pseudo_masks(ctx, maps)
                _, summary = evaluate_saliency(maps, arrays.masks, arrays.labels, arrays.ids,
                                               binary=binary)
                row = {"fold": fold, "split": split, "prior": name,
                       "images": int(summary["count"].max()),
                       "pseudo_mask_area": float(binary[positive].mean())}
                row |= {metric: summary.loc[metric, "mean"] for metric in summary.index}
                rows.append(ctx.row(**row))
    return pd.DataFrame(rows)


def example_figure(ctx: StudyContext, count: int = 4, fold: int | None = None) -> Figure:
    """Test positives: image with mask, each prior as a heat map, the first prior's pseudo-mask."""
    arrays = ctx.arrays("test", fold)
    pick = np.flatnonzero(arrays.labels == 1)[:count]
    names = list(ctx.config.prior.methods)
    maps = {n: prior_maps(ctx, n, "test", fold)[pick] for n in names}
    masks = pseudo_masks(ctx, maps[names[0]])
    rows = [[overlay(arrays.images[i], arrays.masks[i]),
             *(heatmap(arrays.images[i], maps[n][k]) for n in names),
             overlay(arrays.images[i], masks[k])] for k, i in enumerate(pick)]
    return image_grid(rows, [arrays.ids[i] for i in pick],
                      [truth_title(arrays.masks[pick]), *names, f"pseudo-mask ({names[0]})"])


def run_priors(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Extract every prior, then write prior_quality.csv and prior_examples.png."""
    for fold in ctx.folds:
        extract_all(ctx, fold)
    quality = prior_quality(ctx)
    write_csv(ctx.results / "prior_quality.csv", quality)
    figure = example_figure(ctx, fold=ctx.folds[0])
    save_figure(figure, ctx.results / "prior_examples.png")
    return quality, figure
