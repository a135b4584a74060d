"""Notebook 04: SegDecNet trained with the knowledge prior, beside the baseline and the primary.

A ``Cell`` is one training run of the study's comparisons; notebook 05's ablation grid is made of
the same cells, so both notebooks train, resume and evaluate a run the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kgl_utils.distillation import (
    DistillationConfig,
    run_distillation,
    teacher_from_primary,
    teacher_from_weights,
)
from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.models.segdec import SegDecNet
from kgl_utils.results import ResultTable, write_csv
from kgl_utils.saliency.differentiable import ConsistencyLoss
from kgl_utils.saliency.priors import extract_priors, images_to_tensor
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.primary import load_primary
from kgl_utils.stages.priors import prior_maps, pseudo_masks
from kgl_utils.training import TrainConfig, predict, train

CELL_KEY = ["method", "prior", "n_a", "prior_as_input", "guidance", "seed", "fold"]


@dataclass(frozen=True)
class Cell:
    """One SegDecNet run: the baseline with ``n_a`` human masks, or KGL with a prior.

    KGL's ``n_a`` counts the positives whose pseudo-mask is a segmentation target (the paper's
    ablation); with ``guidance="consistency"`` the prior instead pulls the network's own Grad-CAM
    and ``n_a`` positives keep human masks. ``hybrid`` gives every other positive its pseudo-mask
    while the ``n_a`` chosen keep human masks.
    """

    method: str  # "baseline" or "kgl"
    prior: str  # "none" for the baseline, else a saliency method or control prior
    n_a: int
    seed: int
    fold: int | None = None
    prior_as_input: bool = False
    guidance: str = "pseudo_mask"
    hybrid: bool = False

    @property
    def name(self) -> str:
        parts = [self.method, self.prior, f"na{self.n_a}", f"seed{self.seed}",
                 f"fold{self.fold}"]
        if self.method == "kgl":
            parts += [self.guidance, "input" if self.prior_as_input else "noinput"]
            parts += ["hybrid"] if self.hybrid else []
        return "-".join(parts)

    def training_twin(self) -> Cell:
        """The cell whose run this one is: KGL with no pseudo-mask, no prior input and no
        consistency loss trains exactly the baseline with N_a = 0, so it reuses that run."""
        if (self.method == "kgl" and self.n_a == 0 and not self.prior_as_input
                and self.guidance == "pseudo_mask" and not self.hybrid):
            return Cell("baseline", "none", 0, self.seed, self.fold)
        return self

    def key(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in CELL_KEY}


def segdec_train_config(ctx: StudyContext, cell: Cell) -> TrainConfig:
    """The profile's SegDecNet settings; a consistency cell clips its gradient norm."""
    config, scale = ctx.config, ctx.config.scale
    segdec, seed = config.segdec, cell.seed
    consistency = cell.method == "kgl" and cell.guidance == "consistency"
    return TrainConfig(
        epochs=scale.epochs, lr=segdec.lr, batch_size=scale.batch_size, delta=segdec.delta,
        w_pos=segdec.w_pos, p=segdec.p, dilate=config.data.dilate,
        dynamic_balance=segdec.dynamic_balance, momentum=segdec.momentum,
        weight_decay=segdec.weight_decay, flips=segdec.flips, seed=seed, device=str(ctx.device),
        max_grad_norm=config.guided.consistency_max_grad_norm if consistency else None,
        checkpoint_every=max(1, scale.epochs // 5), bf16=ctx.device.type == "cuda",
        channels_last=ctx.device.type == "cuda", progress=True)


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
        if cell.method == "baseline" or cell.guidance == "consistency" or cell.hybrid else None
    if cell.method == "baseline":
        return {"segmented": ~positive | human}
    maps = prior_maps(ctx, cell.prior, "train", cell.fold, cell.seed)
    kwargs: dict = {"priors": maps if cell.prior_as_input else None}
    if cell.guidance == "consistency":
        consistency = ctx.config.guided
        kwargs |= {"segmented": ~positive | human, "priors": maps,
                   "extra_loss": ConsistencyLoss(
                       consistency.consistency_distance, consistency.consistency_weight,
                       epochs=ctx.config.scale.epochs if ctx.config.segdec.dynamic_balance
                       else None)}
        return kwargs
    targets = pseudo_masks(ctx, maps)
    if cell.hybrid:
        targets[human] = arrays.masks[human]
        return kwargs | {"segmented": np.ones(len(arrays), bool), "masks": targets}
    chosen = np.isin(arrays.ids, ctx.masked(cell.n_a, cell.seed, cell.fold, with_mask=False))
    return kwargs | {"segmented": ~positive | chosen, "masks": targets}


def run_cell(ctx: StudyContext, cell: Cell) -> tuple[dict, nn.Module]:
    """Train (or resume, or reuse) one cell and evaluate it on its test split.

    The test segmentation maps are kept for notebook 06 and the per-image scores as CSV.
    """
    twin = cell.training_twin()
    model = build_segdec(ctx, twin)
    result = train(model, ctx.arrays("train", cell.fold), segdec_train_config(ctx, twin),
                   run_dir=ctx.run_dir("segdec", twin.name), **training_inputs(ctx, twin))
    test = ctx.arrays("test", cell.fold)
    priors = (prior_maps(ctx, cell.prior, "test", cell.fold, cell.seed)
              if cell.prior_as_input else None)
    scores, seg = predict(result.model, test.images, priors,
                          batch_size=ctx.config.scale.batch_size, device=ctx.device)
    predictions = ctx.results / "predictions"
    predictions.mkdir(exist_ok=True)
    np.savez_compressed(predictions / f"{cell.name}.npz", ids=np.array(test.ids),
                        scores=scores, seg=seg.astype(np.float16))
    row = ctx.row(**cell.key(), hybrid=cell.hybrid, **image_metrics(test.labels, scores).as_dict(),
                  train_seconds=float(result.history["seconds"].sum()))
    return row, result.model


def all_positives(ctx: StudyContext, fold: int | None, with_mask: bool) -> int:
    arrays = ctx.arrays("train", fold)
    positive = arrays.labels == 1
    return int((positive & arrays.is_segmented).sum() if with_mask else positive.sum())


def guided_cells(ctx: StudyContext) -> list[Cell]:
    """The comparison of notebook 04 on one seed: baselines at N = 0 and all masks, KGL with
    every prior method × guidance × prior-as-input at N_a = all positives, and the controls."""
    config, seed = ctx.config, ctx.config.seeds[0]
    cells = []
    for fold in ctx.folds:
        masked = all_positives(ctx, fold, with_mask=True)
        cells += [Cell("baseline", "none", n, seed, fold) for n in dict.fromkeys((0, masked))]
        n_all = all_positives(ctx, fold, with_mask=False)
        for prior in config.prior.methods:
            for guidance in config.guided.guidance:
                inputs = config.guided.prior_as_input if guidance == "pseudo_mask" else (False,)
                n_a = n_all if guidance == "pseudo_mask" else 0
                cells += [Cell("kgl", prior, n_a, seed, fold, as_input, guidance,
                               config.guided.hybrid) for as_input in inputs]
        cells += [Cell("kgl", control, n_all, seed, fold) for control in config.prior.controls]
    return cells


def distillation_config(ctx: StudyContext, variant: str, seed: int) -> DistillationConfig:
    settings = ctx.config.distillation
    return DistillationConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        reverse=settings.reverse, sspcab=variant in ("full", "no_simam"),
        simam=variant in ("full", "no_sspcab"), seed=seed, device=str(ctx.device))


def distillation_row(ctx: StudyContext, variant: str, fold: int | None) -> dict:
    """The unsupervised comparison row: trained on the defect-free training images only."""
    settings, seed = ctx.config.distillation, ctx.config.seeds[0]
    if settings.teacher_weights:
        teacher = teacher_from_weights(settings.teacher_arch, settings.teacher_weights)
    else:
        teacher = teacher_from_primary(load_primary(ctx, fold)[0],
                                       description=ctx.config.primary.model)
    row = run_distillation(ctx.config.data.dataset, ctx.arrays("train", fold),
                           ctx.arrays("test", fold), teacher,
                           distillation_config(ctx, variant, seed))
    return ctx.row(**{**row, "prior": "none", "n_a": 0, "prior_as_input": False,
                      "guidance": "none", "fold": fold})


def add_missing(table: ResultTable, cells: Iterable[Cell], run: Callable[[Cell], dict]) -> None:
    """Run the cells ``table`` lacks, adding each row as its run ends: a killed study, run
    again, does only what is missing."""
    for cell in cells:
        if not table.has(cell.key()):
            table.add(run(cell))


def run_guided(ctx: StudyContext) -> pd.DataFrame:
    """Run the comparison cells and distillation rows (resuming finished ones): guided.csv."""
    table = ResultTable(ctx.results / "guided.csv", CELL_KEY, ctx.params_hash)
    add_missing(table, guided_cells(ctx), lambda cell: run_cell(ctx, cell)[0])
    if ctx.config.distillation.enabled:
        for fold in ctx.folds:
            for variant in ctx.config.distillation.variants:
                method = distillation_config(ctx, variant, 0).method
                key = {"method": method, "prior": "none", "n_a": 0, "prior_as_input": False,
                       "guidance": "none", "seed": ctx.config.seeds[0], "fold": fold}
                if not table.has(key):
                    table.add(distillation_row(ctx, variant, fold))
    return table.read()


def _flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def _latency(fn, *args, repeats: int = 5) -> float:
    fn(*args)  # warm-up
    if args[0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / len(args[0]) * 1e3


def inference_cost(ctx: StudyContext, batch: int = 8) -> pd.DataFrame:
    """Parameters, FLOPs and measured latency per image of each deployed pipeline.

    KGL with the prior as input must run the primary network and a saliency pass (forward and
    backward) before SegDecNet; KGL without it is the baseline's network, at the baseline's cost.
    """
    fold = ctx.folds[0]
    primary, _ = load_primary(ctx, fold)
    images = ctx.arrays("test", fold).images[:batch]
    x = images_to_tensor(images).to(ctx.device)
    method = ctx.config.prior.methods[0]
    plain = build_segdec(ctx, Cell("baseline", "none", 0, 0)).to(ctx.device).eval()
    guided = build_segdec(ctx, Cell("kgl", method, 0, 0, prior_as_input=True))
    guided = guided.to(ctx.device).eval()

    def segdec(x):
        with torch.no_grad():
            return plain(x)

    def classify(x):
        with torch.no_grad():
            return primary(x)

    def with_prior(x):
        maps = extract_priors(primary, images, method, ctx.config.prior.layer, batch,
                              ctx.device, progress=False)
        extra = torch.from_numpy(maps.astype(np.float32))[:, None].to(ctx.device)
        with torch.no_grad():
            return guided(x, extra)

    pipelines = {
        "baseline SegDecNet (= KGL without prior input)": (segdec, [plain]),
        f"KGL with prior input ({method} of the primary + SegDecNet)": (
            with_prior, [primary, guided]),
        "primary classifier alone": (classify, [primary]),
    }
    rows = []
    for name, (fn, parts) in pipelines.items():
        rows.append({"pipeline": name,
                     "parameters": sum(p.numel() for m in parts for p in m.parameters()),
                     "gflops_per_image": _flops(fn, x) / len(x) / 1e9,
                     "latency_ms_per_image": _latency(fn, x), "device": str(ctx.device),
                     "batch": len(x)})
    table = pd.DataFrame(rows)
    table["latency_ratio_to_baseline"] = (table["latency_ms_per_image"]
                                          / table["latency_ms_per_image"].iloc[0])
    write_csv(ctx.results / "inference_cost.csv", table)
    return table
