"""The study context every notebook opens: typed params, its folders, data, device and units.

Data is loaded once per fold and decoded arrays are cached under ``results/<study>/cache`` so the
six notebooks of a study do not decode the same images six times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from kgl_utils.config import StudyConfig, load_params
from kgl_utils.data import load_dataset
from kgl_utils.data.base import DefectDataset, SplitArrays
from kgl_utils.data.splits import choose_masked
from kgl_utils.device import make_deterministic, resolve_device, resolve_precision
from kgl_utils.names import Precision
from kgl_utils.paths import StudyPaths, in_repo
from kgl_utils.units.store import DoneUnit, UnitStore


@dataclass
class StudyContext:
    """One study's params plus lazily loaded datasets (one per KSDD fold, else one)."""

    config: StudyConfig
    paths: StudyPaths
    _datasets: dict[int | None, DefectDataset] = field(default_factory=dict, repr=False)
    _arrays: dict[tuple, SplitArrays] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, params_path: str | os.PathLike, profile: str | None = None,
             results_root: str | os.PathLike = "results") -> StudyContext:
        params_path = Path(params_path)
        if not params_path.is_absolute() and not params_path.exists():
            params_path = in_repo(params_path)  # opened from notebooks/ in JupyterLab
        config = load_params(params_path, profile)
        if config.scale.deterministic:
            make_deterministic()
        paths = StudyPaths.of(config.study, results_root)
        paths.results.mkdir(parents=True, exist_ok=True)
        return cls(config, paths)

    @property
    def results(self) -> Path:
        return self.paths.results

    @cached_property
    def units(self) -> UnitStore:
        return UnitStore(self.paths.units)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    @cached_property
    def bf16(self) -> bool:
        """Whether networks train and infer under bf16 autocast with channels_last memory (the
        profile's ``precision``, ``auto`` resolved for this machine)."""
        return self._resolves_to_bf16(self.config.scale.precision)

    @cached_property
    def primary_bf16(self) -> bool:
        """``bf16`` for the primary network: its training, predictions and saliency passes."""
        scale = self.config.scale
        return self._resolves_to_bf16(scale.primary_precision or scale.precision)

    def _resolves_to_bf16(self, precision: Precision) -> bool:
        return resolve_precision(precision, self.device,
                                 self.config.scale.deterministic) == "bf16"

    @cached_property
    def params_hash(self) -> str:
        return self.config.params_hash()

    @property
    def folds(self) -> list[int | None]:
        """The data units of the study: KSDD folds, or a single unit."""
        return list(self.config.data.folds) if self.config.data.folds else [None]

    def data_spec(self, fold: int | None) -> dict[str, Any]:
        """Everything that defines one fold's data as the networks see it (part of every unit
        key): the dataset, its root as the params file gives it, the split and the input size."""
        data = self.config.data
        return {"dataset": data.dataset, "root": data.root, "channels": data.channels,
                "split_file": data.split_file, "split_seed": data.split_seed,
                "options": data.options, "fold": fold,
                "input_size": list(self.config.scale.input_size)}

    def row(self, unit: DoneUnit, metrics: dict[str, Any] | None = None,
            **fields: Any) -> dict[str, Any]:
        """A table row: the dataset, the given key fields, the metrics (by default the unit's
        own), the provenance of the unit they come from, and the params hash of the study."""
        metrics = unit.metrics() if metrics is None else metrics
        return {"dataset": self.config.data.dataset, **fields, **metrics, **unit.provenance(),
                "params_hash": self.params_hash}

    def dataset(self, fold: int | None = None) -> DefectDataset:
        if fold not in self._datasets:
            data = self.config.data
            root = None if data.root is None else str(in_repo(data.root))
            options = dict(data.options)
            if fold is not None:
                options["fold"] = fold
            self._datasets[fold] = load_dataset(
                data.dataset, root, channels=data.channels, split_file=data.split_file,
                seed=data.split_seed, **options)
        return self._datasets[fold]

    def arrays(self, split: str, fold: int | None = None) -> SplitArrays:
        """A split decoded at the profile's input size (cached in memory and on disk)."""
        key = (split, fold)
        if key not in self._arrays:
            self._arrays[key] = self.dataset(fold).load_split(
                split, self.config.scale.input_size, cache_dir=self.paths.cache)
        return self._arrays[key]

    def masked(self, n_a: int, seed: int, fold: int | None = None,
               with_mask: bool = True) -> list[str]:
        """Ids of the N_a training positives that keep a human mask (``with_mask``) or receive
        a pseudo-mask; the two choices agree wherever every positive has a mask."""
        return choose_masked(self.dataset(fold), [n_a], seed, with_mask=with_mask)[n_a]
