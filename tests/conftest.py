"""Shared fixtures' building blocks."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from kgl_utils.paths import StudyPaths
from kgl_utils.stages.context import StudyContext
from kgl_utils.study import run_study


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` inside the block, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


TINY_STUDY = {
    **synthetic_study("tiny", n_train=40, n_test=24, positive_fraction=0.4, epochs=2,
                      batch_size=8, width=0.25),
    "primary": {"model": "vgg16", "lr": 0.005},
    "prior": {"methods": ["gradcam"], "controls": ["random"]},
    "guided": {"prior_as_input": [False, True], "guidance": ["pseudo_mask"]},
    "ablation": {"n_a": [0, 4], "priors": ["gradcam"]},
    "distillation": {"enabled": True, "epochs": 1, "variants": ["full"]},
}


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> StudyPaths:
    """All six notebooks run once through the study runner on ``TINY_STUDY``, for the tests of
    the notebooks' outputs and of notebook 06's widget in a browser."""
    root = tmp_path_factory.mktemp("study")
    params = dict(TINY_STUDY, data={**TINY_STUDY["data"], "root": str(root / "data")})
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(params))
    return run_study(path, results_root=root / "results", timeout=600)
