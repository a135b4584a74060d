"""Result tables, run metadata and atomic writes.

Every file a study writes goes through ``atomic_write`` so that an interrupted run never leaves a
half-written table behind; every result row carries the params hash and git commit that made it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgl_utils import __version__


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda p: p.write_text(
        json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"))


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=False))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (format from the suffix)."""
    suffix = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight",
                                                    format=suffix))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | tuple | set):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The commit the code ran at ("unknown" outside a git checkout), '+dirty' if modified."""
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def run_metadata(params_hash: str) -> dict[str, str]:
    """The columns that make a result row traceable to its study and code."""
    return {"params_hash": params_hash, "git_commit": git_commit(), "kgl_utils": __version__}


def _cell(value: Any) -> str:
    """A key value as text, the same whether it comes from a row or back from the CSV."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


class ResultTable:
    """A long-form CSV of one study that grows one row per finished run, atomically.

    ``key`` columns identify a run; ``has`` lets a resumed study skip what it already did and
    ``add`` refuses to write the same run twice, so rows are never duplicated or lost. Rows of
    another ``params_hash`` (the study's params changed) are not this study's: they are ignored
    and dropped at the next write.
    """

    def __init__(self, path: str | os.PathLike, key: Sequence[str], params_hash: str):
        self.path = Path(path)
        self.key = list(key)
        self.params_hash = params_hash

    def read(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame()
        frame = pd.read_csv(self.path, keep_default_na=False, na_values=[""])
        return frame[frame["params_hash"] == self.params_hash].reset_index(drop=True)

    def _key_of(self, row: dict[str, Any]) -> tuple[str, ...]:
        missing = [k for k in self.key if k not in row]
        if missing:
            raise KeyError(f"result row lacks key columns {missing}")
        return tuple(_cell(row[k]) for k in self.key)

    def keys(self) -> set[tuple[str, ...]]:
        frame = self.read()
        if frame.empty:
            return set()
        return {tuple(_cell(v) for v in r) for r in frame[self.key].itertuples(index=False)}

    def has(self, row: dict[str, Any]) -> bool:
        return self._key_of(row) in self.keys()

    def add(self, row: dict[str, Any]) -> None:
        if row.get("params_hash") != self.params_hash:
            raise ValueError(f"{self.path}: row of params {row.get('params_hash')!r} added to "
                             f"the table of params {self.params_hash!r}")
        if self.has(row):
            raise ValueError(f"{self.path}: a row for {dict(zip(self.key, self._key_of(row)))} "
                             "already exists")
        frame = pd.concat([self.read(), pd.DataFrame([row])], ignore_index=True)
        write_csv(self.path, frame)


def summarize(
    frame: pd.DataFrame, by: Sequence[str], metrics: Iterable[str], decimals: int = 3
) -> pd.DataFrame:
    """Mean ± std of each metric per group (std over seeds or folds; blank for a single run)."""
    metrics = [m for m in metrics if m in frame.columns]
    grouped = frame.groupby(list(by), sort=False, dropna=False)
    out = grouped.size().rename("runs").reset_index()
    for m in metrics:
        mean, std = grouped[m].mean().to_numpy(), grouped[m].std(ddof=1).to_numpy()
        out[m] = [f"{a:.{decimals}f}" + ("" if np.isnan(s) else f" ± {s:.{decimals}f}")
                  for a, s in zip(mean, std)]
        out[f"_{m}_mean"] = mean
    return out


def to_markdown(frame: pd.DataFrame, title: str | None = None) -> str:
    """A table a person reads in a terminal (hidden ``_`` columns dropped)."""
    shown = frame[[c for c in frame.columns if not str(c).startswith("_")]]
    body = shown.to_markdown(index=False)
    return f"## {title}\n\n{body}\n" if title else body + "\n"
