"""One training loop for every network of the study: SegDecNet (baseline and guided) and the
primary classifier, which is the case without a segmentation output.

The loop follows the mixed-supervision authors' ``end2end.py``: each epoch takes every positive
and as many negatives, the negatives drawn by frequency so all are used about equally often; SGD;
the dynamically balanced loss of ``kgl_utils.losses``. What a guided run changes comes in as data
(``masks``: pseudo-masks instead of human masks; ``priors``: an extra input channel) or as a hook
(``extra_loss``), so baseline and guided runs share every other line. Runs checkpoint atomically
and resume to the same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from kgl_utils.data.base import SplitArrays
from kgl_utils.device import resolve_device
from kgl_utils.evaluation.image_metrics import image_metrics
from kgl_utils.losses import (
    loss_weights,
    mixed_supervision_loss,
    segmentation_gamma,
    segmentation_targets,
)
from kgl_utils.paths import CHECKPOINT, LOSSES
from kgl_utils.results import save_torch, write_csv

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run; the defaults are the authors' (SGD without momentum, batch 1).

    ``loss_reduction`` "sum" adds the per-sample losses of a batch, which is exactly the gradient
    the authors accumulate over the samples of a batch (the network has no batch statistics);
    "mean" is the usual choice for a classifier with momentum. ``lr_schedule`` "cosine" anneals
    the rate to zero over the epochs (helps a classifier trained from scratch settle); the
    authors keep it constant. ``max_grad_norm`` clips the total gradient norm of each step; the
    authors do not clip (None), a second-order loss such as the consistency term needs it.
    ``checkpoint_every`` 0 writes only the final checkpoint. ``w_pos``, ``p`` and ``dilate`` shape
    the segmentation targets.
    """

    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 1
    delta: float = 1.0
    w_pos: float = 1.0
    p: float = 2.0
    dilate: int = 1
    dynamic_balance: bool = True
    momentum: float = 0.0
    weight_decay: float = 0.0
    flips: bool = False
    soft_class_target: bool = True
    loss_reduction: Literal["sum", "mean"] = "sum"
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: float | None = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 0
    bf16: bool = False
    channels_last: bool = False
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("delta", self.delta >= 0, "a number >= 0"),
            ("w_pos", self.w_pos > 0, "a number > 0"),
            ("p", self.p >= 0, "a number >= 0"),
            ("dilate", self.dilate >= 0, "an integer >= 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("loss_reduction", self.loss_reduction in ("sum", "mean"), "'sum' or 'mean'"),
            ("lr_schedule", self.lr_schedule in ("constant", "cosine"), "'constant' or 'cosine'"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0,
             "None or a number > 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
            ("num_workers", self.num_workers >= 0, "an integer >= 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected {allowed}")

    def result_settings(self) -> dict:
        """The settings that shape the trained weights (not where or how verbosely it runs)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("device", "num_workers", "progress", "checkpoint_every")}


@dataclass
class Batch:
    """One mini-batch on the device, as the model and the ``extra_loss`` hook see it.

    ``index`` are rows of the training arrays; ``flips`` (B×2 bool: horizontal, vertical) say how
    each image was flipped, so a hook can flip whatever else it looks up by ``index``.
    ``labels`` are the image labels (0/1), ``cls_targets`` what the classification loss aims at
    (see ``TrainConfig.soft_class_target``). ``priors`` are present whenever priors were given,
    whether or not the model takes them.
    """

    index: torch.Tensor
    flips: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    cls_targets: torch.Tensor
    gamma: torch.Tensor | None = None
    seg_targets: torch.Tensor | None = None
    seg_weights: torch.Tensor | None = None
    priors: torch.Tensor | None = None


@dataclass
class StepOutputs:
    """What the forward pass produced: logits [B], seg logits [B,1,h,w] and the features the
    classifier read (both None for an image classifier). ``features`` lets a hook call
    ``model.decide(features, seg_logits, stop_gradient=False)`` for gradients of the logit."""

    cls_logits: torch.Tensor
    seg_logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


ExtraLoss = Callable[[nn.Module, Batch, StepOutputs, int], torch.Tensor]
"""``extra_loss(model, batch, outputs, epoch) -> scalar``, added to the batch's loss as it is."""


@dataclass
class TrainResult:
    """The trained model (on the training device), per-epoch losses and the checkpoint path;
    ``best_epoch`` (0-based) is the epoch whose weights were kept when a validation split chose
    them, else None (the last epoch's)."""

    model: nn.Module
    history: pd.DataFrame
    checkpoint: Path | None
    resumed_epochs: int
    best_epoch: int | None = None


class NegativeSampler:
    """The authors' frequency sampling of negatives: rarely drawn ones become more likely.

    Each draw picks negatives without replacement with probability ``(1 - c/c_max - median + 1)``
    raised to ``4·ln(n)``, where ``c`` counts past draws; the first draw is uniform. When an epoch
    needs more negatives than exist, every negative is taken whole rounds first. The counts are the
    sampler's whole state (the random generator is the caller's), so a run resumes exactly.
    """

    def __init__(self, n_negatives: int):
        if n_negatives < 1:
            raise ValueError("the training set has no negative image")
        self.counts = np.zeros(n_negatives, np.int64)

    def _probabilities(self) -> np.ndarray:
        n = len(self.counts)
        if self.counts.max() == 0:
            return np.full(n, 1.0 / n)
        p = 1.0 - self.counts / self.counts.max()
        p = (p - np.median(p) + 1.0) ** (np.log(n) * 4)
        p = np.maximum(p, np.finfo(float).tiny)  # keep every negative drawable
        return p / p.sum()

    def draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` indices into the negatives, counted as used."""
        n = len(self.counts)
        parts = []
        for _ in range(k // n):
            parts.append(rng.permutation(n))
            self.counts += 1
        if k % n:
            part = rng.choice(n, size=k % n, replace=False, p=self._probabilities())
            self.counts[part] += 1
            parts.append(part)
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def state_dict(self) -> dict:
        return {"counts": self.counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = np.asarray(state["counts"], np.int64).copy()


FLIP_CODES = ((False, False), (True, False), (False, True), (True, True))
"""(horizontal, vertical) flips by code: the index of a target variant in ``SegTargets``."""


def flip(array: np.ndarray, hflip: bool, vflip: bool) -> np.ndarray:
    """An H×W(×C) array flipped left-right and/or upside down (a contiguous copy)."""
    if hflip:
        array = array[:, ::-1]
    if vflip:
        array = array[::-1]
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class SegTargets:
    """γ per image and the 1/8 targets, weights and classification targets of a run, one
    variant per flip (``FLIP_CODES``; only the first without flips).

    Each variant is computed from the flipped full-size mask: flipping a 1/8 target instead
    would misplace it by almost a cell, since the pooling windows are not symmetric under a flip.
    """

    gamma: np.ndarray  # N
    targets: np.ndarray  # F×N×h×w
    weights: np.ndarray  # F×N×h×w
    cls_targets: np.ndarray  # F×N


class _EpochDataset(Dataset):
    """The rows of one epoch in order, flipped as planned; images stay uint8 until the device."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                 flips: np.ndarray, seg: SegTargets | None = None,
                 priors: np.ndarray | None = None):
        self.images, self.labels, self.index, self.flips = images, labels, index, flips
        self.seg, self.priors = seg, priors

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        hflip, vflip = bool(self.flips[i, 0]), bool(self.flips[i, 1])
        label = float(self.labels[j])
        item = {
            "index": torch.tensor(j),
            "flips": torch.from_numpy(self.flips[i].copy()),
            "images": torch.from_numpy(flip(self.images[j], hflip, vflip)).permute(2, 0, 1),
            "labels": torch.tensor(label),
            "cls_targets": torch.tensor(label),
        }
        if self.seg is not None:
            code = FLIP_CODES.index((hflip, vflip))
            item["gamma"] = torch.tensor(float(self.seg.gamma[j]))
            item["seg_targets"] = torch.from_numpy(self.seg.targets[code, j])[None]
            item["seg_weights"] = torch.from_numpy(self.seg.weights[code, j])[None]
            item["cls_targets"] = torch.tensor(float(self.seg.cls_targets[code, j]))
        if self.priors is not None:
            prior = flip(np.asarray(self.priors[j], np.float32), hflip, vflip)
            item["priors"] = torch.from_numpy(prior)[None]
        return item


def _to_device(raw: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> Batch:
    moved = {k: v.to(device, non_blocking=True) for k, v in raw.items()}
    images = moved["images"].float().div_(255)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    moved["images"] = images
    return Batch(**moved)


def _has_segmentation(model: nn.Module) -> bool:
    return hasattr(model, "segment") and hasattr(model, "decide")


def _forward(model: nn.Module, batch: Batch) -> StepOutputs:
    if _has_segmentation(model):
        extra = batch.priors if getattr(model, "extra_input_channels", 0) else None
        features, seg_logits = model.segment(batch.images, extra)
        return StepOutputs(model.decide(features, seg_logits), seg_logits, features)
    return StepOutputs(model(batch.images))


def _check_inputs(model, data, segmented, masks, priors, extra_loss) -> None:
    n, height, width = len(data), *data.images.shape[1:3]
    if n == 0:
        raise ValueError("the training split is empty")
    if segmented.shape != (n,):
        raise ValueError(f"segmented must be a boolean vector of length {n}, "
                         f"got shape {segmented.shape}")
    for name, maps in (("masks", masks), ("priors", priors)):
        if maps is None:
            continue
        if maps.shape != (n, height, width):
            raise ValueError(f"{name} must be N×H×W = {(n, height, width)} like the images, "
                             f"got shape {maps.shape}")
        low, high = float(np.min(maps)), float(np.max(maps))
        if low < 0 or high > 1:
            raise ValueError(f"{name} must lie in [0, 1], got values in [{low}, {high}]")
    if masks is None:
        lacking = segmented & (data.labels == 1) & ~data.is_segmented
        if lacking.any():
            ids = [data.ids[i] for i in np.flatnonzero(lacking)[:3]]
            raise ValueError(f"segmented marks positives without a mask, e.g. {ids}; "
                             f"give masks (e.g. pseudo-masks) or unmark them")
    takes_prior = getattr(model, "extra_input_channels", 0)
    if takes_prior and priors is None:
        raise ValueError("the model takes an extra input channel (extra_input_channels="
                         f"{takes_prior}) but no priors were given")
    if priors is not None and not takes_prior and extra_loss is None:
        raise ValueError("priors given, but the model takes no extra input and no extra_loss "
                         "uses them")
    if not (data.labels == 1).any():
        raise ValueError("the training split has no positive image")


def _fingerprint(config: TrainConfig, model: nn.Module, data: SplitArrays,
                 arrays: list[np.ndarray | None]) -> str:
    """Identifies a run, so a checkpoint is resumed only by the run that wrote it."""
    digest = hashlib.sha1(json.dumps(config.result_settings(), sort_keys=True).encode())
    digest.update(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
    digest.update("\n".join(data.ids).encode())
    for array in [data.labels, *arrays]:
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class _RunState:
    """Everything a resumed run needs to continue exactly as an uninterrupted one."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    sampler: NegativeSampler
    rng: np.random.Generator
    device: torch.device

    best: dict | None = None  # {"epoch", "ap", "model"} of the best validated epoch so far

    def save(self, path: Path, fingerprint: str, epoch: int, history: list[dict],
             config: TrainConfig) -> None:
        cuda = self.device.type == "cuda"
        save_torch({
            "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "epoch": epoch,
            "config": dataclasses.asdict(config), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.state_dict(), "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None, "history": history,
            "best": self.best,
        }, path)

    def restore(self, path: Path, fingerprint: str) -> tuple[list[dict], int]:
        """Load a checkpoint of this very run; returns (history, epochs done)."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{path} was written by another run (different settings, "
                             f"data or model); use another run_dir or delete it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best = state.get("best")
        return state["history"], state["epoch"]

    def validate(self, epoch: int, validation: SplitArrays, priors: np.ndarray | None,
                 batch_size: int) -> float:
        """AP on the validation split after ``epoch``; keeps a copy of the best epoch's weights
        (the first of equal ones)."""
        scores, _ = predict(self.model, validation.images, priors, batch_size=batch_size,
                            device=self.device, progress=False)
        ap = image_metrics(validation.labels, scores).ap
        if self.best is None or ap > self.best["ap"]:
            self.best = {"epoch": epoch, "ap": ap, "model": {
                k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        return ap


def _plan_epoch(positives: np.ndarray, negatives: np.ndarray, sampler: NegativeSampler,
                rng: np.random.Generator, flips: bool) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's rows (every positive and as many sampled negatives, shuffled) and each
    row's (horizontal, vertical) flip."""
    order = rng.permutation(np.concatenate([positives,
                                            negatives[sampler.draw(len(positives), rng)]]))
    planned = rng.random((len(order), 2)) < 0.5 if flips else np.zeros((len(order), 2), bool)
    return order, planned


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict:
    """Load a training checkpoint's weights into ``model``; returns the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=resolve_device(device), weights_only=False)
    model.load_state_dict(state["model"])
    return state


def _segmentation_arrays(
    data: SplitArrays, segmented: np.ndarray, masks: np.ndarray | None, config: TrainConfig
) -> SegTargets:
    """γ per image and every flip variant of the targets, computed once for the whole run."""
    gamma = segmentation_gamma(data.labels, segmented)
    source = data.masks if masks is None else masks
    n, height, width = source.shape
    variants = len(FLIP_CODES) if config.flips else 1
    targets = np.zeros((variants, n, height // 8, width // 8), np.float32)
    weights = np.ones_like(targets)
    cls_targets = np.repeat(data.labels.astype(np.float32)[None], variants, axis=0)
    # Only positives with γ = 1 have a non-trivial target; negatives keep (0, 1).
    chosen = np.flatnonzero((gamma > 0) & (data.labels == 1))
    for code, (hflip, vflip) in enumerate(FLIP_CODES[:variants]):
        flipped = np.stack([flip(source[i], hflip, vflip) for i in chosen]) if len(chosen) \
            else source[chosen]
        targets[code, chosen], weights[code, chosen] = segmentation_targets(
            flipped, dilate=config.dilate, w_pos=config.w_pos, p=config.p)
        if config.soft_class_target:
            cls_targets[code, chosen] = targets[code, chosen].max(axis=(1, 2))
    return SegTargets(gamma, targets, weights, cls_targets)


def _train_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
    config: TrainConfig, device: torch.device, seg_weight: float, cls_weight: float,
    extra_loss: ExtraLoss | None, epoch: int,
) -> dict[str, float]:
    """One pass over the epoch's batches; returns the sums of the logged quantities."""
    model.train()
    # Sums stay on the device; reading them back every step would stall a GPU.
    sums = dict.fromkeys(("loss", "loss_seg", "loss_cls", "loss_extra", "correct", "n_seg"),
                         torch.zeros((), device=device))
    batches = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not config.progress)
    for step, raw in enumerate(batches, start=1):
        batch = _to_device(raw, device, config.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            outputs = _forward(model, batch)
            terms = mixed_supervision_loss(
                outputs.cls_logits, batch.cls_targets, outputs.seg_logits, batch.seg_targets,
                batch.seg_weights, batch.gamma, seg_weight, cls_weight)
            loss = terms.total.sum() if config.loss_reduction == "sum" else terms.total.mean()
            if extra_loss is not None:
                extra = extra_loss(model, batch, outputs, epoch)
                loss = loss + extra
                sums["loss_extra"] = sums["loss_extra"] + extra.detach().float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            sums["loss"] = sums["loss"] + terms.total.sum()
            sums["loss_cls"] = sums["loss_cls"] + terms.cls.sum()
            if batch.gamma is not None:
                sums["loss_seg"] = sums["loss_seg"] + (terms.seg * batch.gamma).sum()
                sums["n_seg"] = sums["n_seg"] + batch.gamma.sum()
            correct = (outputs.cls_logits > 0) == (batch.labels > 0.5)
            sums["correct"] = sums["correct"] + correct.sum()
        if config.progress and (step % 10 == 0 or step == len(loader)):
            seen = min(step * config.batch_size, len(loader.dataset))
            batches.set_postfix(loss=f"{float(sums['loss']) / seen:.4f}")
    return {k: float(v) for k, v in sums.items()}


def train(
    model: nn.Module,
    data: SplitArrays,
    config: TrainConfig,
    *,
    segmented: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    priors: np.ndarray | None = None,
    extra_loss: ExtraLoss | None = None,
    validation: SplitArrays | None = None,
    validation_priors: np.ndarray | None = None,
    run_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` on ``data``; with ``run_dir``, checkpoint there and resume from it.

    ``segmented`` (bool per image, default ``data.is_segmented``) picks the positives whose
    segmentation loss counts (γ = 1); negatives always count with an all-zero target. ``masks``
    (N×H×W in [0, 1]) replace the human masks, e.g. pseudo-masks of a guided run. ``priors``
    (N×H×W in [0, 1]) are flipped with their images and fed to a model with
    ``extra_input_channels``, and reach ``extra_loss`` through ``Batch.priors``. A model without
    ``segment``/``decide`` (an image classifier) trains on ``δ·L_cls`` alone. With
    ``validation`` (and its ``validation_priors`` where the model takes them) every epoch is
    scored by AP there and the best epoch's weights are returned, as the mixed-supervision
    authors select their Severstal models.

    A ``run_dir`` holding a finished run's checkpoint returns that run without training again; an
    unfinished one is resumed. Per-epoch losses go to ``run_dir/losses.csv``.
    """
    device = resolve_device(config.device)
    segmented = np.asarray(data.is_segmented if segmented is None else segmented, dtype=bool)
    _check_inputs(model, data, segmented, masks, priors, extra_loss)
    if validation is not None and len(np.unique(validation.labels)) < 2:
        raise ValueError("the validation split needs positive and negative images to choose an "
                         "epoch by AP")
    has_seg = _has_segmentation(model)
    seg = _segmentation_arrays(data, segmented, masks, config) if has_seg else None
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True  # autotuning: fastest, but not bit-exact
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                if config.lr_schedule == "cosine" else
                torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
    positives = np.flatnonzero(data.labels == 1)
    negatives = np.flatnonzero(data.labels == 0)
    state = _RunState(model, optimizer, schedule, NegativeSampler(len(negatives)),
                      np.random.default_rng(config.seed), device)
    torch.manual_seed(config.seed)
    fingerprint = _fingerprint(config, model, data, [
        segmented, None if seg is None else seg.targets, None if seg is None else seg.weights,
        None if priors is None else priors[:, ::8, ::8],
        None if validation is None else validation.labels])
    history: list[dict] = []
    start = 0
    ckpt_path = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        ckpt_path = run_dir / CHECKPOINT
        if ckpt_path.is_file():
            history, start = state.restore(ckpt_path, fingerprint)

    epochs = tqdm(range(start, config.epochs), desc="training", initial=start,
                  total=config.epochs, disable=not config.progress)
    for epoch in epochs:
        seg_weight, cls_weight = (loss_weights(epoch, config.epochs, config.delta,
                                               config.dynamic_balance)
                                  if has_seg else (0.0, config.delta))
        order, flips = _plan_epoch(positives, negatives, state.sampler, state.rng, config.flips)
        loader = DataLoader(
            _EpochDataset(data.images, data.labels, order, flips, seg, priors),
            batch_size=config.batch_size, num_workers=config.num_workers,
            pin_memory=device.type == "cuda")
        began = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sums = _train_epoch(model, loader, optimizer, config, device, seg_weight, cls_weight,
                            extra_loss, epoch)
        schedule.step()
        n = len(order)
        row = {
            "epoch": epoch, "lr": lr, "seg_weight": seg_weight, "cls_weight": cls_weight,
            "loss": sums["loss"] / n, "loss_cls": sums["loss_cls"] / n,
            "loss_seg": sums["loss_seg"] / sums["n_seg"] if sums["n_seg"] else math.nan,
            "accuracy": sums["correct"] / n, "seconds": time.perf_counter() - began,
        }
        if extra_loss is not None:
            row["loss_extra"] = sums["loss_extra"] / len(loader)
        if validation is not None:
            row["validation_ap"] = state.validate(epoch, validation, validation_priors,
                                                  config.batch_size)
        if not math.isfinite(sums["loss"] + sums["loss_extra"]):
            where = f" (run {run_dir})" if run_dir is not None else ""
            raise FloatingPointError(f"training diverged in epoch {epoch}{where}: the loss is "
                                     f"not finite; lower the learning rate or loss weights")
        history.append(row)
        epochs.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['accuracy']:.3f}")
        done = epoch + 1
        if run_dir is not None:
            write_csv(run_dir / LOSSES, pd.DataFrame(history))
            if done == config.epochs or (config.checkpoint_every
                                         and done % config.checkpoint_every == 0):
                state.save(ckpt_path, fingerprint, done, history, config)
    best_epoch = None
    if state.best is not None:
        model.load_state_dict(state.best["model"])
        best_epoch = state.best["epoch"]
    return TrainResult(model, pd.DataFrame(history), ckpt_path, start, best_epoch)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: np.ndarray,
    priors: np.ndarray | None = None,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    channels_last: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (sigmoid of the logit, [N]) and segmentation maps (sigmoid, [N,h,w] or None).

    ``images`` are N×H×W×C uint8 as in ``SplitArrays``; ``priors`` (N×H×W) are required exactly
    when the model takes an extra input. The model is moved to ``device`` and set to eval mode.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be N×H×W×C uint8, got {images.dtype} {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    takes_prior = getattr(model, "extra_input_channels", 0)
    if bool(takes_prior) != (priors is not None):
        raise ValueError(f"priors must be given exactly when the model takes an extra input "
                         f"(extra_input_channels={takes_prior}); priors given: "
                         f"{priors is not None}")
    if priors is not None and priors.shape != images.shape[:3]:
        raise ValueError(f"priors must be N×H×W = {images.shape[:3]}, got {priors.shape}")
    device = resolve_device(device)
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    pin = device.type == "cuda"
    scores, maps = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", disable=not progress):
        chunk = torch.from_numpy(images[start:start + batch_size])
        chunk = (chunk.pin_memory() if pin else chunk).to(device, non_blocking=True)
        x = chunk.permute(0, 3, 1, 2).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        extra = None
        if priors is not None:
            extra = torch.from_numpy(np.asarray(priors[start:start + batch_size], np.float32))
            extra = extra[:, None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, extra) if extra is not None else model(x)
        logits, seg = out if isinstance(out, tuple) else (out, None)
        scores.append(torch.sigmoid(logits.float()).cpu())
        if seg is not None:
            maps.append(torch.sigmoid(seg.float())[:, 0].cpu())
    scores_np = torch.cat(scores).numpy() if scores else np.empty(0, np.float32)
    return scores_np, (torch.cat(maps).numpy() if maps else None)
