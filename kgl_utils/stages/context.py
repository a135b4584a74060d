"""The study context every notebook opens: typed params, its results folder, data and device.

Data is loaded once per fold and decoded arrays are cached under ``results/<study>/cache`` so the
six notebooks of a study do not decode the same images six times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from kgl_utils.config import StudyConfig, load_params
from kgl_utils.data import load_dataset
from kgl_utils.data.base import DefectDataset, SplitArrays
from kgl_utils.data.splits import choose_masked
from kgl_utils.results import run_metadata
from kgl_utils.study import REPO_ROOT
from kgl_utils.training import resolve_device


@dataclass
class StudyContext:
    """One study's params plus lazily loaded datasets (one per KSDD fold, else one)."""

    config: StudyConfig
    results: Path
    _datasets: dict[int | None, DefectDataset] = field(default_factory=dict, repr=False)
    _arrays: dict[tuple, SplitArrays] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, params_path: str | os.PathLike, profile: str | None = None,
             results_root: str | os.PathLike = "results") -> StudyContext:
        params_path = Path(params_path)
        if not params_path.is_absolute() and not params_path.exists():
            params_path = REPO_ROOT / params_path  # opened from notebooks/ in JupyterLab
        config = load_params(params_path, profile)
        root = Path(results_root)
        root = root if root.is_absolute() else REPO_ROOT / root
        results = root / config.study
        results.mkdir(parents=True, exist_ok=True)
        return cls(config, results)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    @cached_property
    def params_hash(self) -> str:
        return self.config.params_hash()

    @property
    def folds(self) -> list[int | None]:
        """The data units of the study: KSDD folds, or a single unit."""
        return list(self.config.data.folds) if self.config.data.folds else [None]

    def row(self, **fields: object) -> dict:
        """A result row: the given fields plus dataset, params hash and git commit."""
        return {"dataset": self.config.data.dataset, **fields, **run_metadata(self.params_hash)}

    def run_dir(self, *parts: object) -> Path:
        """A folder for one run's checkpoints and logs (ignored by git), per params hash so a
        changed study never resumes a run of other settings."""
        path = self.results.joinpath("runs", self.params_hash, *(str(p) for p in parts))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def dataset(self, fold: int | None = None) -> DefectDataset:
        if fold not in self._datasets:
            data = self.config.data
            root = data.root
            if root is not None and not Path(root).is_absolute():
                root = str(REPO_ROOT / root)
            options = dict(data.options)
            if fold is not None:
                options["fold"] = fold
            self._datasets[fold] = load_dataset(
                data.dataset, root, channels=data.channels, split_file=data.split_file,
                seed=self.config.seeds[0], **options)
        return self._datasets[fold]

    def arrays(self, split: str, fold: int | None = None) -> SplitArrays:
        """A split decoded at the profile's input size (cached in memory and on disk)."""
        key = (split, fold)
        if key not in self._arrays:
            self._arrays[key] = self.dataset(fold).load_split(
                split, self.config.scale.input_size, cache_dir=self.results / "cache")
        return self._arrays[key]

    def masked(self, n_a: int, seed: int, fold: int | None = None,
               with_mask: bool = True) -> list[str]:
        """Ids of the N_a training positives that keep a human mask (``with_mask``) or receive
        a pseudo-mask; the two choices agree wherever every positive has a mask."""
        return choose_masked(self.dataset(fold), [n_a], seed, with_mask=with_mask)[n_a]
