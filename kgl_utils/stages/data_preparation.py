"""Notebook 01: what the data is, how it is split, and which positives carry masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.splits import choose_masked
from kgl_utils.data.summary import summarize
from kgl_utils.plots import image_grid, overlay
from kgl_utils.results import save_figure, write_csv, write_json
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.priors import check_oracle


def data_summary(ctx: StudyContext) -> pd.DataFrame:
    """Per fold and split: positives, negatives, masks, sizes, label/mask disagreements."""
    frames = []
    for fold in ctx.folds:
        frame = summarize(ctx.dataset(fold))
        frame.insert(0, "fold", fold)
        frame.insert(0, "dataset", ctx.config.data.dataset)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def split_record(ctx: StudyContext) -> dict:
    """Image ids per split and the masked positives for each N_a and seed, per fold: those
    keeping a human mask where ``ablation.baseline`` trains the N_a-mask baselines, else those
    given a pseudo-mask. The two choices agree wherever every positive has a mask; where they
    differ (baselines on a dataset with unmasked positives), the KGL cells' pseudo-masked
    positives are recorded beside them as ``pseudo_masked``.

    Choosing the masks here, before any training, also checks that every N_a of the study is
    possible, and an oracle control where one is asked for (a clear error otherwise), before
    hours of work start.
    """
    record: dict = {"study": ctx.config.study, "params_hash": ctx.params_hash, "folds": {}}
    oracle = "oracle" in ctx.config.prior.controls + ctx.config.ablation.controls
    for fold in ctx.folds:
        dataset = ctx.dataset(fold)
        if oracle:
            check_oracle(ctx, fold)
        masked = {str(seed): _masked(ctx, dataset, seed) for seed in ctx.config.seeds}
        entry = {"splits": {s: dataset.split(s)["id"].tolist() for s in dataset.splits},
                 "masked": masked}
        if ctx.config.ablation.baseline:
            pseudo = {str(seed): _chosen(dataset, ctx.config.ablation.n_a, seed, with_mask=False)
                      for seed in ctx.config.seeds}
            if pseudo != masked:
                entry["pseudo_masked"] = pseudo
        record["folds"][str(fold)] = entry
    return record


def _chosen(dataset: DefectDataset, n_a: tuple[int, ...], seed: int, with_mask: bool
            ) -> dict[str, list[str]]:
    """``choose_masked`` keyed as JSON keys them, so the two records compare equal."""
    return {str(n): ids for n, ids in choose_masked(dataset, list(n_a), seed,
                                                     with_mask=with_mask).items()}


def _masked(ctx: StudyContext, dataset: DefectDataset, seed: int) -> dict[str, list[str]]:
    """One seed's masked positives per N_a; where the baselines' human masks do not exist
    (ELPV has none), the error names the parameter that drops those baselines."""
    baseline = ctx.config.ablation.baseline
    try:
        return _chosen(dataset, ctx.config.ablation.n_a, seed, with_mask=baseline)
    except DataError as error:
        if not baseline:
            raise
        raise DataError(f"ablation.baseline: {error}. Set ablation.baseline: false to run KGL's "
                        f"N_a pseudo-masked positives beside the N_a = 0 baseline only") from error


def example_figure(ctx: StudyContext, per_class: int = 4, seed: int = 0) -> Figure:
    """Random training positives with their masks tinted, and negatives for comparison."""
    dataset = ctx.dataset(ctx.folds[0])
    train = dataset.split("train")
    rng = np.random.default_rng(seed)
    rows, titles = [], []
    for label, name in ((1, "defective"), (0, "defect-free")):
        pool = train[train["label"] == label]
        picks = pool.iloc[rng.permutation(len(pool))[:per_class]]
        samples = [dataset.sample(row, ctx.config.scale.input_size) for _, row in picks.iterrows()]
        rows.append([overlay(s.image, s.mask) for s in samples])
        titles.append(name)
    return image_grid(rows, titles, [], cell_size=2.2)


def prepare_data(ctx: StudyContext) -> tuple[pd.DataFrame, Figure]:
    """Write data_summary.csv, splits.json and data_examples.png; return what to display."""
    summary = data_summary(ctx)
    write_csv(ctx.results / "data_summary.csv", summary)
    write_json(ctx.results / "splits.json", split_record(ctx))
    figure = example_figure(ctx)
    save_figure(figure, ctx.results / "data_examples.png")
    return summary, figure
