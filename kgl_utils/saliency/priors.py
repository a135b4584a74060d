"""Network knowledge priors: saliency maps of the primary classifier.

Every method of the study is a class of the ``pytorch_grad_cam`` package under a stable
lower-case name, but for FullGrad, computed in torch (``kgl_utils.saliency.fullgrad``), and for
LayerCAM's fusion of several layers (``kgl_utils.saliency.layercam``). This module only supplies
what the package leaves to its user: the target (the single defect logit), the target layers (by
dotted name, with a default per architecture), batching and normalisation to float16 maps in
[0, 1] at input resolution.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn
from torchvision.models import ResNet
from tqdm.auto import tqdm

from kgl_utils.device import resolve_device
from kgl_utils.saliency.fullgrad import FULLGRAD_METHODS, fullgrad
from kgl_utils.saliency.layercam import FusedLayerCAM

CAM_CLASSES: dict[str, type[BaseCAM]] = {
    "layercam": FusedLayerCAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "eigencam": EigenCAM,
}
"""Study name → ``pytorch_grad_cam`` class; the FullGrad methods are ``FULLGRAD_METHODS``."""

LAYERLESS_METHODS = tuple(FULLGRAD_METHODS)
"""Methods that explain through every biased layer and ignore a target layer."""


class DefectLogitTarget:
    """Target for a binary classifier whose output is one defect logit per image (shape [N]).

    ``pytorch_grad_cam`` calls a target once per image with that image's output; the package's
    ``ClassifierOutputTarget`` indexes a class axis these models do not have.
    """

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.numel() != 1:
            raise ValueError(f"DefectLogitTarget expects one logit per image, got an output of "
                             f"shape {tuple(model_output.shape)}")
        return model_output.reshape(())


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×C uint8 → N×C×H×W float in [0, 1]: the conversion ``kgl_utils.training`` applies
    to every batch, so the primary network is explained on the inputs it was trained on."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


def _check_method(method: str) -> None:
    if method not in FULLGRAD_METHODS and method not in CAM_CLASSES:
        raise ValueError(f"saliency method {method!r} is unknown; allowed: "
                         f"{', '.join([*FULLGRAD_METHODS, *CAM_CLASSES])}")


def default_target_layer(model: nn.Module) -> str:
    """Dotted name of the layer a CAM method explains when none is configured.

    VGG layout (torchvision's ``VGG`` or the primary ``LeakyVGG16``: a ``features`` sequence of
    convolutions): the activation after the last convolution, i.e. rectified conv5_3 as in the
    Grad-CAM and LayerCAM papers (pool5 would halve the resolution again). ResNet: the last block
    of ``layer4``. EfficientNet: its head's batch norm ``_bn1`` (the head's ReLU6 module is
    shared with the stem, so a hook on it would fire twice). The first such module among the
    submodules decides, so wrappers work too.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, ResNet):
            return f"{prefix}layer4.{len(module.layer4) - 1}"
        if isinstance(module, EfficientNet):
            return f"{prefix}_bn1"
        features = getattr(module, "features", None)
        if isinstance(features, nn.Sequential):
            convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
            if convs:  # the last module before the next pool: the activation, after any BN
                last = convs[-1]
                while last + 1 < len(features) and not isinstance(features[last + 1],
                                                                  nn.MaxPool2d):
                    last += 1
                return f"{prefix}features.{last}"
    raise ValueError(f"no default target layer for a {type(model).__name__} (neither a VGG "
                     f"layout nor a ResNet): pass layer=, e.g. one of {_layer_examples(model)}")


def _layer_examples(model: nn.Module, near: str | None = None) -> list[str]:
    names = [n for n, m in model.named_modules() if n and not list(m.children())]
    close = difflib.get_close_matches(near, names, n=4, cutoff=0.5) if near else []
    return close or names[-5:]


def resolve_target_layers(model: nn.Module, method: str,
                          layer: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The dotted names of the layers ``method`` explains: ``layer`` (one name or several), the
    architecture's default for None, nothing for FullGrad (which ignores them).

    Stops with the allowed methods for an unknown method and with a few valid names for a layer
    the model does not have.
    """
    _check_method(method)
    if method in LAYERLESS_METHODS:
        return ()
    if layer is None:
        names: tuple[str, ...] = (default_target_layer(model),)
    else:
        names = (layer,) if isinstance(layer, str) else tuple(layer)
    if not names:
        raise ValueError("layer must name at least one layer, got an empty list")
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"layer {name!r} does not exist in {type(model).__name__}; valid "
                             f"names include {_layer_examples(model, name)}") from err
    return names


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max each N×H×W map to [0, 1]; a flat map (no evidence anywhere) becomes all zero."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def _float_output(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    return output.float()


@contextmanager
def _saliency(model: nn.Module, method: str, layers: tuple[str, ...],
              batch_size: int) -> Iterator[Callable[[torch.Tensor], np.ndarray]]:
    """``method`` as a function of one image batch to its N×H×W maps of the defect logit; any
    hooks it placed are removed on exit."""
    def targets(batch: torch.Tensor) -> list[DefectLogitTarget]:
        return [DefectLogitTarget()] * len(batch)

    if method in FULLGRAD_METHODS:
        normalisation = FULLGRAD_METHODS[method]
        yield lambda batch: fullgrad(model, batch, targets(batch), normalisation).cpu().numpy()
        return
    target_layers = [model.get_submodule(name) for name in layers]
    # Registered before the package's hooks, so under bf16 autocast it stores float32
    # activations and gradients, which it hands to NumPy (which has no bfloat16).
    casts = [layer.register_forward_hook(_float_output) for layer in target_layers]
    if method == "ablationcam":  # a fresh ablation layer: the package's default is shared
        cam = AblationCAM(model, target_layers, ablation_layer=AblationLayer(),
                          batch_size=batch_size)
    else:
        cam = CAM_CLASSES[method](model, target_layers)
    cam.batch_size = batch_size  # Score-CAM reads it for its masked forward passes
    try:
        yield lambda batch: cam(batch, targets=targets(batch))
    finally:
        cam.activations_and_grads.release()
        for handle in casts:
            handle.remove()


def extract_priors(
    model: nn.Module,
    images: np.ndarray,
    method: str = "fullgrad",
    layer: str | Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    bf16: bool = False,
) -> np.ndarray:
    """Saliency maps of the defect logit for N×H×W×C uint8 images: N×H×W float16 in [0, 1].

    ``layer``: the target layer's dotted name, or several (fused, see ``FusedLayerCAM``), or
    None for the architecture's default. Images are converted exactly as in training
    (``images_to_tensor``). The model is explained in eval mode, moved to ``device`` ("auto":
    CUDA when present) and left in the train/eval mode it came in, without stored gradients.
    ``bf16`` runs the network's passes under bf16 autocast with channels_last memory, as
    training does; the maps themselves are formed in float32.
    """
    _check_method(method)
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be N×H×W×C uint8 (SplitArrays.images), got "
                         f"{images.dtype} of shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = resolve_target_layers(model, method, layer)
    device = resolve_device(device)
    was_training = model.training
    model.to(device)
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    if bf16:
        model.to(memory_format=memory_format)
    maps = []
    try:
        model.eval()
        with (_saliency(model, method, layers, batch_size) as explain,
              torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)):
            for start in tqdm(range(0, len(images), batch_size), desc=f"{method} priors",
                              disable=not progress):
                batch = images_to_tensor(images[start:start + batch_size]).to(device)
                maps.append(explain(batch.contiguous(memory_format=memory_format)))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    height, width = images.shape[1:3]
    result = np.concatenate(maps) if maps else np.zeros((0, height, width), np.float32)
    return normalise_maps(result.astype(np.float32)).astype(np.float16)
