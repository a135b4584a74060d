"""Where everything lives: the repository, a study's results folder and every artifact in it.

Every path the package reads or writes is named here once, so a folder layout change is one edit
and the runner, the stages and the unit store cannot disagree about where a file is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "kgl_utils"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

# Files inside one unit's folder.
MANIFEST = "manifest.json"  # written last: a unit is done when this names all its outputs
CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.csv"
ROW = "row.json"  # the unit's metrics, the cells of its result row
PREDICTIONS = "predictions.npz"  # test ids, scores and (for SegDecNet) segmentation maps
MAPS = "maps.npz"  # a prior unit's saliency maps with their image ids
TABLE = "table.csv"  # a unit whose result is a small table (the inference cost)


def in_repo(path: str | os.PathLike) -> Path:
    """A path as given if absolute, else relative to the repository root (so a notebook opened
    from ``notebooks/`` finds ``params/`` and ``results/`` as the runner does)."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class StudyPaths:
    """A study's results folder: committed tables and figures at the top, and beside them the
    ignored folders of what it computed (units), decoded images (cache) and executed notebooks."""

    results: Path

    @classmethod
    def of(cls, study: str, results_root: str | os.PathLike = "results") -> StudyPaths:
        return cls(in_repo(results_root) / study)

    @property
    def units(self) -> Path:
        return self.results / "units"

    @property
    def cache(self) -> Path:
        return self.results / "cache"

    @property
    def executed(self) -> Path:
        return self.results / "executed"

    def table(self, name: str) -> Path:
        """A committed table or figure of the study, e.g. ``guided.csv``."""
        return self.results / name
