"""Atomic writes, the commit code runs at, and the summaries of result tables.

Every file the package writes goes through ``atomic_write`` (or a writer built on it) so that an
interrupted run never leaves a half-written file behind.
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

from kgl_utils.evaluation.significance import t_interval
from kgl_utils.paths import REPO_ROOT


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


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True) -> Path:
    return atomic_write(path, lambda p: p.write_text(
        json.dumps(obj, indent=2, sort_keys=sort_keys, default=_jsonable) + "\n"))


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=False))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (checkpoints)."""
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Compressed ``.npz`` atomically."""
    return atomic_write(path, lambda p: np.savez_compressed(p, **arrays))


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """An image file through OpenCV (format from the suffix), atomically."""
    import cv2

    def write(p: Path) -> None:
        if not cv2.imwrite(str(p), image):
            raise OSError(f"{path}: OpenCV could not write this image")
    return atomic_write(path, write)


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


def git_commit(root: str | os.PathLike = REPO_ROOT) -> str:
    """The commit the code runs at ("unknown" outside a git checkout), '+dirty' if a tracked
    file outside ``results/`` is modified: a study rewriting its own tables is not dirty code."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


COUNTS = ("fp", "fn")  # per-image error counts: summed over folds, not averaged


def across_folds(frame: pd.DataFrame, by: Sequence[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Cross-validated runs as the KolektorSDD papers report them: per group and seed, the
    metrics averaged over the folds (error counts summed); one fold leaves the runs as they are.
    """
    if frame["fold"].nunique() <= 1:
        return frame
    how = {m: "sum" if m in COUNTS else "mean" for m in metrics if m in frame.columns}
    return frame.groupby([*by, "seed"], as_index=False, sort=False, dropna=False).agg(how)


def summarize(
    frame: pd.DataFrame, by: Sequence[str], metrics: Iterable[str], decimals: int = 3,
    ci: Iterable[str] = (),
) -> pd.DataFrame:
    """Mean ± std of each metric per group (std over seeds or folds; blank for a single run),
    and beside each metric of ``ci`` its 95 % t-interval ``<metric>_ci95`` (blank likewise)."""
    metrics, ci = [m for m in metrics if m in frame.columns], set(ci)
    grouped = frame.groupby(list(by), sort=False, dropna=False)
    out = grouped.size().rename("runs").reset_index()
    for m in metrics:
        mean, std = grouped[m].mean().to_numpy(), grouped[m].std(ddof=1).to_numpy()
        out[m] = [f"{a:.{decimals}f}" + ("" if np.isnan(s) else f" ± {s:.{decimals}f}")
                  for a, s in zip(mean, std)]
        out[f"_{m}_mean"] = mean
        if m in ci:
            bounds = [t_interval(values) for _, values in grouped[m]]
            out[f"{m}_ci95"] = ["" if np.isnan(lo) else f"[{lo:.{decimals}f}, {hi:.{decimals}f}]"
                                for lo, hi in bounds]
    return out


def to_markdown(frame: pd.DataFrame, title: str | None = None) -> str:
    """A table a person reads in a terminal (hidden ``_`` columns dropped, NaN blank)."""
    shown = frame[[c for c in frame.columns if not str(c).startswith("_")]]
    shown = shown.astype(object).where(shown.notna(), None)  # NaN (nothing to report): blank
    body = shown.to_markdown(index=False, missingval="")
    return f"## {title}\n\n{body}\n" if title else body + "\n"
