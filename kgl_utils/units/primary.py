"""The primary unit: stage 1's image-label classifier for one seed and fold, with its test
predictions and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.models.registry import build_model
from kgl_utils.paths import CHECKPOINT, LOSSES, PREDICTIONS, ROW
from kgl_utils.results import save_npz, write_json
from kgl_utils.stages.context import StudyContext
from kgl_utils.training import TrainConfig, load_checkpoint, predict, train
from kgl_utils.units.store import DoneUnit, Unit


def primary_train_config(ctx: StudyContext, seed: int) -> TrainConfig:
    """The knowledge-prior paper's stage-1 settings (SGD with momentum, flips) at the scale."""
    config, scale = ctx.config, ctx.config.scale
    return TrainConfig(
        epochs=scale.primary_epochs or scale.epochs, lr=config.primary.lr,
        batch_size=scale.batch_size, momentum=config.primary.momentum,
        weight_decay=config.primary.weight_decay, flips=config.primary.flips,
        lr_schedule=config.primary.lr_schedule, loss_reduction="mean", seed=seed,
        device=str(ctx.device), checkpoint_every=1, bf16=ctx.primary_bf16,
        channels_last=ctx.primary_bf16)


def build_primary(ctx: StudyContext, seed: int) -> nn.Module:
    """The primary network at the profile's width (VGG16 only; ResNets keep their width)."""
    primary, scale = ctx.config.primary, ctx.config.scale
    kwargs = ({"width": scale.primary_width or scale.width, "batch_norm": primary.batch_norm}
              if primary.model == "vgg16" else {})
    return build_model(primary.model, in_channels=ctx.config.data.channels,
                       weights_path=primary.weights, seed=seed, **kwargs)


def primary_unit(ctx: StudyContext, seed: int, fold: int | None) -> Unit:
    scale = ctx.config.scale
    return Unit("primary", {
        "data": ctx.data_spec(fold), "primary": ctx.config.primary,
        "width": scale.primary_width or scale.width, "device": ctx.device.type,
        "train": primary_train_config(ctx, seed).result_settings()})


def ensure_primary(ctx: StudyContext, seed: int, fold: int | None) -> DoneUnit:
    """Train (or resume, or reuse) the primary of ``seed`` and score the fold's test split."""
    def compute(folder: Path) -> dict[str, str]:
        result = train(build_primary(ctx, seed), ctx.arrays("train", fold),
                       primary_train_config(ctx, seed), run_dir=folder)
        test = ctx.arrays("test", fold)
        scores, _ = predict(result.model, test.images, batch_size=ctx.config.scale.batch_size,
                            device=ctx.device, bf16=ctx.primary_bf16,
                            channels_last=ctx.primary_bf16)
        save_npz(folder / PREDICTIONS, ids=np.array(test.ids), labels=test.labels,
                 scores=scores)
        write_json(folder / ROW, image_metrics(test.labels, scores).as_dict(), sort_keys=False)
        return {CHECKPOINT: "trained weights", LOSSES: "per-epoch losses",
                PREDICTIONS: "test ids, labels, scores", ROW: "test image metrics"}
    return ctx.units.ensure(primary_unit(ctx, seed, fold), compute)


def load_primary(ctx: StudyContext, seed: int, fold: int | None) -> nn.Module:
    """The trained primary network of ``seed`` (trained first if it is not yet)."""
    done = ensure_primary(ctx, seed, fold)
    model = build_primary(ctx, seed)
    load_checkpoint(model, done.file(CHECKPOINT), ctx.device)
    return model.to(ctx.device).eval()
