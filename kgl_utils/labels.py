"""Readers' names of result rows: the one place a machine-readable row becomes a label.

Tables keep machine-readable keys (method, prior, n_a, guidance, prior_as_input); the README's
headline, the figures' legends and the widget's menus all name a row through ``system_name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kgl_utils.names import CONSISTENCY_GUIDANCES


def system_name(row: Mapping[str, Any], n_all: int | None = None, counts: bool = True) -> str:
    """``primary (image labels only)``, ``baseline SegDecNet, 20 human masks``, ``KGL, fullgrad
    pseudo-masks for all 56 positives + prior as input``, ``distillation (unsupervised)``.

    ``n_all`` is the number of training positives (the count says "all" there); ``counts``
    False leaves the numbers of masks out, for a legend over N_a.
    """
    method = row["method"]
    if method == "primary":
        return "primary (image labels only)"
    n_a = int(row["n_a"])
    if method == "baseline":
        clipped = ", gradient clipped" if _true(row.get("clipped", False)) else ""
        return "baseline SegDecNet" + (f", {n_a} human masks" if counts else "") + clipped
    if method != "kgl":
        return f"{method} (unsupervised)"
    control = row.get("control", "none")
    if control == "none":
        prior = row["prior"]
    else:
        prior = f"{control} control" + ("" if row["prior"] == "none" else f" of {row['prior']}")
    if row["guidance"] in CONSISTENCY_GUIDANCES:
        order = " (first order)" if row["guidance"] == "consistency_first_order" else ""
        text = (f"KGL, {prior} consistency loss{order}"
                + (f" ({n_a} human masks)" if counts else ""))
    else:
        whom = f"all {n_a}" if n_a == n_all else str(n_a)
        text = f"KGL, {prior} pseudo-masks" + (f" for {whom} positives" if counts else "")
    return text + (" + prior as input" if _true(row["prior_as_input"]) else "")


def _true(value: Any) -> bool:
    """A boolean cell, whether it comes from a row or back from a CSV."""
    return value is True or str(value).lower() == "true"
