"""Paired tests of KGL against its baselines over seeds and folds (same split, same seed), the
Holm correction over a table's tests, and the t-interval of a cell's mean."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

Test = Literal["wilcoxon", "ttest"]


def paired_test(treatment: np.ndarray, control: np.ndarray, test: Test = "wilcoxon") -> float:
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
    treated: pd.DataFrame, reference: pd.DataFrame, pair_on: list[str], group_by: list[str],
    metric: str = "ap", test: Test = "wilcoxon",
) -> pd.DataFrame:
    """Every group of ``treated`` tested against the ``reference`` runs, pairing on ``pair_on``.

    E.g. group_by ``["method", "prior", "n_a"]`` and pair_on ``["n_a", "seed", "fold"]`` test
    each KGL cell against the baseline at its N_a; pair_on ``["seed", "fold"]`` against one
    baseline for all N_a. A group without two pairs gets p NaN. ``difference`` is the mean paired
    difference (treated − reference), the direction a two-sided p leaves open.
    """
    clash = reference.duplicated(pair_on, keep=False)
    if clash.any():
        raise ValueError(f"the reference has several runs per {pair_on}: "
                         f"{reference.loc[clash, pair_on].drop_duplicates().to_dict('records')}")
    ref = reference.set_index(pair_on)[metric].rename("reference")
    rows = []
    for key, group in treated.groupby(group_by, dropna=False, sort=False):
        joined = group.set_index(pair_on)[[metric]].join(ref, how="inner")
        rows.append({**dict(zip(group_by, key if isinstance(key, tuple) else (key,))),
                     "pairs": len(joined), "test": test,
                     "difference": (joined[metric] - joined["reference"]).mean(),
                     "p_value": paired_test(joined[metric].to_numpy(),
                                            joined["reference"].to_numpy(), test)})
    return pd.DataFrame(rows, columns=[*group_by, "pairs", "test", "difference", "p_value"])


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by m − i + 1, then made monotone (running
    maximum) and capped at 1; it controls the family-wise error over the table's tests without
    Bonferroni's loss of power. NaN (a contrast without two pairs) is no test: it stays NaN and
    does not count in m.
    """
    p = np.asarray(p_values, float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def contrast_tests(
    treated: pd.DataFrame, contrasts: Mapping[str, tuple[pd.DataFrame, list[str]]],
    group_by: list[str], metric: str = "ap", test: Test = "wilcoxon",
) -> pd.DataFrame:
    """Long form: each group of ``treated`` against each contrast's reference runs (name →
    (reference, pair_on)), with ``p_holm`` Holm-adjusted over every test of the table."""
    tables = [paired_against(treated, reference, pair_on, group_by, metric, test)
              .assign(contrast=name) for name, (reference, pair_on) in contrasts.items()]
    out = pd.concat(tables, ignore_index=True)
    out = out[[*group_by, "contrast", "pairs", "test", "difference", "p_value"]]
    return out.assign(p_holm=holm(out["p_value"]))


def p_columns(tests: pd.DataFrame, group_by: list[str], contrasts: Iterable[str]) -> pd.DataFrame:
    """One row per group with ``p_<contrast>`` and ``p_<contrast>_holm`` for each contrast (the
    columns exist, blank, where nothing was tested), to merge beside a summary."""
    out = tests[group_by].drop_duplicates()
    for contrast in contrasts:
        rows = tests[tests["contrast"] == contrast]
        out = out.merge(rows[[*group_by, "p_value", "p_holm"]].rename(columns={
            "p_value": f"p_{contrast}", "p_holm": f"p_{contrast}_holm"}), on=group_by,
            how="left")
    return out


def format_p(p: float) -> str:
    """A p-value for a reader: three decimals, "< 0.001" below, blank where nothing was tested."""
    if np.isnan(p):
        return ""
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """mean ± t((1 + level)/2, n − 1)·s/√n over the runs; NaN bounds for fewer than two runs,
    whose spread is unknown."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(
        len(values))
    return float(values.mean() - half), float(values.mean() + half)
