"""Published AP (%) of the two papers the study reproduces, to draw beside our numbers.

Mixed supervision: Božič, Tabernik, Skočaj, "Mixed supervision for surface-defect detection: from
weakly to fully supervised learning", Computers in Industry 2021 (N_a = positives with masks).
KGL: Dong, Liu, Ye, Liu, 2026, the network-knowledge-prior paper (N_a = positives given a
pseudo-mask; its ablation tables for FullGrad and LayerCAM).
"""

from __future__ import annotations

import pandas as pd

_MIXED = "Božič et al. 2021"
_KGL = "Dong et al. 2026"

PUBLISHED_AP: list[tuple[str, str, str, int, float, str]] = [
    # dataset, method, prior, N_a, AP %, source
    ("ksdd", "baseline", "none", 0, 93.4, _MIXED),
    ("ksdd", "baseline", "none", 5, 99.1, _MIXED),
    ("ksdd", "baseline", "none", 33, 100.0, _MIXED),
    ("ksdd2", "baseline", "none", 0, 73.3, _MIXED),
    ("ksdd2", "baseline", "none", 16, 83.2, _MIXED),
    ("ksdd2", "baseline", "none", 246, 95.4, _MIXED),
    ("dagm", "baseline", "none", 0, 74.0, _MIXED),
    ("dagm", "baseline", "none", 5, 91.5, _MIXED),
    ("dagm", "baseline", "none", 15, 100.0, _MIXED),
    *[("ksdd", "kgl", "fullgrad", n, ap, _KGL)
      for n, ap in zip((0, 5, 10, 15, 20, 33), (84.76, 100, 100, 100, 100, 100))],
    *[("ksdd", "kgl", "layercam", n, ap, _KGL)
      for n, ap in zip((0, 5, 10, 15, 20, 33), (84.76, 99.62, 100, 100, 100, 100))],
    *[("ksdd2", "kgl", "fullgrad", n, ap, _KGL)
      for n, ap in zip((0, 16, 53, 126, 246), (68.91, 88.33, 90.56, 93.57, 93.96))],
    *[("ksdd2", "kgl", "layercam", n, ap, _KGL)
      for n, ap in zip((0, 16, 53, 126, 246), (68.91, 90.88, 90.47, 92.53, 93.94))],
]


TRAPEZOID_AP = ("ksdd2", "dagm")
"""Datasets whose published AP is the trapezoid area under the PR curve (the authors'
``auc(recall, precision)``), not scikit-learn's step-wise average precision."""


CLASS_MEANS = {"dagm": 10}
"""Datasets whose published number is the mean over classes that a study runs one at a time
(DAGM: one study per class, the papers' ten-class mean): only the mean over every class compares
with it, never one class."""


def published_ap(dataset: str, classes: int | None = None) -> pd.DataFrame:
    """The published rows for a dataset (empty for datasets neither paper reports), with the
    metric of ours that the number is to be compared with. For a ``CLASS_MEANS`` dataset the
    rows come only for a mean over all its ``classes``; for one class they are empty."""
    frame = pd.DataFrame(PUBLISHED_AP, columns=["dataset", "method", "prior", "n_a",
                                                "published_ap", "source"])
    frame = frame.assign(control="none",
                         metric=["ap_trapezoid" if d in TRAPEZOID_AP else "ap"
                                 for d in frame["dataset"]])
    if dataset in CLASS_MEANS and classes != CLASS_MEANS[dataset]:
        frame = frame.iloc[:0]
    return frame[frame["dataset"] == dataset].reset_index(drop=True)
