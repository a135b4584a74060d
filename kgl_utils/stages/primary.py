"""Notebook 02: the primary classifier, trained with image labels only (stage 1 of KGL)."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from torch import nn

from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.models.registry import build_model
from kgl_utils.results import save_figure, write_csv
from kgl_utils.stages.context import StudyContext
from kgl_utils.training import TrainConfig, TrainResult, load_checkpoint, predict, train

METHOD = "primary (image labels only)"


def primary_train_config(ctx: StudyContext) -> TrainConfig:
    """The knowledge-prior paper's stage-1 settings (SGD with momentum, flips) at the scale."""
    config, scale = ctx.config, ctx.config.scale
    return TrainConfig(
        epochs=scale.primary_epochs or scale.epochs, lr=config.primary.lr,
        batch_size=scale.batch_size, momentum=config.primary.momentum,
        weight_decay=config.primary.weight_decay, flips=config.primary.flips,
        lr_schedule=config.primary.lr_schedule, loss_reduction="mean", seed=config.seeds[0],
        device=str(ctx.device), checkpoint_every=1, bf16=ctx.device.type == "cuda")


def build_primary(ctx: StudyContext) -> nn.Module:
    """The primary network at the profile's width (VGG16 only; ResNets keep their width)."""
    primary, scale = ctx.config.primary, ctx.config.scale
    kwargs = ({"width": scale.primary_width or scale.width, "batch_norm": primary.batch_norm}
              if primary.model == "vgg16" else {})
    return build_model(primary.model, in_channels=ctx.config.data.channels,
                       weights_path=primary.weights, seed=ctx.config.seeds[0], **kwargs)


def primary_run_dir(ctx: StudyContext, fold: int | None):
    return ctx.run_dir("primary", f"fold-{fold}")


def train_primary(ctx: StudyContext, fold: int | None = None) -> TrainResult:
    """Train (or resume, or reuse a finished) primary network for one fold."""
    return train(build_primary(ctx), ctx.arrays("train", fold), primary_train_config(ctx),
                 run_dir=primary_run_dir(ctx, fold))


def load_primary(ctx: StudyContext, fold: int | None = None) -> tuple[nn.Module, str]:
    """The trained primary network of notebook 02 and its checkpoint path."""
    path = primary_run_dir(ctx, fold) / "checkpoint.pt"
    model = build_primary(ctx)
    load_checkpoint(model, path, ctx.device)
    return model.to(ctx.device).eval(), str(path)


def learning_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Training loss and accuracy per epoch, one line per fold."""
    frame = pd.concat([h.assign(fold=f) for f, h in histories.items()], ignore_index=True)
    long = frame.melt(id_vars=["epoch", "fold"], value_vars=["loss", "accuracy"])
    grid = sns.relplot(long, x="epoch", y="value", hue="fold", col="variable", kind="line",
                       facet_kws={"sharey": False}, height=3, aspect=1.3)
    grid.set_titles("{col_name}")
    return grid.figure


def run_primary(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Train the primary network per fold; write primary.csv, predictions and the curves."""
    rows, histories, predictions = [], {}, []
    for fold in ctx.folds:
        result = train_primary(ctx, fold)
        test = ctx.arrays("test", fold)
        scores, _ = predict(result.model, test.images, batch_size=ctx.config.scale.batch_size,
                            device=ctx.device)
        rows.append(ctx.row(method=METHOD, prior="none", n_a=0, seed=ctx.config.seeds[0],
                            fold=fold, **image_metrics(test.labels, scores).as_dict()))
        histories[str(fold)] = result.history
        predictions.append(pd.DataFrame({"fold": fold, "id": test.ids, "label": test.labels,
                                         "score": scores}))
    table = pd.DataFrame(rows)
    write_csv(ctx.results / "primary.csv", table)
    write_csv(ctx.results / "primary_predictions.csv", pd.concat(predictions))
    figure = learning_curves(histories)
    save_figure(figure, ctx.results / "primary_learning_curve.png")
    return table, figure
