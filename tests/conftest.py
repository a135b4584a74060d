"""Shared fixtures' building blocks."""

from pathlib import Path

import yaml

from kgl_utils.stages.context import StudyContext


def synthetic_study(study: str, n_train: int, n_test: int, positive_fraction: float,
                    **profile) -> dict:
    """The params of a tiny synthetic study on the CPU; sections beyond data and the one
    ``t`` profile (input size 128, the given epochs, batch size and width) are the caller's."""
    return {
        "study": study,
        "seeds": [0],
        "device": "cpu",
        "profile": "t",
        "data": {"dataset": "synthetic", "channels": 1, "dilate": 3,
                 "options": {"n_train": n_train, "n_test": n_test, "size": [128, 128],
                             "positive_fraction": positive_fraction}},
        "profiles": {"t": {"input_size": [128, 128], **profile}},
    }


def open_study(folder: Path, params: dict, **sections) -> StudyContext:
    """A study of ``params`` with whole sections replaced; data and results under ``folder``."""
    params = params | sections
    params["data"] = params["data"] | {"root": str(folder / "data")}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return StudyContext.open(path, results_root=folder / "results")
