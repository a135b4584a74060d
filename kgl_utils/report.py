"""The headline table of a finished study, as the README shows it.

Built from the study's committed ``primary.csv`` and ``guided.csv`` only, so the README's numbers
can be regenerated (``python -m kgl_utils.report results/<study>``) and checked against the
tables by the tests.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from kgl_utils.saliency.controls import CONTROL_PRIORS


def _system(row: pd.Series, n_all: int) -> str:
    """A reader's name for one row of guided.csv."""
    if row["method"] == "baseline":
        return f"baseline SegDecNet, {int(row['n_a'])} human masks"
    if row["method"] == "kgl":
        if row["guidance"] == "consistency":
            text = f"KGL, {row['prior']} consistency loss ({int(row['n_a'])} human masks)"
        else:
            n_a = int(row["n_a"])
            whom = f"all {n_a}" if n_a == n_all else str(n_a)
            prior = row["prior"] + (" control" if row["prior"] in CONTROL_PRIORS else "")
            text = f"KGL, {prior} pseudo-masks for {whom} positives"
        return text + (" + prior as input" if row["prior_as_input"] else "")
    return f"{row['method']} (unsupervised)"


def headline(results: str | os.PathLike) -> pd.DataFrame:
    """One row per system of notebooks 02 and 04 (first seed): system, AP, AUROC."""
    results = Path(results)
    primary = pd.read_csv(results / "primary.csv")
    guided = pd.read_csv(results / "guided.csv")
    seed = guided["seed"].min()
    guided = guided[guided["seed"] == seed]
    pseudo = guided[(guided["method"] == "kgl") & (guided["guidance"] == "pseudo_mask")]
    n_all = int(pseudo["n_a"].max()) if len(pseudo) else -1  # the cells for all positives
    rows = [{"system": name, "ap": ap, "auroc": auroc}
            for name, ap, auroc in zip(primary["method"], primary["ap"], primary["auroc"],
                                       strict=True)]
    rows += [{"system": _system(row, n_all), "ap": row["ap"], "auroc": row["auroc"]}
             for _, row in guided.iterrows()]
    return pd.DataFrame(rows)


def headline_markdown(results: str | os.PathLike) -> str:
    """The headline as a Markdown table with three decimals."""
    lines = ["| system | AP | AUROC |", "|---|---|---|"]
    lines += [f"| {row.system} | {row.ap:.3f} | {row.auroc:.3f} |"
              for row in headline(results).itertuples()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a study's results folder, e.g. results/default")
    print(headline_markdown(parser.parse_args(argv).results))


if __name__ == "__main__":
    main()
