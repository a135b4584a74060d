"""Knowledge priors: extraction, pseudo-masks, control priors, differentiable saliency."""

import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from torch import nn

from kgl_utils.evaluation.saliency_metrics import evaluate_saliency
from kgl_utils.models.classifiers import efficientnet_lite0, resnet18, vgg16
from kgl_utils.models.segdec import SegDecNet
from kgl_utils.names import CONSISTENCY_DISTANCES
from kgl_utils.saliency.controls import CONTROL_FUNCTIONS, derangement, make_control_prior
from kgl_utils.saliency.differentiable import (
    ConsistencyLoss,
    consistency_loss,
    prior_at,
    segdec_gradcam,
)
from kgl_utils.saliency.fullgrad import FULLGRAD_METHODS
from kgl_utils.saliency.priors import (
    CAM_CLASSES,
    DefectLogitTarget,
    default_target_layer,
    extract_priors,
    resolve_target_layers,
)
from kgl_utils.saliency.pseudo_masks import make_pseudo_masks, otsu_mask
from kgl_utils.training import Batch, StepOutputs

# --- tiny models and images ------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Four channels are enough to run every method, Score- and Ablation-CAM included.

    Its trunk is called ``body`` so that no default target layer applies to it.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3))).squeeze(1)


def tiny_vgg() -> nn.Module:
    """The primary network's architecture (VGG16 with LeakyReLU) at 1/8 of the width."""
    torch.manual_seed(0)
    return vgg16(width=0.125)


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18()


def images(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """Grey noise with one bright square each: something for the network to point at."""
    rng = np.random.default_rng(seed)
    out = rng.integers(60, 120, (n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 8, 2)
        out[i, r:r + 8, c:c + 8] = 250
    return out


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg()


# --- extraction -------------------------------------------------------------------------------


def test_default_layers_follow_the_architecture(vgg):
    assert default_target_layer(vgg) == "features.29"  # rectified conv5_3
    assert isinstance(vgg.get_submodule("features.28"), nn.Conv2d)
    assert default_target_layer(tiny_resnet()) == "layer4.1"
    assert default_target_layer(nn.Sequential(tiny_resnet())) == "0.layer4.1"
    assert default_target_layer(efficientnet_lite0(1)) == "_bn1"  # the head, before its ReLU6
    assert resolve_target_layers(vgg, "fullgrad") == ()
    assert resolve_target_layers(vgg, "fullgrad_reference", "features.22") == ()
    assert resolve_target_layers(vgg, "layercam") == ("features.29",)
    assert resolve_target_layers(vgg, "layercam", ["features.22", "features.29"]) == (
        "features.22", "features.29")


@pytest.mark.parametrize("method", ["fullgrad", "fullgrad_reference", "layercam", "gradcam"])
def test_maps_shape_range_and_reproducible_on_vgg16(vgg, method):
    x = images(3, 32)
    maps = extract_priors(vgg, x, method, batch_size=2, progress=False)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float16
    assert maps.min() == 0 and maps.max() == 1
    assert np.allclose(maps.reshape(3, -1).max(1), 1.0)  # min-max per image
    # Same inputs, same maps. (Across batch sizes CPU kernels may break max-pool ties
    # differently, which moves FullGrad's input-gradient term: compare like with like.)
    np.testing.assert_array_equal(maps, extract_priors(tiny_vgg(), x, method, batch_size=2,
                                                       progress=False))


@pytest.mark.parametrize("method", ["fullgrad", "gradcam"])
def test_maps_on_pretrained_efficientnet_lite0(method):
    maps = extract_priors(efficientnet_lite0(1), images(2, 64)[..., :1], method, progress=False)
    assert maps.shape == (2, 64, 64) and maps.max() == 1


def test_maps_on_resnet18_at_non_square_size():
    x = images(2, 64)[:, :, :48]
    maps = extract_priors(tiny_resnet(), x, "layercam", progress=False)
    assert maps.shape == (2, 64, 48)
    assert np.allclose(maps.reshape(2, -1).max(1), 1.0)


def test_every_registered_method_runs():
    torch.manual_seed(0)
    model = TinyCNN()
    x = images(2, 16)
    for method in (*FULLGRAD_METHODS, *CAM_CLASSES):
        maps = extract_priors(model, x, method, layer="body.3", progress=False)
        assert maps.shape == (2, 16, 16), method
        assert 0 <= maps.min() and maps.max() <= 1, method


class BrightSpotDetector(nn.Module):
    """Hand-set weights: the logit is the mean of the pixels brighter than 0.7, so the right
    explanation is known exactly: the bright square of each ``images()`` picture."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
        nn.init.constant_(self.body[0].weight, 1 / 3)
        nn.init.constant_(self.body[0].bias, -0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((1, 2, 3))


@pytest.mark.parametrize("method", ["fullgrad", "fullgrad_reference", "layercam", "gradcam",
                                    "hirescam"])
@pytest.mark.parametrize("bf16", [False, True])
def test_maps_point_at_what_drives_the_logit(method, bf16):
    x = images(3, 32)
    squares = (x.min(axis=3) == 250).astype(np.uint8)
    maps = extract_priors(BrightSpotDetector(), x, method, layer="body.1", progress=False,
                          bf16=bf16)
    _, summary = evaluate_saliency(maps, squares)
    assert summary.loc["auroc", "mean"] == 1.0
    assert summary.loc["pointing_game", "mean"] == 1.0


@pytest.mark.parametrize("method", ["fullgrad", "fullgrad_reference", "layercam", "gradcam"])
def test_bf16_maps_agree_with_the_float32_maps(vgg, method):
    """An untrained network's weak channels carry bf16's rounding into FullGrad's per-channel
    scaling, so agreement is a correlation, not a tolerance."""
    x = images(3, 64)
    fp32 = extract_priors(vgg, x, method, progress=False).astype(np.float32)
    bf16 = extract_priors(vgg, x, method, progress=False, bf16=True)
    assert bf16.dtype == np.float16 and bf16.shape == fp32.shape
    assert 0 <= bf16.min() and bf16.max() <= 1
    for a, b in zip(fp32, bf16.astype(np.float32)):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.85
    assert next(vgg.parameters()).dtype == torch.float32


def test_extraction_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = TinyCNN().train()
    extract_priors(model, images(2, 16), "gradcam", layer="body.3", progress=False)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_target_is_the_single_logit():
    assert DefectLogitTarget()(torch.tensor(2.5)).item() == 2.5
    with pytest.raises(ValueError, match="one logit per image"):
        DefectLogitTarget()(torch.zeros(2))


def test_unknown_method_and_missing_layer_stop_clearly(vgg):
    unknown = re.escape("'gradcam+' is unknown; allowed: fullgrad, fullgrad_reference, layercam")
    with pytest.raises(ValueError, match=unknown):
        extract_priors(vgg, images(1), "gradcam+")
    with pytest.raises(ValueError, match=r"layer 'features.99' does not exist.*"
                                         r"valid names include \['features"):
        extract_priors(vgg, images(1), "layercam", layer="features.99")
    with pytest.raises(ValueError, match="no default target layer for a TinyCNN"):
        extract_priors(TinyCNN(), images(1), "gradcam")
    with pytest.raises(ValueError, match="at least one layer"):
        extract_priors(vgg, images(1), "layercam", layer=[])


# --- pseudo-masks -----------------------------------------------------------------------------


def bimodal_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Low noise around 0.2 with a block around 0.8: Otsu must recover the block."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((32, 32), np.uint8)
    truth[8:20, 10:24] = 1
    saliency = np.clip(np.where(truth, 0.8, 0.2) + rng.normal(0, 0.05, truth.shape), 0, 1)
    return saliency.astype(np.float32), truth


def test_otsu_recovers_the_bright_mode():
    saliency, truth = bimodal_map()
    np.testing.assert_array_equal(otsu_mask(saliency), truth)
    masks = make_pseudo_masks(np.stack([saliency, bimodal_map(1)[0]]))
    assert masks.dtype == np.uint8 and masks.shape == (2, 32, 32)
    np.testing.assert_array_equal(masks[0], truth)


def test_fixed_percentile_soft_and_dilation():
    saliency, truth = bimodal_map()
    maps = saliency[None]
    np.testing.assert_array_equal(make_pseudo_masks(maps, "fixed", threshold=0.5)[0], truth)
    top = make_pseudo_masks(maps, "percentile", threshold=90)[0]
    assert top.sum() == pytest.approx(0.1 * truth.size, abs=2)
    assert top[truth == 0].sum() == 0  # the top tenth lies inside the bright block
    np.testing.assert_array_equal(make_pseudo_masks(maps, "soft"), maps)
    grown = make_pseudo_masks(maps, "otsu", dilate=2)[0]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    np.testing.assert_array_equal(grown, cv2.dilate(truth, kernel))
    with pytest.raises(ValueError, match="'fixed' needs threshold in \\[0, 1\\], got 5"):
        make_pseudo_masks(maps, "fixed", threshold=5)
    with pytest.raises(ValueError, match="'mean' is unknown; allowed: otsu, fixed"):
        make_pseudo_masks(maps, "mean")


# --- control priors ---------------------------------------------------------------------------


def control_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise maps, masks, and targets of one to three blobs of known area per image."""
    rng = np.random.default_rng(0)
    maps = rng.random((5, 32, 32)).astype(np.float16)
    masks = np.zeros((5, 32, 32), np.uint8)
    targets = np.zeros((5, 32, 32), np.uint8)
    for i in range(5):
        masks[i, 4 * i:4 * i + 6, 3:9] = 1
        targets[i, 2:8, 2:2 + 2 * (i + 1)] = 1  # one blob of 6 × 2(i+1) px
        if i % 2:
            targets[i, 20:23, 20:25] = 1  # a second blob of 15 px
    targets[4, 12:14, 27:29] = 1  # a third, 4 px
    return maps, masks, targets


def test_random_prior_moves_each_targets_blobs_keeping_count_and_area():
    maps, masks, targets = control_inputs()
    a = make_control_prior("random", maps, masks, targets, seed=1)
    assert a.shape == maps.shape and a.dtype == np.float16 and set(np.unique(a)) <= {0, 1}
    for moved, target in zip(a, targets):
        # Hand count: the area of each image's blobs (12 + 15, 24, …) stays, so does the count.
        assert moved.sum() == target.sum()
        assert (cv2.connectedComponents(moved.astype(np.uint8))[0]
                == cv2.connectedComponents(target)[0])
    assert not np.array_equal(a, targets)  # the place is not kept
    np.testing.assert_array_equal(a, make_control_prior("random", maps, masks, targets, seed=1))
    assert not np.array_equal(a, make_control_prior("random", maps, masks, targets, seed=2))
    with pytest.raises(ValueError, match="give targets"):
        make_control_prior("random", maps, masks)


def test_full_prior_covers_every_pixel():
    maps, masks, _ = control_inputs()
    full = make_control_prior("full", maps, masks)
    assert full.shape == maps.shape and (full == 1).all()
    assert (make_pseudo_masks(full.astype(np.float32)) == 1).all()  # Otsu keeps it whole


def test_shuffled_prior_is_a_derangement():
    maps, masks, _ = control_inputs()
    order = derangement(5, seed=3)
    assert sorted(order) == list(range(5)) and (order != np.arange(5)).all()
    shuffled = make_control_prior("shuffled", maps, masks, seed=3)
    np.testing.assert_array_equal(shuffled, maps[order])
    for seed in range(20):
        assert (derangement(2, seed) == [1, 0]).all()
    with pytest.raises(ValueError, match="at least 2 images"):
        make_control_prior("shuffled", maps[:1], masks[:1])


def test_blurred_prior_is_smoother_and_keeps_the_location():
    maps, masks, _ = control_inputs()
    peaked = maps.astype(np.float32) * 0.2
    peaked[:, 20:26, 20:26] = 1.0
    blurred = make_control_prior("blurred", peaked, masks).astype(np.float32)

    def roughness(m):  # mean absolute Laplacian: high-frequency content
        return np.mean([np.abs(cv2.Laplacian(x, cv2.CV_32F)).mean() for x in m])

    assert roughness(blurred) < roughness(peaked) / 10
    assert blurred.min() == 0 and blurred.max() == 1
    assert np.unravel_index(blurred[0].argmax(), (32, 32)) in [(22, 22), (22, 23), (23, 22),
                                                               (23, 23)]


def test_oracle_prior_is_the_mask():
    maps, masks, _ = control_inputs()
    np.testing.assert_array_equal(make_control_prior("oracle", maps, masks), masks)
    assert set(CONTROL_FUNCTIONS) == {"random", "full", "shuffled", "blurred", "oracle"}
    with pytest.raises(ValueError, match="'noise' is unknown; allowed: random, full"):
        make_control_prior("noise", maps, masks)


# --- differentiable saliency of the final network ---------------------------------------------


def segdec_batch(extra_input_channels: int = 0, labels=(1.0, 1.0, 0.0)):
    """A narrow SegDecNet, three 128 px images (its smallest input) with a bright square each,
    and the squares as priors."""
    torch.manual_seed(0)
    model = SegDecNet(width=0.0625, extra_input_channels=extra_input_channels)
    x = torch.from_numpy(images(3, 128, seed=1)).permute(0, 3, 1, 2).float() / 255
    priors = (x.mean(1, keepdim=True) > 0.9).float()
    batch = Batch(index=torch.arange(3), flips=torch.zeros(3, 2, dtype=torch.bool), images=x,
                  labels=torch.tensor(labels), cls_targets=torch.tensor(labels), priors=priors)
    features, seg_logits = model.segment(x, priors if extra_input_channels else None)
    return model, batch, StepOutputs(model.decide(features, seg_logits), seg_logits, features)


def test_segdec_gradcam_is_grad_cam_of_the_logit():
    model, batch, outputs = segdec_batch()
    ours = segdec_gradcam(model, outputs.features, outputs.seg_logits)
    assert ours.shape == (3, 16, 16) and ours.requires_grad  # the features' 1/8 resolution
    assert 0 <= ours.min().item() and ours.max().item() <= 1
    ours = F.interpolate(ours[:, None], size=(128, 128), mode="bilinear")[:, 0]

    class Logit(nn.Module):  # the classifier's view, with the gradient stop lifted
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            features, seg_logits = self.net.segment(x)
            return self.net.decide(features, seg_logits, stop_gradient=False)

    with GradCAM(Logit(model), [model.volume]) as reference:
        expected = reference(batch.images, [DefectLogitTarget()] * 3)
    for ours_map, expected_map in zip(ours.detach().numpy(), expected, strict=True):
        assert np.corrcoef(ours_map.ravel(), expected_map.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("distance", CONSISTENCY_DISTANCES)
def test_consistency_loss_reaches_the_final_networks_weights(distance):
    model, batch, outputs = segdec_batch()
    hook = ConsistencyLoss(distance, weight=2.0)
    loss = hook(model, batch, outputs, epoch=0)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    for name in ("volume.0.0.weight", "volume.11.0.weight", "extractor.1.0.weight", "fc.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_first_order_consistency_leaves_the_classifier_alone():
    model, batch, outputs = segdec_batch()
    ConsistencyLoss("l1", second_order=False)(model, batch, outputs, epoch=0).backward()
    assert model.get_parameter("volume.0.0.weight").grad.abs().sum() > 0
    # The Grad-CAM weights are constants: no gradient reaches the classifier through them.
    assert model.get_parameter("fc.weight").grad is None
    assert model.get_parameter("extractor.1.0.weight").grad is None


def test_the_prior_is_compared_at_the_saliency_resolution():
    prior = torch.zeros(2, 16, 16)
    prior[0, :8, :8] = 1.0  # one 8×8 cell full
    prior[1, 0, 0] = 1.0  # one pixel: 1/64 of its cell
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    for pooled in prior_at(prior, (2, 2)):
        torch.testing.assert_close(pooled, expected)  # min-max scaled like the saliency
    torch.testing.assert_close(F.adaptive_avg_pool2d(prior[1:, None], (2, 2))[0, 0, 0, 0],
                               torch.tensor(1 / 64))


def test_consistency_loss_skips_negatives_and_the_prior_channel():
    model, batch, outputs = segdec_batch(labels=(0.0, 0.0, 0.0))
    assert float(ConsistencyLoss()(model, batch, outputs, 0)) == 0.0
    model, batch, outputs = segdec_batch(extra_input_channels=1)
    loss = ConsistencyLoss("l1")(model, batch, outputs, 0)
    loss.backward()
    assert model.get_parameter("volume.0.0.weight").grad.abs().sum() > 0
    batch.priors = None
    with pytest.raises(ValueError, match="needs priors in the batch"):
        ConsistencyLoss()(model, batch, outputs, 0)


def test_flat_saliency_keeps_a_bounded_gradient():
    model, batch, outputs = segdec_batch()
    features = (outputs.features * 1e-5).detach().requires_grad_()  # a nearly flat map
    saliency = segdec_gradcam(model, features, outputs.seg_logits.detach())
    consistency_loss(saliency, prior_at(batch.priors[:, 0], (16, 16)), "l1").backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().max() < 1e3


def test_distances_on_known_maps():
    prior = torch.zeros(1, 4, 4)
    prior[0, 1:3, 1:3] = 1.0
    for distance in ("l1", "mse", "kl", "cosine"):
        assert float(consistency_loss(prior, prior, distance)) == pytest.approx(0, abs=1e-5)
    flipped = 1 - prior
    assert float(consistency_loss(flipped, prior, "l1")) == 1.0
    assert float(consistency_loss(flipped, prior, "cosine")) == pytest.approx(1.0)
    assert float(consistency_loss(flipped, prior, "bce")) > 10
    soft = torch.full((1, 4, 4), 0.3, requires_grad=True)
    consistency_loss(soft, torch.full((1, 4, 4), 0.3), "bce").backward()
    assert soft.grad.abs().max() < 1e-5  # BCE is minimal where the maps agree
    with pytest.raises(ValueError, match="'js' is unknown; allowed: bce, l1, mse, kl, cosine"):
        ConsistencyLoss("js")


def test_registries_cover_the_vocabulary_exactly():
    from kgl_utils import names
    from kgl_utils.data import DATASETS

    assert (*FULLGRAD_METHODS, *CAM_CLASSES) == names.SALIENCY_METHODS  # each name once
    assert tuple(CONTROL_FUNCTIONS) == names.CONTROL_PRIORS
    assert tuple(DATASETS) == names.DATASETS
