"""The comparison rows beside SegDecNet: the unsupervised distillation detector, and the cost of
each deployed pipeline (the inference-cost unit, a measurement on the study's device)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from kgl_utils.distillation import (
    DistillationConfig,
    run_distillation,
    teacher_from_primary,
    teacher_from_weights,
)
from kgl_utils.paths import ROW, TABLE
from kgl_utils.results import write_csv, write_json
from kgl_utils.saliency.priors import extract_priors, images_to_tensor
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.cells import Cell, build_segdec
from kgl_utils.units.primary import load_primary, primary_unit
from kgl_utils.units.store import DoneUnit, Unit


def distillation_config(ctx: StudyContext, variant: str, seed: int) -> DistillationConfig:
    settings = ctx.config.distillation
    return DistillationConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        reverse=settings.reverse, sspcab=variant in ("full", "no_simam"),
        simam=variant in ("full", "no_sspcab"), seed=seed, device=str(ctx.device))


def distillation_unit(ctx: StudyContext, variant: str, seed: int, fold: int | None) -> Unit:
    settings = ctx.config.distillation
    run = {k: v for k, v in vars(distillation_config(ctx, variant, seed)).items()
           if k != "device"}
    pretrained = settings.teacher == "pretrained"
    teacher = ({"arch": settings.teacher_arch, "weights": settings.teacher_weights}
               if pretrained else "primary")
    inputs = () if pretrained else (primary_unit(ctx, seed, fold).key,)
    return Unit("distillation", {"data": ctx.data_spec(fold), "run": run, "teacher": teacher,
                                 "device": ctx.device.type}, inputs)


def ensure_distillation(ctx: StudyContext, variant: str, seed: int,
                        fold: int | None) -> DoneUnit:
    """Train (or reuse) the unsupervised detector on the defect-free training images; its
    teacher is the primary of ``seed`` or a pretrained network."""
    settings = ctx.config.distillation

    def compute(folder: Path) -> dict[str, str]:
        if settings.teacher == "pretrained":
            teacher = teacher_from_weights(settings.teacher_arch, settings.teacher_weights)
        else:
            teacher = teacher_from_primary(load_primary(ctx, seed, fold),
                                           description=ctx.config.primary.model)
        row = run_distillation(ctx.config.data.dataset, ctx.arrays("train", fold),
                               ctx.arrays("test", fold), teacher,
                               distillation_config(ctx, variant, seed))
        write_json(folder / ROW, {k: v for k, v in row.items()
                                  if k not in ("dataset", "method", "seed")}, sort_keys=False)
        return {ROW: "test image and pixel metrics"}
    return ctx.units.ensure(distillation_unit(ctx, variant, seed, fold), compute)


def distillation_row(ctx: StudyContext, variant: str, seed: int, fold: int | None) -> dict:
    method = distillation_config(ctx, variant, seed).method
    return ctx.row(ensure_distillation(ctx, variant, seed, fold), method=method, prior="none",
                   control="none", n_a=0, prior_as_input=False, guidance="none", seed=seed,
                   fold=fold)


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


def inference_cost_unit(ctx: StudyContext, batch: int) -> Unit:
    seed, fold = ctx.config.seeds[0], ctx.folds[0]
    return Unit("inference_cost", {
        "data": ctx.data_spec(fold), "method": ctx.config.prior.methods[0],
        "layer": ctx.config.prior.layer, "width": ctx.config.scale.width, "batch": batch,
        "device": ctx.device.type}, (primary_unit(ctx, seed, fold).key,))


def inference_cost(ctx: StudyContext, batch: int = 8) -> pd.DataFrame:
    """Parameters, FLOPs and measured latency per image of each deployed pipeline.

    KGL with the prior as input must run the primary network and a saliency pass (forward and
    backward) before SegDecNet; KGL without it is the baseline's network, at the baseline's cost.
    Latency is a measurement: a fresh run on another machine or load gives other milliseconds.
    """
    seed, fold = ctx.config.seeds[0], ctx.folds[0]
    method = ctx.config.prior.methods[0]

    def compute(folder: Path) -> dict[str, str]:
        primary = load_primary(ctx, seed, fold)
        images = ctx.arrays("test", fold).images[:batch]
        x = images_to_tensor(images).to(ctx.device)
        plain = build_segdec(ctx, Cell.baseline(0, 0)).to(ctx.device).eval()
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
        rows = [{"pipeline": name,
                 "parameters": sum(p.numel() for m in parts for p in m.parameters()),
                 "gflops_per_image": _flops(fn, x) / len(x) / 1e9,
                 "latency_ms_per_image": _latency(fn, x), "device": str(ctx.device),
                 "batch": len(x)} for name, (fn, parts) in pipelines.items()]
        table = pd.DataFrame(rows)
        table["latency_ratio_to_baseline"] = (table["latency_ms_per_image"]
                                              / table["latency_ms_per_image"].iloc[0])
        write_csv(folder / TABLE, table)
        return {TABLE: "parameters, GFLOPs and latency per deployed pipeline"}
    done = ctx.units.ensure(inference_cost_unit(ctx, batch), compute)
    table = pd.read_csv(done.file(TABLE))
    return table.assign(git_commit=done.manifest["git_commit"])
