"""FullGrad saliency in torch: one forward and one backward pass per batch, on the model's device.

FullGrad (Srinivas & Fleuret 2019, "Full-Gradient Representation for Neural Network
Visualization") explains a logit by its full gradient: the input-gradient times the input, plus,
for every convolution and batch norm, the layer's bias times the gradient of its output. Its
saliency map post-processes each of these maps (absolute value, min-max scaling) before summing
them at input resolution. How the scaling is grouped decides what the map shows, so both
groupings in use are methods of the study under their own names:

- ``fullgrad`` scales every channel of every layer on its own, as ``pytorch_grad_cam.FullGrad``
  1.5 does: a weak channel counts as much as a strong one, which spreads the map.
- ``fullgrad_reference`` scales a layer's whole C×H×W tensor per image, then sums its channels,
  as the authors' implementation does: a layer's channels keep their relative strength.

``pytorch_grad_cam`` scales and resizes each channel on the host in NumPy (seconds per image at
704×256). Resizing is linear, so here the scaled maps of one resolution are summed first and
resized once per resolution, all in torch on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Normalisation = Literal["gradcam", "reference"]

FULLGRAD_METHODS: dict[str, Normalisation] = {
    "fullgrad": "gradcam",
    "fullgrad_reference": "reference",
}
"""Study name → the normalisation of the FullGrad maps it uses."""

# Each normalisation's min-max: the dimensions scaled together (of N×C×H×W), the epsilon its
# implementation adds to the maximum, and whether its resize aligns corners.
_SCALING: dict[str, tuple[tuple[int, ...], float, bool]] = {
    "gradcam": ((2, 3), 1e-7, False),
    "reference": ((1, 2, 3), 1e-6, True),
}


def bias_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose bias FullGrad explains through: convolutions with a bias and affine
    batch norms (whose bias, in eval mode, is that of the affine map they apply)."""
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d | nn.BatchNorm2d) and m.bias is not None]


def layer_bias(layer: nn.Module) -> torch.Tensor:
    """The bias a layer adds: a convolution's own, or a batch norm's in eval mode,
    ``bias - running_mean · weight / sqrt(running_var + eps)``."""
    if isinstance(layer, nn.BatchNorm2d):
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return (layer.bias - layer.running_mean * scale).detach()
    return layer.bias.detach()


def _scaled_sum(maps: torch.Tensor, normalisation: Normalisation) -> torch.Tensor:
    """Non-negative N×C×H×W maps min-max scaled as ``normalisation`` groups them, summed over C.

    Consumes ``maps`` (shifted in place): the scaling is folded into the weights of one sum over
    the channels, so no scaled copy of the maps is made (at full resolution the costly part).
    """
    dims, eps, _ = _SCALING[normalisation]
    n, c = maps.shape[:2]
    maps.sub_(maps.amin(dim=dims, keepdim=True))
    weights = (maps.amax(dim=dims) + eps).reciprocal().view(n, -1).expand(n, c)
    return torch.einsum("nchw,nc->nhw", maps, weights)


def fullgrad(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    normalisation: Normalisation = "gradcam",
) -> torch.Tensor:
    """N×H×W FullGrad maps (unnormalised sums) of the scalar ``targets[i]`` picks from image
    i's output, for N×C×H×W ``images`` on the model's device.

    The model is explained as it is (call ``model.eval()`` first: batch norms then add the
    bias ``layer_bias`` reads); its parameters' gradients are left untouched.
    """
    if normalisation not in _SCALING:
        raise ValueError(f"FullGrad normalisation {normalisation!r} is unknown; allowed: "
                         f"{', '.join(_SCALING)}")
    layers = bias_layers(model)
    if not layers:
        raise ValueError(f"FullGrad needs a convolution or batch norm with a bias; "
                         f"{type(model).__name__} has none")
    *_, align_corners = _SCALING[normalisation]
    size = tuple(images.shape[2:])
    sums: dict[tuple[int, ...], torch.Tensor] = {}

    float32 = torch.autocast(images.device.type, enabled=False)  # maps stay float32 under bf16

    def add(maps: torch.Tensor) -> None:  # |gradient × bias| or |gradient × input|
        with float32:
            scaled = _scaled_sum(maps, normalisation)
        key = tuple(scaled.shape[1:])
        sums[key] = sums[key] + scaled if key in sums else scaled

    def on_forward(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        bias = layer_bias(layer)[None, :, None, None]
        # A tensor hook sees the gradient of this output even if a later op changes it in place.
        output.register_hook(lambda grad: add(torch.mul(grad.detach().float(), bias).abs_()))

    handles = [layer.register_forward_hook(on_forward) for layer in layers]
    try:
        images = images.detach().requires_grad_()
        with torch.enable_grad():
            outputs = model(images)
            score = torch.stack([target(out) for target, out in zip(targets, outputs,
                                                                    strict=True)]).sum()
            # backward(inputs=), not autograd.grad: module hooks that observe the backward
            # (FlopCounterMode's, in the inference-cost unit) do not support autograd.grad.
            score.backward(inputs=[images])
        input_grad = images.grad
    finally:
        for handle in handles:
            handle.remove()
    add(torch.mul(input_grad.float(), images.detach().float()).abs_())
    result = sums.pop(size)
    with float32:
        for maps in sums.values():
            result = result + F.interpolate(maps[:, None], size=size, mode="bilinear",
                                            align_corners=align_corners)[:, 0]
    return result
