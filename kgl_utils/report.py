"""The headline table of a finished study, as the README shows it, and the check that a study's
tables come from one clean commit.

Built from the study's committed ``primary.csv`` and ``guided.csv`` only, so the README's numbers
can be regenerated (``python -m kgl_utils.report results/<study>``) and checked against the
tables by the tests. The report refuses a study whose tables mix commits or come from a dirty
tree: such numbers are not reproduced by any one commit. With ``--time`` it also sums, from the
units on disk, the computing time behind the tables: a study's wall time as the README states it.
With ``--against`` it pairs the study's runs with those of the same study run another way (in
bf16 instead of float32), seed by seed, and reads their differences against the seed spread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from kgl_utils.evaluation.significance import format_p
from kgl_utils.results import summarize
from kgl_utils.stages.comparison import comparison_tables, primary_caveat, system_runs
from kgl_utils.units.store import UnitStore


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


def compute_time(results: str | os.PathLike) -> pd.DataFrame:
    """Seconds of computing per unit kind, over the units made at the tables' one commit (the
    runs behind the rows; superseded units left out): units, total, min and max, and a last
    ``all`` row. A unit resumed from a checkpoint counts the run that finished it."""
    commit = check_provenance(results)
    seconds = pd.DataFrame([(m["kind"], m["seconds"])
                            for m in UnitStore(Path(results) / "units").manifests()
                            if m["git_commit"] == commit], columns=["kind", "seconds"])
    if seconds.empty:
        raise FileNotFoundError(f"{results}/units: no unit made at {commit} (the units stay "
                                f"on the machine that ran the study)")
    return (pd.concat([seconds, seconds.assign(kind="all")])
            .groupby("kind", sort=False)["seconds"]
            .agg(units="size", total="sum", min="min", max="max").reset_index())


def compute_time_markdown(results: str | os.PathLike) -> str:
    table = compute_time(results)
    lines = ["| units of | count | total s | min s | max s |", "|---|---|---|---|---|"]
    lines += [f"| {row.kind} | {row.units} | {row.total:,.0f} | {row.min:,.0f} | {row.max:,.0f} |"
              for row in table.itertuples()]
    return "\n".join(lines)


def study_runs(results: str | os.PathLike) -> pd.DataFrame:
    """Every run of a study's tables (primary, guided and ablation) once, with its system name.
    Rows that ``Cell.training_twin`` maps onto the baseline at N_a = 0 (KGL pseudo-masks for no
    positive, no prior input, not hybrid) are left out: they are the baseline's run, shown again."""
    results = Path(results)
    tables = [pd.read_csv(results / name) for name in ("primary.csv", "guided.csv",
                                                       "ablation.csv")
              if (results / name).is_file()]
    runs = system_runs(pd.concat(tables, ignore_index=True))
    own_run = runs.reindex(columns=["prior_as_input", "hybrid"]).eq(True).any(axis=1)
    twins = ((runs["method"] == "kgl") & (runs["n_a"] == 0) & (runs["guidance"] == "pseudo_mask")
             & ~own_run)
    return runs[~twins].drop_duplicates(["system", "seed", "fold"])


def paired_runs(results: str | os.PathLike, other: str | os.PathLike) -> pd.DataFrame:
    """Per system, the AP of a study's runs and of ``other``'s (the same study run another way,
    e.g. in bf16) as mean ± std, the mean and the largest paired difference (other − results,
    pairing runs of one seed and fold), and the difference in units of ``results``' std over the
    runs: the seed spread a difference is read against. Each study must come from one clean
    commit; a system or seed in one study only is refused."""
    for folder in (results, other):
        check_provenance(folder)
    key = ["system", "seed", "fold"]
    first, second = study_runs(results), study_runs(other)
    pairs = first[[*key, "ap"]].merge(second[[*key, "ap"]], on=key, how="left",
                                      suffixes=("", "_other"))
    unpaired = pairs[pairs["ap_other"].isna()]
    if len(unpaired) or len(pairs) != len(second):
        detail = "; ".join(f"{r.system} seed {r.seed}" for r in unpaired.head(3).itertuples())
        raise ValueError(f"{results} and {other} do not hold the same runs"
                         + (f": {other} lacks {detail}" if detail else ""))
    pairs = pairs.assign(difference=pairs["ap_other"] - pairs["ap"])
    summary = summarize(pairs, ["system"], ["ap", "ap_other"])
    grouped = pairs.groupby("system", sort=False)
    largest = grouped["difference"].agg(lambda d: d[d.abs().idxmax()])
    summary = summary.merge(pd.DataFrame({
        "difference": grouped["difference"].mean(), "largest": largest,
        "spread": grouped["ap"].std(ddof=1)}).reset_index(), on="system")
    return summary.assign(in_spreads=summary["difference"].abs() / summary["spread"])


def paired_markdown(results: str | os.PathLike, other: str | os.PathLike) -> str:
    """``paired_runs`` as the README shows it."""
    lines = [f"| system | runs | AP {results} | AP {other} | mean difference | "
             f"largest difference | difference / std |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {row.system} | {row.runs} | {row.ap} | {row.ap_other} | "
              f"{row.difference:+.3f} | {row.largest:+.3f} | {row.in_spreads:.2f} |"
              for row in paired_runs(results, other).itertuples()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a study's results folder, e.g. results/default")
    parser.add_argument("--time", action="store_true",
                        help="also the computing time per unit kind, from the units on disk")
    parser.add_argument("--against", metavar="RESULTS",
                        help="instead, pair every run with this folder's (the same study run "
                             "another way, e.g. in bf16): AP differences against the seed "
                             "spread")
    args = parser.parse_args(argv)
    try:
        if args.against:
            print(paired_markdown(args.results, args.against))
            return 0
        print(headline_markdown(args.results))
        if args.time:
            print("\n" + compute_time_markdown(args.results))
    except (ValueError, FileNotFoundError) as exc:  # ProvenanceError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
