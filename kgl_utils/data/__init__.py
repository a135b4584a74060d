"""Datasets behind one interface: ``load_dataset(name, root, ...)`` returns a ``DefectDataset``.

Each loader module reads one published layout and only builds the table (see
``kgl_utils.data.base``); decoding, resizing and caching are shared. ``DATASETS`` maps a name to
its loader; every loader takes ``root`` and keyword options, so ``load_dataset`` can check the
options a params file gives against the loader's own signature before any file is read.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.data.dagm import load_dagm
from kgl_utils.data.elpv import PACKAGE_DATA, load_elpv
from kgl_utils.data.folder import load_folder
from kgl_utils.data.ksdd import load_ksdd
from kgl_utils.data.ksdd2 import load_ksdd2
from kgl_utils.data.magnetic_tile import load_magnetic_tile
from kgl_utils.data.severstal import load_severstal
from kgl_utils.data.synthetic import load_synthetic

DATASETS: dict[str, Callable[..., DefectDataset]] = {
    "synthetic": load_synthetic,
    "ksdd": load_ksdd,
    "ksdd2": load_ksdd2,
    "dagm": load_dagm,
    "severstal": load_severstal,
    "magnetic_tile": load_magnetic_tile,
    "elpv": load_elpv,
    "folder": load_folder,
}

DEFAULT_ROOTS = {"synthetic": Path("data/synthetic"), "elpv": PACKAGE_DATA}
"""Where a dataset lives when no root is given: the generated one under the working directory,
ELPV in its installed package; the others must be pointed at their download."""

_COMMON = ("channels", "split_file", "seed")


def _options_of(loader: Callable[..., DefectDataset]) -> list[str]:
    parameters = inspect.signature(loader).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(
    name: str, root: str | os.PathLike | None = None, *, channels: int | None = None,
    split_file: str | os.PathLike | None = None, seed: int = 0, **options: Any,
) -> DefectDataset:
    """Load dataset ``name`` from ``root`` and check that it can be trained on.

    ``channels=None`` keeps the dataset's natural channel count (3 for KolektorSDD2, else 1).
    ``split_file`` is an official split pickle of the mixed-supervision paper (KSDD, KSDD2, DAGM,
    Severstal); ``seed`` drives generated data and seeded splits; ``options`` go to the loader
    (e.g. ``fold`` for ksdd, ``dagm_class`` for dagm, ``n_train`` for synthetic).
    """
    if name not in DATASETS:
        raise DataError(f"dataset: unknown name {name!r}; allowed: {', '.join(DATASETS)}")
    loader = DATASETS[name]
    accepted = _options_of(loader)
    allowed = [o for o in accepted if o not in _COMMON]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"dataset {name!r}: unknown option(s) {unknown}; "
                        f"allowed: {', '.join(allowed) or 'none'}")
    if root is None:
        if name not in DEFAULT_ROOTS:
            raise DataError(f"dataset {name!r}: root is required (the folder of its download)")
        root = DEFAULT_ROOTS[name]
    common = {"seed": seed}
    if channels is not None:
        common["channels"] = channels
    if split_file is not None:
        if "split_file" not in accepted:
            raise DataError(f"dataset {name!r}: split_file={str(split_file)!r} given, but "
                            f"only ksdd, ksdd2, dagm and severstal have official split files")
        common["split_file"] = split_file
    common = {k: v for k, v in common.items() if k in accepted}
    dataset = loader(root, **common, **options)
    check_trainable(dataset)
    return dataset


def check_trainable(dataset: DefectDataset) -> None:
    """Stop early when the training split is missing or holds no positive image."""
    train = dataset.split("train")
    if not train["label"].any():
        raise DataError(f"dataset {dataset.name!r}: the training split has no positive image "
                        f"({len(train)} images, all negative); a detector cannot learn defects")
