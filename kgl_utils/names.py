"""The study's vocabulary, declared once: every name a params file, a registry, a unit or a
result row may use. Config validation checks values against these literals; the registries of
datasets, saliency methods, control priors and distances are keyed by them (a test checks that
each registry covers its literal exactly)."""

from __future__ import annotations

from typing import Literal, get_args

DatasetName = Literal["synthetic", "ksdd", "ksdd2", "dagm", "severstal", "magnetic_tile", "elpv",
                      "folder"]
PrimaryModel = Literal["vgg16", "resnet18", "resnet50", "efficientnet_lite0"]
SaliencyMethod = Literal["fullgrad", "fullgrad_reference", "layercam", "gradcam", "gradcam++",
                         "xgradcam", "hirescam", "scorecam", "ablationcam", "eigencam"]
"""``fullgrad`` scales each channel as ``pytorch_grad_cam`` does; ``fullgrad_reference`` each
layer as a whole, as FullGrad's authors do (``kgl_utils.saliency.fullgrad``)."""
ControlPrior = Literal["random", "full", "shuffled", "blurred", "oracle"]
Guidance = Literal["pseudo_mask", "consistency", "consistency_first_order"]
"""``consistency`` trains through the final network's Grad-CAM weights (second order);
``consistency_first_order`` holds them fixed, so only the activations are pulled."""
ConsistencyDistance = Literal["bce", "l1", "mse", "kl", "cosine"]
Precision = Literal["auto", "fp32", "bf16"]
Teacher = Literal["primary", "pretrained"]
"""The distillation row's teacher: the study's primary (it has seen image labels) or a
pretrained network (label-free)."""
TeacherArch = Literal["resnet18", "vgg16", "efficientnet_lite0"]
CellMethod = Literal["baseline", "kgl"]
"""The two SegDecNet methods; a result row's ``method`` may also be ``primary`` or a
distillation variant's name, and a baseline's ``prior`` and ``guidance`` are ``none``."""

DATASETS: tuple[str, ...] = get_args(DatasetName)
SALIENCY_METHODS: tuple[str, ...] = get_args(SaliencyMethod)
CONTROL_PRIORS: tuple[str, ...] = get_args(ControlPrior)
CONSISTENCY_DISTANCES: tuple[str, ...] = get_args(ConsistencyDistance)
CONSISTENCY_GUIDANCES: tuple[str, ...] = ("consistency", "consistency_first_order")
"""The guidances that pull the network's own saliency instead of giving pseudo-masks."""

METHOD_FREE_CONTROLS: tuple[str, ...] = ("full", "oracle")
"""Controls that need no saliency method (their cells have prior ``none``); the others are
made from each method's own maps."""
LABEL_DERIVED_CONTROLS: tuple[str, ...] = ("shuffled", "oracle")
"""Controls built from a split's labels and masks: never an input channel at test time."""
MASKLESS_DATASETS: tuple[str, ...] = ("elpv",)
"""Datasets with image labels only: no oracle prior, no mask metrics."""
