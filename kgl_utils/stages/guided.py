"""Notebook 04: SegDecNet trained with the knowledge prior, beside the baseline, the controls
and the unsupervised distillation detector; and what each deployed pipeline costs."""

from __future__ import annotations

import pandas as pd

from kgl_utils.names import CONSISTENCY_GUIDANCES
from kgl_utils.results import write_csv
from kgl_utils.stages.context import StudyContext
from kgl_utils.units.cells import Cell, cell_row
from kgl_utils.units.comparisons import distillation_row, inference_cost
from kgl_utils.units.priors import control_pairs


def all_positives(ctx: StudyContext, fold: int | None, with_mask: bool) -> int:
    arrays = ctx.arrays("train", fold)
    positive = arrays.labels == 1
    return int((positive & arrays.is_segmented).sum() if with_mask else positive.sum())


def control_cells(ctx: StudyContext, controls: tuple[str, ...], methods: tuple[str, ...],
                  n_a: int, seed: int, fold: int | None, prior_as_input: bool = False
                  ) -> list[Cell]:
    """KGL cells of each control: one per method, or one alone for ``full`` and ``oracle``."""
    return [Cell("kgl", prior, n_a, seed, fold, prior_as_input, control=control)
            for prior, control in control_pairs(controls, methods)]


def guided_cells(ctx: StudyContext) -> list[Cell]:
    """The comparison of notebook 04 for every seed and fold: baselines at N = 0 and all masks,
    KGL with every prior method × guidance × prior-as-input at N_a = all positives, and the
    controls. Consistency cells clip their gradient, so they come with a baseline at N = 0
    clipped alike."""
    config = ctx.config
    consistency = any(g in CONSISTENCY_GUIDANCES for g in config.guided.guidance)
    cells = []
    for seed in config.seeds:
        for fold in ctx.folds:
            masked = all_positives(ctx, fold, with_mask=True)
            cells += [Cell.baseline(n, seed, fold) for n in dict.fromkeys((0, masked))]
            if consistency:
                cells.append(Cell.baseline(0, seed, fold, clipped=True))
            n_all = all_positives(ctx, fold, with_mask=False)
            for prior in config.prior.methods:
                for guidance in config.guided.guidance:
                    inputs = (config.guided.prior_as_input if guidance == "pseudo_mask"
                              else (False,))
                    n_a = n_all if guidance == "pseudo_mask" else 0
                    cells += [Cell("kgl", prior, n_a, seed, fold, as_input, guidance,
                                   config.guided.hybrid) for as_input in inputs]
            cells += control_cells(ctx, config.prior.controls, config.prior.methods, n_all, seed,
                                   fold)
    return cells


def distillation_runs(ctx: StudyContext) -> list[tuple[str, int, int | None]]:
    """(variant, seed, fold) of every distillation run (none where it is disabled)."""
    settings = ctx.config.distillation
    if not settings.enabled:
        return []
    return [(variant, seed, fold) for seed in ctx.config.seeds for fold in ctx.folds
            for variant in settings.variants]


def run_guided(ctx: StudyContext) -> pd.DataFrame:
    """Every comparison cell and distillation row (computing the missing units): guided.csv."""
    rows = [cell_row(ctx, cell) for cell in guided_cells(ctx)]
    rows += [distillation_row(ctx, *run) for run in distillation_runs(ctx)]
    table = pd.DataFrame(rows)
    write_csv(ctx.paths.table("guided.csv"), table)
    return table


def run_inference_cost(ctx: StudyContext) -> pd.DataFrame:
    """The deployed pipelines' cost (measured once per unit): inference_cost.csv."""
    table = inference_cost(ctx)
    write_csv(ctx.paths.table("inference_cost.csv"), table)
    return table
