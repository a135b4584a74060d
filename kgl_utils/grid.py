"""The study's grid: every run unit its notebooks read, as jobs any process can compute.

The notebooks enumerate their own units (``stages``: primaries, priors, the comparison's and
the ablation's cells, distillation runs); the grid is those same enumerations, each unit once
(cells that train the same network share one), ordered so that every unit comes after the
units it reads. An executor (``kgl_utils.executors``) computes the grid before the notebooks
run, which then only assemble tables and figures. The inference-cost unit is not in it: it is
a latency measurement, taken by notebook 04 on the machine that runs the notebooks, alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kgl_utils.stages.ablation import ablation_cells
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.guided import distillation_runs, guided_cells
from kgl_utils.stages.primary import primary_runs
from kgl_utils.stages.priors import prior_runs
from kgl_utils.units.cells import Cell, cell_unit, ensure_cell
from kgl_utils.units.comparisons import distillation_unit, ensure_distillation
from kgl_utils.units.primary import ensure_primary, primary_unit
from kgl_utils.units.priors import ensure_priors, prior_unit
from kgl_utils.units.store import DoneUnit, Unit

# Per unit kind: the function that keys a unit and the one that computes it (or reuses it), each
# taking the study context and then the job's arguments.
RECIPES: dict[str, tuple[Callable[..., Unit], Callable[..., DoneUnit]]] = {
    "primary": (primary_unit, ensure_primary),
    "priors": (prior_unit, ensure_priors),
    "segdec": (cell_unit, ensure_cell),
    "distillation": (distillation_unit, ensure_distillation),
}
ARGUMENTS = {"primary": ("seed", "fold"), "priors": ("method", "split", "seed", "fold"),
             "distillation": ("variant", "seed", "fold")}


class GridError(RuntimeError):
    """The grid is not closed: a unit reads one that no notebook computes."""


@dataclass(frozen=True)
class Job:
    """One unit, as any process rebuilds it from the study: its kind and the arguments its
    recipe takes after the context. Plain values only, so it travels to a Ray worker."""

    kind: str
    args: tuple[Any, ...]

    def unit(self, ctx: StudyContext) -> Unit:
        return RECIPES[self.kind][0](ctx, *self.args)

    def compute(self, ctx: StudyContext) -> DoneUnit:
        """The done unit, computed here first unless it is done already."""
        return RECIPES[self.kind][1](ctx, *self.args)

    def __str__(self) -> str:
        if self.kind == "segdec":
            (cell,) = self.args
            fields = cell.training_twin().key()
            return "segdec " + " ".join(f"{k}={v}" for k, v in fields.items()
                                        if v not in ("none", None, False))
        names = ARGUMENTS[self.kind]
        return self.kind + " " + " ".join(f"{k}={v}" for k, v in zip(names, self.args)
                                          if v is not None)


def cell_jobs(cells: list[Cell]) -> list[Job]:
    return [Job("segdec", (cell,)) for cell in cells]


def notebook_jobs(ctx: StudyContext) -> dict[str, list[Job]]:
    """The jobs each notebook's stage computes, from the stage's own enumeration."""
    return {
        "02_primary_training": [Job("primary", run) for run in primary_runs(ctx)],
        "03_prior_extraction": [Job("priors", run) for run in prior_runs(ctx)],
        "04_guided_training": cell_jobs(guided_cells(ctx))
        + [Job("distillation", run) for run in distillation_runs(ctx)],
        "05_ablation_na": cell_jobs(ablation_cells(ctx)),
    }


def study_grid(ctx: StudyContext, notebooks: Sequence[str]) -> list[tuple[Job, Unit]]:
    """The jobs of the named notebooks (stems, e.g. ``04_guided_training``) and of every unit
    they read, each unit once, every unit after its inputs; with each its unit."""
    keyed = {notebook: [(job, job.unit(ctx)) for job in jobs]
             for notebook, jobs in notebook_jobs(ctx).items()}
    index = {}
    for pairs in keyed.values():
        for job, unit in pairs:
            index.setdefault(unit.key, (job, unit))
    grid: dict[str, tuple[Job, Unit]] = {}

    def add(job: Job, unit: Unit) -> None:
        if unit.key in grid:
            return
        for key in unit.inputs:
            if key not in index:
                raise GridError(f"{job} reads unit {key}, which no notebook computes")
            add(*index[key])
        grid[unit.key] = (job, unit)

    for notebook in notebooks:
        for job, unit in keyed.get(notebook, ()):
            add(job, unit)
    return list(grid.values())
