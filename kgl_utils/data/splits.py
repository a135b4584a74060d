"""Splits: the official split files of the mixed-supervision paper, seeded stratified splits,
and the mixed-supervision choice of which N_a training positives keep a pixel mask.

A loader given an official split file adds a ``fully_labeled`` column to its table (the file's
flag per image); ``choose_masked`` then returns exactly the file's fully-labelled positives, so
the paper's protocol is reproduced rather than re-drawn.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from kgl_utils.data.base import DataError, DefectDataset

OFFICIAL_KINDS = {
    # kind: (split names in the pickle's order, whether each split is a list per fold/class)
    "ksdd": (("train", "test"), True),
    "ksdd2": (("train", "test"), False),
    "dagm": (("train", "test"), True),
    "severstal": (("train", "test", "validation"), False),
}


def read_split_file(
    path: str | os.PathLike, kind: str, index: int | None = None,
) -> dict[str, dict[str, bool]]:
    """Read an official split pickle into ``{split: {entry name: is_fully_labeled}}``.

    Entry names are KSDD kos folders, KSDD2 image ids (as strings), DAGM file names or Severstal
    image ids. KSDD files hold one list per fold and DAGM files one per class: ``index`` picks it
    (fold 0-2, or class 1-10 minus one). The files are pickles: load only ones you trust.
    """
    if kind not in OFFICIAL_KINDS:
        raise DataError(f"split file kind {kind!r} unknown; allowed: {', '.join(OFFICIAL_KINDS)}")
    names, per_index = OFFICIAL_KINDS[kind]
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split_file {path}: file is missing")
    with path.open("rb") as f:
        try:
            content = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DataError(f"split_file {path}: not a readable split pickle ({err})") from err
    if not isinstance(content, (list, tuple)) or len(content) != len(names):
        raise DataError(f"split_file {path}: expected a sequence ({', '.join(names)}) for "
                        f"{kind}, got {type(content).__name__} of length "
                        f"{len(content) if hasattr(content, '__len__') else '?'}")
    result = {}
    for name, entries in zip(names, content):
        if per_index:
            if index is None or not 0 <= index < len(entries):
                raise DataError(f"split_file {path}: holds {len(entries)} {kind} lists; "
                                f"index {index!r} is not in 0..{len(entries) - 1}")
            entries = entries[index]
        try:
            result[name] = {str(entry): bool(flag) for entry, flag in entries}
        except (TypeError, ValueError) as err:
            raise DataError(f"split_file {path}: {name} entries must be (name, "
                            f"is_fully_labeled) pairs ({err})") from err
    return result


def apply_split_file(table: pd.DataFrame, official: dict[str, dict[str, bool]],
                     key: pd.Series, source: str | os.PathLike,
                     native_split: bool = False) -> pd.DataFrame:
    """Keep the rows whose ``key`` the official split lists; set ``split`` and ``fully_labeled``.

    With ``native_split`` an entry only matches rows already in that split (DAGM reuses file
    names in Train and Test). Negatives are always fully labelled (their mask is empty), as in the
    paper's code. An entry that matches no image stops with its name, so a split file for another
    layout cannot pass silently.
    """
    parts = []
    for split, entries in official.items():
        listed = key.isin(entries.keys())
        if native_split:
            listed &= table["split"] == split
        chosen = table[listed].copy()
        missing = sorted(set(entries) - set(key[chosen.index]))
        if missing:
            raise DataError(f"split_file {source}: {len(missing)} {split} entries match no image, "
                            f"e.g. {missing[:3]}")
        chosen["split"] = split
        flags = key[chosen.index].map(entries)
        chosen["fully_labeled"] = flags.astype(bool) | (chosen["label"] == 0)
        parts.append(chosen)
    return train_first(pd.concat(parts, ignore_index=True))


SPLIT_ORDER = ("train", "validation", "test")


def train_first(table: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered train, validation, test (stable within a split), so that every listing and
    summary shows the splits in the same order whatever order the files were found in."""
    rank = table["split"].map({s: i for i, s in enumerate(SPLIT_ORDER)}).fillna(len(SPLIT_ORDER))
    return table.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)


def stratified_split(
    table: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0,
    by: str | list[str] = "label",
) -> pd.Series:
    """A seeded train/test assignment stratified by the column(s) ``by``, for datasets without an
    official split; returns ``'train'``/``'test'`` per row (same index as ``table``)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    strata = table[by].astype(str).agg("/".join, axis=1) if isinstance(by, list) else table[by]
    train_index, _ = train_test_split(table.index, test_size=test_fraction, random_state=seed,
                                      stratify=strata)
    return pd.Series(np.where(table.index.isin(train_index), "train", "test"), index=table.index)


def choose_masked(
    dataset: DefectDataset, n_a_values: list[int], seed: int, split: str = "train",
    with_mask: bool = True,
) -> dict[int, list[str]]:
    """Ids of the N_a positives of ``split`` that keep a pixel mask, for each N_a.

    One seeded permutation of all the split's positives serves every N_a, so the sets are nested
    (the N_a=16 set contains the N_a=5 set) and the same for every method. ``with_mask=True``
    takes positives that have a human mask (the mixed-supervision baseline); ``with_mask=False``
    takes any positive (the knowledge-guided method gives it a pseudo-mask instead). With an
    official split file, its fully-labelled positives come first in the order, and with masks
    N_a must equal their number.
    """
    rows = dataset.split(split)
    positives = rows[rows["label"] == 1]
    order = positives.iloc[np.random.default_rng(seed).permutation(len(positives))]
    official = "fully_labeled" in order.columns
    if official:
        order = order.sort_values("fully_labeled", ascending=False, kind="stable")
        eligible = order[order["fully_labeled"]] if with_mask else order
        n_official = int(order["fully_labeled"].sum())
    else:
        eligible = order[order["is_segmented"].astype(bool)] if with_mask else order
    chosen = {}
    for n_a in n_a_values:
        if not isinstance(n_a, (int, np.integer)) or n_a < 0:
            raise DataError(f"N_a must be an integer >= 0, got {n_a!r}")
        if official and with_mask and n_a != n_official:
            raise DataError(f"dataset {dataset.name!r}: N_a={n_a} but its official split file "
                            f"marks {n_official} {split} positives fully labelled; use that "
                            f"N_a or the split file for N_a={n_a}")
        if n_a > len(eligible):
            kind = "positives with a pixel mask" if with_mask else "positives"
            raise DataError(f"dataset {dataset.name!r}: N_a={n_a} exceeds the {len(eligible)} "
                            f"{split} {kind} available (masks required: {with_mask})")
        chosen[int(n_a)] = eligible["id"].iloc[:n_a].tolist()
    return chosen
