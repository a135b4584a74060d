"""The prior unit: one saliency method's maps of one split, explaining the primary of one seed.

Control priors are not units: they are derived on demand from a method's maps (or, for ``full``
and ``oracle``, from nothing but the images and masks), so they cost nothing to store and always
match the maps they control for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgl_utils.data.base import DataError
from kgl_utils.names import METHOD_FREE_CONTROLS, SALIENCY_METHODS
from kgl_utils.paths import MAPS
from kgl_utils.results import save_npz
from kgl_utils.saliency.controls import make_control_prior
from kgl_utils.saliency.priors import LAYERLESS_METHODS, extract_priors
from kgl_utils.saliency.pseudo_masks import make_pseudo_masks
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.primary import load_primary, primary_unit
from kgl_utils.units.store import DoneUnit, Unit

SPLITS = ("train", "test")


def prior_unit(ctx: StudyContext, method: str, split: str, seed: int,
               fold: int | None) -> Unit:
    """The unit of ``method``'s maps; its target layers are part of it (none for FullGrad,
    which ignores them, so changing LayerCAM's layers leaves FullGrad's maps as they are)."""
    layer = None if method in LAYERLESS_METHODS else ctx.config.prior.layer
    return Unit("priors", {"data": ctx.data_spec(fold), "method": method, "layer": layer,
                           "split": split, "device": ctx.device.type, "bf16": ctx.primary_bf16},
                inputs=(primary_unit(ctx, seed, fold).key,))


def ensure_priors(ctx: StudyContext, method: str, split: str, seed: int,
                  fold: int | None) -> DoneUnit:
    """Extract (or reuse) the maps of ``method`` for ``split`` from the primary of ``seed``."""
    def compute(folder: Path) -> dict[str, str]:
        arrays = ctx.arrays(split, fold)
        maps = extract_priors(load_primary(ctx, seed, fold), arrays.images, method,
                              ctx.config.prior.layer, ctx.config.scale.batch_size, ctx.device,
                              bf16=ctx.primary_bf16)
        save_npz(folder / MAPS, ids=np.array(arrays.ids), maps=maps)
        return {MAPS: f"{method} maps of the {split} split, float16 in [0, 1]"}
    return ctx.units.ensure(prior_unit(ctx, method, split, seed, fold), compute)


def prior_maps(ctx: StudyContext, prior: str, split: str, seed: int,
               fold: int | None = None, control: str = "none") -> np.ndarray:
    """N×H×W maps in [0, 1] for ``split``, in the split's image order: saliency method
    ``prior``'s maps from its unit, or the ``control`` made from them.

    ``full`` and ``oracle`` need no method (``prior`` "none"). The other controls are made per
    class (``shuffled`` moves positives' maps among positives, negatives' among negatives);
    ``random`` moves the method's own pseudo-masks, so each image keeps its target's area.
    """
    if control == "oracle":
        check_oracle(ctx, fold)
    arrays = ctx.arrays(split, fold)
    if control in METHOD_FREE_CONTROLS:
        blank = np.zeros(arrays.masks.shape, np.float32)
        return make_control_prior(control, blank, arrays.masks, seed=seed).astype(np.float32)
    if prior not in SALIENCY_METHODS:
        raise ValueError(f"prior {prior!r} is not a saliency method; allowed: "
                         f"{', '.join(SALIENCY_METHODS)}")
    with np.load(ensure_priors(ctx, prior, split, seed, fold).file(MAPS)) as stored:
        if stored["ids"].tolist() != list(arrays.ids):
            raise ValueError(f"stored {prior} priors of split {split!r} belong to other "
                             f"images than the split has now; delete "
                             f"{ctx.paths.units / 'priors'} and rerun")
        base = stored["maps"].astype(np.float32)
    if control == "none":
        return base
    targets = pseudo_masks(ctx, base)
    maps = np.empty_like(base)
    for label in (0, 1):
        rows = np.flatnonzero(arrays.labels == label)
        maps[rows] = make_control_prior(control, base[rows], arrays.masks[rows], targets[rows],
                                        seed)
    return maps


def check_oracle(ctx: StudyContext, fold: int | None) -> None:
    """The oracle control is the human mask of every positive: stop where a positive has none
    (a folder dataset with masks for some defect images, or none), rather than train "no
    defect here" on it."""
    dataset = ctx.dataset(fold)
    for split in SPLITS:
        rows = dataset.split(split)
        lacking = rows.loc[(rows["label"] == 1) & ~rows["is_segmented"].astype(bool), "id"]
        if len(lacking):
            raise DataError(f"control oracle: dataset {dataset.name!r} has {len(lacking)} {split} "
                            f"positives without a human mask, e.g. {lacking.head(3).tolist()}; "
                            f"give every defect image a mask or drop oracle from prior.controls "
                            f"and ablation.controls")


def control_pairs(controls: tuple[str, ...], methods: tuple[str, ...]
                  ) -> list[tuple[str, str]]:
    """(prior, control) of each control: one per method, or ("none", control) alone for
    ``full`` and ``oracle``."""
    return [(prior, control) for control in controls
            for prior in (("none",) if control in METHOD_FREE_CONTROLS else methods)]


def prior_inputs(ctx: StudyContext, prior: str, control: str, splits: tuple[str, ...],
                 seed: int, fold: int | None) -> tuple[str, ...]:
    """Keys of the prior units a prior (or a control made from it) reads."""
    if control in METHOD_FREE_CONTROLS:
        return ()
    return tuple(prior_unit(ctx, prior, split, seed, fold).key for split in splits)


def pseudo_masks(ctx: StudyContext, maps: np.ndarray) -> np.ndarray:
    """The segmentation targets a prior gives (Otsu by default), as float in [0, 1]."""
    prior = ctx.config.prior
    return make_pseudo_masks(maps, prior.pseudo_mask, prior.threshold,
                             prior.dilate).astype(np.float32)
