"""The headline table of a finished study, as the README shows it, and the check that a study's
tables come from one clean commit.

Built from the study's committed ``primary.csv`` and ``guided.csv`` only, so the README's numbers
can be regenerated (``python -m kgl_utils.report results/<study>``) and checked against the
tables by the tests. The report refuses a study whose tables mix commits or come from a dirty
tree: such numbers are not reproduced by any one commit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from kgl_utils.evaluation.significance import format_p
from kgl_utils.stages.comparison import comparison_tables, primary_caveat


class ProvenanceError(ValueError):
    """A study's tables do not all come from one clean commit; the message names them."""


def table_commits(results: str | os.PathLike) -> dict[str, set[str]]:
    """The ``git_commit`` values of every CSV table of a study folder that has that column."""
    commits = {}
    for path in sorted(Path(results).glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "git_commit" in frame.columns:
            commits[path.name] = set(frame["git_commit"])
    return commits


def check_provenance(results: str | os.PathLike) -> str:
    """The one clean commit all of a study's tables come from; else a ProvenanceError naming
    each table and the commits found in it."""
    commits = table_commits(results)
    found = set().union(*commits.values()) if commits else set()
    if len(found) == 1 and not next(iter(found)).endswith("+dirty") and "" not in found:
        return next(iter(found))
    if not found:
        raise ProvenanceError(f"{results}: no table with a git_commit column")
    detail = "; ".join(f"{name}: {', '.join(sorted(c)) or '(empty)'}"
                       for name, c in commits.items())
    raise ProvenanceError(f"{results}: the tables do not come from one clean commit ({detail}); "
                          f"rerun the study from a clean checkout with --force")


def headline(results: str | os.PathLike) -> pd.DataFrame:
    """One row per system of notebooks 02 and 04: its name, runs (seeds; folds aggregated
    first), AP and AUROC as mean ± std, and for KGL rows the Holm-adjusted p of the headline
    contrast, the paired Wilcoxon test against the image-label-only baseline (N = 0)."""
    results = Path(results)
    runs = pd.concat([pd.read_csv(results / "primary.csv"), pd.read_csv(results / "guided.csv")],
                     ignore_index=True)
    summary, _ = comparison_tables(runs)
    return summary[["system", "runs", "ap", "auroc", "p_vs_weak_holm"]]


def headline_markdown(results: str | os.PathLike) -> str:
    """The headline as a Markdown table with three decimals (refused for mixed provenance)."""
    check_provenance(results)
    lines = ["| system | runs | AP (mean ± std) | AUROC (mean ± std) | p vs N=0 (Wilcoxon, Holm) |",
             "|---|---|---|---|---|"]
    lines += [f"| {row.system} | {row.runs} | {row.ap} | {row.auroc} | "
              f"{format_p(row.p_vs_weak_holm)} |" for row in headline(results).itertuples()]
    caveat = primary_caveat(pd.read_csv(Path(results) / "primary.csv"))
    return "\n".join(lines + ([f"\n**Caveat.** {caveat}"] if caveat else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a study's results folder, e.g. results/default")
    try:
        print(headline_markdown(parser.parse_args(argv).results))
    except ProvenanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
