"""Build any network of the study by name, so params files and notebooks name models as strings."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kgl_utils.models.classifiers import efficientnet_lite0, resnet18, resnet50, vgg16
from kgl_utils.models.segdec import SegDecNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "segdecnet": SegDecNet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "efficientnet_lite0": efficientnet_lite0,
}
"""Name → constructor; keyword arguments of ``build_model`` go to the constructor."""


def build_model(name: str, *, seed: int | None = None, **kwargs) -> nn.Module:
    """Build ``MODELS[name](**kwargs)``; with ``seed`` the random initialisation is reproducible.

    The seed is applied in a forked RNG, so building a model leaves the global torch RNG as it was.
    """
    if name not in MODELS:
        raise ValueError(f"model {name!r} is unknown; allowed: {', '.join(MODELS)}")
    if seed is None:
        return MODELS[name](**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](**kwargs)
