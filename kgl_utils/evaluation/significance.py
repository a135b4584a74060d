"""Paired tests of KGL against the baseline over seeds or folds (same split, same seed)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats


def paired_test(
    treatment: np.ndarray, control: np.ndarray, test: Literal["wilcoxon", "ttest"] = "wilcoxon"
) -> float:
    """Two-sided p-value of a paired test; NaN when there are too few pairs to test.

    With few seeds the Wilcoxon signed-rank test cannot reach small p-values (three pairs give at
    least 0.25); the paired t-test assumes normal differences. Both are offered; the table says
    which was used.
    """
    treatment, control = np.asarray(treatment, float), np.asarray(control, float)
    if treatment.shape != control.shape:
        raise ValueError(f"paired samples differ in length: {treatment.shape} vs {control.shape}")
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    diff = treatment - control
    if len(diff) < 2 or np.allclose(diff, 0):
        return float("nan")
    if test == "ttest":
        return float(stats.ttest_rel(treatment, control).pvalue)
    return float(stats.wilcoxon(treatment, control).pvalue)


def paired_against(
    frame: pd.DataFrame, reference: dict, pair_on: list[str], group_by: list[str],
    metric: str = "ap", test: Literal["wilcoxon", "ttest"] = "wilcoxon",
) -> pd.DataFrame:
    """p-values of every group against the ``reference`` rows, pairing runs on ``pair_on``.

    E.g. reference ``{"method": "baseline"}``, group_by ``["method", "prior", "n_a"]`` and
    pair_on ``["n_a", "seed", "fold"]`` tests each KGL cell against the baseline at its N_a.
    """
    is_ref = np.logical_and.reduce([frame[k] == v for k, v in reference.items()])
    ref = frame[is_ref].set_index(pair_on)[metric]
    rows = []
    for key, group in frame[~is_ref].groupby(group_by, dropna=False, sort=False):
        joined = group.set_index(pair_on)[[metric]].join(ref.rename("reference"), how="inner")
        rows.append({**dict(zip(group_by, key if isinstance(key, tuple) else (key,))),
                     "pairs": len(joined), "test": test,
                     "p_value": paired_test(joined[metric].to_numpy(),
                                            joined["reference"].to_numpy(), test)})
    return pd.DataFrame(rows)
