"""The prior unit: one saliency method's maps of one split, explaining the primary of one seed.

Control priors are not units: they are derived on demand from the study's first method (and the
masks), so they cost nothing to store and always match the maps they control for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgl_utils.names import SALIENCY_METHODS
from kgl_utils.paths import MAPS
from kgl_utils.results import save_npz
from kgl_utils.saliency.controls import make_control_prior
from kgl_utils.saliency.priors import extract_priors
from kgl_utils.saliency.pseudo_masks import make_pseudo_masks
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.primary import load_primary, primary_unit
from kgl_utils.units.store import DoneUnit, Unit

SPLITS = ("train", "test")


def prior_unit(ctx: StudyContext, method: str, split: str, seed: int,
               fold: int | None) -> Unit:
    return Unit("priors", {"data": ctx.data_spec(fold), "method": method,
                           "layer": ctx.config.prior.layer, "split": split,
                           "device": ctx.device.type},
                inputs=(primary_unit(ctx, seed, fold).key,))


def ensure_priors(ctx: StudyContext, method: str, split: str, seed: int,
                  fold: int | None) -> DoneUnit:
    """Extract (or reuse) the maps of ``method`` for ``split`` from the primary of ``seed``."""
    def compute(folder: Path) -> dict[str, str]:
        arrays = ctx.arrays(split, fold)
        maps = extract_priors(load_primary(ctx, seed, fold), arrays.images, method,
                              ctx.config.prior.layer, ctx.config.scale.batch_size, ctx.device)
        save_npz(folder / MAPS, ids=np.array(arrays.ids), maps=maps)
        return {MAPS: f"{method} maps of the {split} split, float16 in [0, 1]"}
    return ctx.units.ensure(prior_unit(ctx, method, split, seed, fold), compute)


def prior_maps(ctx: StudyContext, name: str, split: str, seed: int,
               fold: int | None = None) -> np.ndarray:
    """N×H×W maps in [0, 1] of prior ``name`` for ``split``, in the split's image order.

    A saliency method's maps come from its unit; a control prior is derived from the first
    saliency method's maps (shuffled among positives only, so every defective image gets
    another defect's map).
    """
    arrays = ctx.arrays(split, fold)
    if name in SALIENCY_METHODS:
        with np.load(ensure_priors(ctx, name, split, seed, fold).file(MAPS)) as stored:
            if stored["ids"].tolist() != list(arrays.ids):
                raise ValueError(f"stored {name} priors of split {split!r} belong to other "
                                 f"images than the split has now; delete "
                                 f"{ctx.paths.units / 'priors'} and rerun")
            return stored["maps"].astype(np.float32)
    base = prior_maps(ctx, ctx.config.prior.methods[0], split, seed, fold)
    if name != "shuffled":
        return make_control_prior(name, base, arrays.masks, seed).astype(np.float32)
    maps = base.copy()
    positives = np.flatnonzero(arrays.labels == 1)
    maps[positives] = make_control_prior(name, base[positives], arrays.masks[positives], seed)
    return maps


def prior_inputs(ctx: StudyContext, name: str, splits: tuple[str, ...], seed: int,
                 fold: int | None) -> tuple[str, ...]:
    """Keys of the prior units that prior ``name`` (a method or a control) is made from."""
    method = name if name in SALIENCY_METHODS else ctx.config.prior.methods[0]
    return tuple(prior_unit(ctx, method, split, seed, fold).key for split in splits)


def pseudo_masks(ctx: StudyContext, maps: np.ndarray) -> np.ndarray:
    """The segmentation targets a prior gives (Otsu by default), as float in [0, 1]."""
    prior = ctx.config.prior
    return make_pseudo_masks(maps, prior.pseudo_mask, prior.threshold,
                             prior.dilate).astype(np.float32)
