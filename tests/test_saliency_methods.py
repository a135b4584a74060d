"""The saliency methods implemented here: FullGrad in torch with both normalisations, and
LayerCAM fused over several layers."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import FullGrad, LayerCAM
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kgl_utils.models.classifiers import vgg16
from kgl_utils.saliency.fullgrad import bias_layers, fullgrad
from kgl_utils.saliency.layercam import FusedLayerCAM
from kgl_utils.saliency.priors import (
    DefectLogitTarget,
    extract_priors,
    images_to_tensor,
    normalise_maps,
)
from kgl_utils.saliency.pseudo_masks import make_pseudo_masks


def targets(n: int) -> list[DefectLogitTarget]:
    return [DefectLogitTarget()] * n


def grey_images(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    """Grey noise with one bright square each (one channel, as the default study)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(40, 140, (n, size, size + 16, 1), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 12, 2)
        out[i, r:r + 12, c:c + 12] = 250
    return out


def primary_like(batch_norm: bool) -> nn.Module:
    """The primary's architecture at 1/8 width with random biases and BN statistics: at
    initialisation every bias is zero and FullGrad would see the input-gradient term only."""
    torch.manual_seed(0)
    model = vgg16(in_channels=1, width=0.125, batch_norm=batch_norm).eval()
    with torch.no_grad():
        for layer in bias_layers(model):
            layer.bias.uniform_(-0.3, 0.3)
            if isinstance(layer, nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5)
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return model


# --- FullGrad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_fullgrad_is_grad_cams_fullgrad(batch_norm):
    model, x = primary_like(batch_norm), grey_images()
    assert len(bias_layers(model)) == (26 if batch_norm else 13)
    batch = images_to_tensor(x)
    package = FullGrad(model, [])
    try:
        expected = normalise_maps(package(batch, targets(len(x))))
    finally:
        package.activations_and_grads.release()
    ours = normalise_maps(fullgrad(model, batch, targets(len(x))).numpy())
    assert np.abs(ours - expected).max() < 1e-5
    stored = extract_priors(model, x, "fullgrad", batch_size=2, progress=False)
    assert np.abs(stored.astype(np.float32) - expected).max() < 5e-4  # float16 rounding
    # The comparison can tell normalisations apart: the authors' differs from the package's.
    reference = extract_priors(model, x, "fullgrad_reference", batch_size=2, progress=False)
    assert np.abs(reference.astype(np.float32) - expected).max() > 0.05


class TwoChannels(nn.Module):
    """logit = Σ ReLU(1×1 conv) over both channels and all pixels, with hand-set weights."""

    def __init__(self, weights: tuple[float, float], biases: tuple[float, float]):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(weights).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor(biases))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).sum((1, 2, 3))


def test_fullgrad_by_hand_on_one_convolution():
    # x = [[.2, .6], [1, 0]]; channel 0 = 2x - 1 is active at (0, 1) and (1, 0), channel
    # 1 = .5 - x at (0, 0) and (1, 1). The logit's gradient is 1 on a channel's active pixels,
    # so |bias × gradient| is [[0, 1], [1, 0]] (bias -1) and [[.5, 0], [0, .5]] (bias .5); the
    # input gradient is 2 or -1 where channel 0 or 1 is active, |gradient × x| =
    # [[.2, 1.2], [2, 0]], which both scale by its maximum 2.
    model = TwoChannels((2.0, -1.0), (-1.0, 0.5))
    x = torch.tensor([[[[0.2, 0.6], [1.0, 0.0]]]])
    inputs = np.array([[0.2, 1.2], [2.0, 0.0]])
    # The authors': the layer's two channels scaled together (maximum 1), then summed.
    expected = np.array([[0.5, 1.0], [1.0, 0.5]]) / (1 + 1e-6) + inputs / (2 + 1e-6)
    np.testing.assert_allclose(fullgrad(model, x, targets(1), "reference")[0].numpy(), expected,
                               rtol=1e-6)
    # grad-cam's: each channel scaled on its own, the weak one (maxima .5) up to 1.
    expected = np.array([[1.0, 1.0], [1.0, 1.0]]) + inputs / (2 + 1e-7)
    np.testing.assert_allclose(fullgrad(model, x, targets(1), "gradcam")[0].numpy(), expected,
                               rtol=1e-6)
    assert model.conv.weight.grad is None  # the model's gradients are left alone


class StridedConv(nn.Module):
    """logit = Σ v · (x at the even pixels + .5): a 2×2 layer map under a 4×4 image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, stride=2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(0.5)
        self.register_buffer("v", torch.tensor([[1.0, 2.0], [3.0, 4.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x)[:, 0] * self.v).sum((1, 2))


def test_fullgrad_reference_resizes_each_layer_with_aligned_corners():
    x = torch.full((1, 1, 4, 4), 0.5)
    # |bias × gradient| = .5 v = [[.5, 1], [1.5, 2]], min-max scaled: [[0, 1/3], [2/3, 1]].
    # Aligned corners put a 2-pixel row's samples at 0, 1/3, 2/3, 1 of the way along it.
    layer = np.array([[0.0, 1 / 3], [2 / 3, 1.0]])
    along = np.array([[1.0, 0.0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0.0, 1.0]])
    # The input gradient is v at the even pixels; times x = .5, scaled by its maximum 2.
    inputs = np.zeros((4, 4))
    inputs[::2, ::2] = [[0.5, 1.0], [1.5, 2.0]]
    expected = along @ layer @ along.T + inputs / 2
    result = fullgrad(StridedConv(), x, targets(1), "reference")[0].numpy()
    np.testing.assert_allclose(result, expected, atol=2e-6)


def test_reference_normalisation_does_not_amplify_a_weak_channel():
    # A bright square (255) on a mid-grey half (128) of a dark image (26): channel 0 of the
    # model fires on the square only and adds 9 per pixel, channel 1 on the whole grey half
    # and adds 0.03: a strong channel and a weak, diffuse one.
    x = np.full((1, 32, 32, 1), 26, np.uint8)
    x[:, :, 16:] = 128
    x[:, 8:16, 20:28] = 255
    square = x[..., 0] == 255
    model = TwoChannels((10.0, 0.1), (-9.0, -0.03))
    ours = extract_priors(model, x, "fullgrad_reference", progress=False).astype(np.float32)
    theirs = extract_priors(model, x, "fullgrad", progress=False).astype(np.float32)
    grey = (x[..., 0] == 128)
    # grad-cam scales the weak channel to 1 like the strong one: the grey half gets about a
    # third of the square's saliency (1 + 0.005 against 3); the reference keeps it under 1 %.
    assert theirs[grey].min() > 0.3
    assert ours[grey].max() < 0.01
    ours_mask, theirs_mask = make_pseudo_masks(ours), make_pseudo_masks(theirs)
    np.testing.assert_array_equal(ours_mask, square)
    assert theirs_mask.sum() >= square.sum() + grey.sum()


def test_fullgrad_runs_under_a_flop_counter():
    # The inference-cost unit counts FLOPs of the whole prior pipeline; the counter's backward
    # hooks must not break the saliency pass, nor change it.
    model, x = primary_like(True), images_to_tensor(grey_images(2))
    expected = fullgrad(model, x, targets(2))
    with FlopCounterMode(display=False) as counter:
        counted = fullgrad(model, x, targets(2))
    torch.testing.assert_close(counted, expected)
    assert counter.get_total_flops() > 0
    assert all(p.grad is None for p in model.parameters())  # parameters' gradients untouched


def test_fullgrad_needs_a_biased_layer():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Flatten(), nn.Linear(36, 1))
    with pytest.raises(ValueError, match="FullGrad needs a convolution or batch norm with a "
                                         "bias; Sequential has none"):
        fullgrad(model, torch.zeros(1, 1, 8, 8), targets(1))
    with pytest.raises(ValueError, match="normalisation 'paper' is unknown; allowed: gradcam, "
                                         "reference"):
        fullgrad(TwoChannels((1, 1), (0, 0)), torch.zeros(1, 1, 2, 2), targets(1), "paper")


# --- LayerCAM over several layers ---------------------------------------------------------------


def test_one_layer_layercam_is_the_packages():
    model, x = primary_like(batch_norm=True), images_to_tensor(grey_images())
    maps = []
    for cls in (LayerCAM, FusedLayerCAM):
        cam = cls(model, [model.get_submodule("features.42")])
        try:
            maps.append(cam(x, targets(len(x))))
        finally:
            cam.activations_and_grads.release()
    np.testing.assert_array_equal(*maps)


def test_layercam_fuses_layers_as_its_authors():
    model, x = primary_like(batch_norm=True), grey_images()
    deep, shallow = "features.42", "features.32"  # conv5_3 (stride 16) and conv4_3 (stride 8)
    one, two = (extract_priors(model, x, "layercam", layer, progress=False).astype(np.float32)
                for layer in (shallow, deep))
    fused = extract_priors(model, x, "layercam", [shallow, deep], progress=False)
    # Each layer's map M scaled to tanh(2 M), the element-wise maximum, min-max per image.
    expected = normalise_maps(np.maximum(np.tanh(2 * one), np.tanh(2 * two)))
    np.testing.assert_allclose(fused.astype(np.float32), expected, atol=2e-3)
    for alone in (one, two, normalise_maps((one + two) / 2)):  # nor the package's mean
        assert np.abs(fused.astype(np.float32) - alone).max() > 0.05
