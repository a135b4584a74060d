"""The SegDecNet cell: one training run of the study's comparisons and of the N_a ablation.

A ``Cell`` names a result (method, prior, N_a, guidance, seed, fold); its unit is the run that
produces it. Cells that train exactly the same network share one unit (see ``training_twin``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from kgl_utils.data.base import SplitArrays
from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.losses import dilate_mask
from kgl_utils.models.segdec import SegDecNet
from kgl_utils.names import (
    CONSISTENCY_GUIDANCES,
    METHOD_FREE_CONTROLS,
    CellMethod,
    ControlPrior,
    Guidance,
    SaliencyMethod,
)
from kgl_utils.paths import CHECKPOINT, LOSSES, PREDICTIONS, ROW
from kgl_utils.results import save_npz, write_json
from kgl_utils.saliency.differentiable import ConsistencyLoss
from kgl_utils.stages.context import StudyContext
from kgl_utils.training import TrainConfig, predict, train
from kgl_utils.units.priors import prior_inputs, prior_maps, pseudo_masks
from kgl_utils.units.store import DoneUnit, Unit

CELL_KEY = ["method", "prior", "control", "n_a", "prior_as_input", "guidance", "clipped", "seed",
            "fold"]


@dataclass(frozen=True)
class Cell:
    """One SegDecNet result: the baseline with ``n_a`` human masks, or KGL with a prior.

    KGL's ``n_a`` counts the positives whose pseudo-mask is a segmentation target (the paper's
    ablation); with a consistency guidance the prior instead pulls the network's own Grad-CAM
    and ``n_a`` positives keep human masks. ``hybrid`` gives every other positive its pseudo-mask
    while the ``n_a`` chosen keep human masks. A ``control`` cell trains on that control made
    from the method ``prior`` (prior "none" for the method-free ``full`` and ``oracle``). The
    baseline has prior, control and guidance ``"none"``. ``clipped`` cells clip the gradient
    norm as consistency cells must: a consistency cell is clipped, and its baseline is the
    clipped one, so the comparison does not mix the loss with the clipping.
    """

    method: CellMethod
    prior: SaliencyMethod | Literal["none"]
    n_a: int
    seed: int
    fold: int | None = None
    prior_as_input: bool = False
    guidance: Guidance | Literal["none"] = "pseudo_mask"
    hybrid: bool = False
    control: ControlPrior | Literal["none"] = "none"
    clipped: bool = False

    def __post_init__(self) -> None:
        if self.consistency and not self.clipped:
            object.__setattr__(self, "clipped", True)
        if self.method == "baseline" and (self.prior, self.guidance, self.control) != (
                "none", "none", "none"):
            raise ValueError(f"a baseline cell has prior, control and guidance 'none': {self}")
        if self.method == "kgl" and (self.prior == "none") != (
                self.control in METHOD_FREE_CONTROLS):
            raise ValueError(f"a KGL cell names a saliency method unless its control is one of "
                             f"{', '.join(METHOD_FREE_CONTROLS)}: {self}")

    @classmethod
    def baseline(cls, n_a: int, seed: int, fold: int | None = None, clipped: bool = False
                 ) -> Cell:
        return cls("baseline", "none", n_a, seed, fold, guidance="none", clipped=clipped)

    @property
    def consistency(self) -> bool:
        """Guided by a consistency loss on the network's own saliency (either order)."""
        return self.guidance in CONSISTENCY_GUIDANCES

    def training_twin(self) -> Cell:
        """The cell whose run this one is: KGL with no pseudo-mask, no prior input and no
        consistency loss trains exactly the baseline with N_a = 0, so it reuses that run."""
        if (self.method == "kgl" and self.n_a == 0 and not self.prior_as_input
                and self.guidance == "pseudo_mask" and not self.hybrid):
            return Cell.baseline(0, self.seed, self.fold)
        return self

    def key(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in CELL_KEY}

    @property
    def protocol(self) -> Literal["weak", "mixed"]:
        """``weak`` when no positive has a pixel target (N = 0 without pseudo-masks, or a
        consistency loss with no human mask): the authors' image-label-only settings."""
        targetless = self.n_a == 0 and not self.hybrid
        return "weak" if targetless else "mixed"


def segdec_train_config(ctx: StudyContext, cell: Cell) -> TrainConfig:
    """The profile's SegDecNet settings (its rates before the segdec section's); a consistency
    cell clips its gradient norm. Human masks are dilated by ``data.dilate`` (thin
    annotations); pseudo-masks are the targets as they are (``prior.dilate`` is applied when
    they are made)."""
    config, scale = ctx.config, ctx.config.scale
    segdec, weak = config.segdec, cell.protocol == "weak"
    pseudo = cell.method == "kgl" and cell.guidance == "pseudo_mask"
    return TrainConfig(
        epochs=scale.epochs, batch_size=scale.batch_size, w_pos=segdec.w_pos, p=segdec.p,
        lr=(scale.weak_lr or segdec.weak.lr or segdec.lr) if weak
        else (scale.segdec_lr or segdec.lr),
        delta=(segdec.weak.delta or segdec.delta) if weak else segdec.delta,
        dynamic_balance=segdec.weak.dynamic_balance if weak else segdec.dynamic_balance,
        dilate=0 if pseudo else config.data.dilate, momentum=segdec.momentum,
        weight_decay=segdec.weight_decay, flips=segdec.flips,
        soft_class_target=segdec.soft_class_target, seed=cell.seed,
        device=str(ctx.device),
        max_grad_norm=config.guided.consistency_max_grad_norm if cell.clipped else None,
        checkpoint_every=max(1, scale.epochs // 5), bf16=ctx.bf16, channels_last=ctx.bf16,
        progress=True)


def build_segdec(ctx: StudyContext, cell: Cell) -> SegDecNet:
    torch.manual_seed(cell.seed)
    return SegDecNet(ctx.config.data.channels, width=ctx.config.scale.width,
                     extra_input_channels=int(cell.prior_as_input),
                     gradient_adjustment=ctx.config.segdec.gradient_adjustment)


def training_inputs(ctx: StudyContext, cell: Cell) -> dict:
    """The ``train`` keyword arguments that make a cell what it is (targets, priors, hook)."""
    arrays = ctx.arrays("train", cell.fold)
    positive = arrays.labels == 1
    human = np.isin(arrays.ids, ctx.masked(cell.n_a, cell.seed, cell.fold, with_mask=True)) \
        if cell.method == "baseline" or cell.consistency or cell.hybrid else None
    if cell.method == "baseline":
        return {"segmented": ~positive | human}
    maps = prior_maps(ctx, cell.prior, "train", cell.seed, cell.fold, cell.control)
    kwargs: dict = {"priors": maps if cell.prior_as_input else None}
    if cell.consistency:  # fades with λ where the cell's protocol balances
        consistency = ctx.config.guided
        balanced = segdec_train_config(ctx, cell).dynamic_balance
        kwargs |= {"segmented": ~positive | human, "priors": maps,
                   "extra_loss": ConsistencyLoss(
                       consistency.consistency_distance, consistency.consistency_weight,
                       epochs=ctx.config.scale.epochs if balanced else None,
                       second_order=cell.guidance == "consistency")}
        return kwargs
    targets = pseudo_masks(ctx, maps)
    if cell.hybrid:  # human masks get the dilation training gives them elsewhere
        targets[human] = [dilate_mask(m.astype(np.float32), ctx.config.data.dilate)
                          for m in arrays.masks[human]]
        return kwargs | {"segmented": np.ones(len(arrays), bool), "masks": targets}
    chosen = np.isin(arrays.ids, ctx.masked(cell.n_a, cell.seed, cell.fold, with_mask=False))
    return kwargs | {"segmented": ~positive | chosen, "masks": targets}


def validation_arrays(ctx: StudyContext, fold: int | None) -> SplitArrays | None:
    """The split's validation list where the dataset has one (Severstal's official split files):
    the epoch a cell keeps is chosen there, as the mixed-supervision authors do."""
    return ctx.arrays("validation", fold) if "validation" in ctx.dataset(fold).splits else None


def cell_unit(ctx: StudyContext, cell: Cell) -> Unit:
    """The unit of the run a cell shows: its training twin's, keyed by every setting that
    shapes that run and by the prior units it reads."""
    run = cell.training_twin()
    spec: dict = {"data": ctx.data_spec(run.fold), "cell": {**run.key(), "hybrid": run.hybrid},
                  "train": segdec_train_config(ctx, run).result_settings(),
                  "width": ctx.config.scale.width, "device": ctx.device.type,
                  "gradient_adjustment": ctx.config.segdec.gradient_adjustment}
    inputs: tuple[str, ...] = ()
    if run.method == "kgl":
        prior = ctx.config.prior
        spec["prior"] = {"pseudo_mask": prior.pseudo_mask, "threshold": prior.threshold,
                         "dilate": prior.dilate}
        if run.consistency:
            guided = ctx.config.guided
            spec["consistency"] = {"distance": guided.consistency_distance,
                                   "weight": guided.consistency_weight}
        splits = ("train", "test") if run.prior_as_input else ("train",)
        if run.prior_as_input and validation_arrays(ctx, run.fold) is not None:
            splits += ("validation",)
        inputs = prior_inputs(ctx, run.prior, run.control, splits, run.seed, run.fold)
    return Unit("segdec", spec, inputs)


def ensure_cell(ctx: StudyContext, cell: Cell) -> DoneUnit:
    """Train (or resume, or reuse) a cell's run and score it on its test split; the test
    segmentation maps are kept for notebook 06."""
    run = cell.training_twin()

    def compute(folder: Path) -> dict[str, str]:
        validation = validation_arrays(ctx, run.fold)
        validation_priors = (prior_maps(ctx, run.prior, "validation", run.seed, run.fold,
                                        run.control)
                             if validation is not None and run.prior_as_input else None)
        result = train(build_segdec(ctx, run), ctx.arrays("train", run.fold),
                       segdec_train_config(ctx, run), run_dir=folder, validation=validation,
                       validation_priors=validation_priors, **training_inputs(ctx, run))
        test = ctx.arrays("test", run.fold)
        priors = (prior_maps(ctx, run.prior, "test", run.seed, run.fold, run.control)
                  if run.prior_as_input else None)
        scores, seg = predict(result.model, test.images, priors,
                              batch_size=ctx.config.scale.batch_size, device=ctx.device,
                              bf16=ctx.bf16, channels_last=ctx.bf16)
        save_npz(folder / PREDICTIONS, ids=np.array(test.ids), scores=scores,
                 seg=seg.astype(np.float16))
        metrics = image_metrics(test.labels, scores).as_dict()
        if result.best_epoch is not None:
            metrics["best_epoch"] = result.best_epoch
        write_json(folder / ROW, metrics, sort_keys=False)
        return {CHECKPOINT: "trained weights", LOSSES: "per-epoch losses",
                PREDICTIONS: "test ids, scores and segmentation maps (1/8 size)",
                ROW: "test image metrics"}
    return ctx.units.ensure(cell_unit(ctx, cell), compute)


def cell_row(ctx: StudyContext, cell: Cell) -> dict:
    """The cell's table row (its run computed first where it is missing)."""
    return ctx.row(ensure_cell(ctx, cell), **cell.key(), hybrid=cell.hybrid,
                   protocol=cell.protocol)


def cell_segmentation(ctx: StudyContext, cell: Cell) -> np.ndarray:
    """The cell's test segmentation maps upsampled to the input size: N×H×W float32."""
    height, width = ctx.config.scale.input_size
    with np.load(ensure_cell(ctx, cell).file(PREDICTIONS)) as z:
        return np.stack([cv2.resize(m.astype(np.float32), (width, height),
                                    interpolation=cv2.INTER_LINEAR) for m in z["seg"]])
