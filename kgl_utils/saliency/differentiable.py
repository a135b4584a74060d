"""The final network's own Grad-CAM inside the training graph: the "consistency" reading of KGL.

The paper's abstract speaks of consistency between the saliency of the primary and the final
network. Here the final SegDecNet's Grad-CAM of its defect logit over the segmentation features is
computed with ``create_graph=True``, so a distance between it and the stored prior trains both the
segmentation volume (through the activations) and the classifier (through the gradient weights).
``ConsistencyLoss`` packages this as the training loop's ``extra_loss`` hook.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kgl_utils.losses import loss_weights
from kgl_utils.names import CONSISTENCY_DISTANCES
from kgl_utils.training import Batch, StepOutputs

EPS = 1e-6
MIN_RANGE = 1e-3
"""Smallest CAM range the min-max normalisation divides by: a nearly flat map would otherwise
scale its gradient by up to 1/EPS."""


def segdec_gradcam(
    model: nn.Module,
    features: torch.Tensor,
    seg_logits: torch.Tensor,
    second_order: bool = True,
) -> torch.Tensor:
    """Differentiable Grad-CAM of SegDecNet's logit over its features: N×h×w in [0, 1], at the
    features' resolution (1/8 of the input).

    ``features`` and ``seg_logits`` come from ``model.segment`` in the current graph. The logit is
    recomputed with ``decide(stop_gradient=False)`` so that its gradient reaches the features
    whatever the gradient stop of the supervised loss. With ``second_order`` the channel weights
    (the pooled gradients) stay in the graph, so a loss on the map also trains the classifier;
    without, they are constants and only the activations are pulled. Prior channels appended to
    the features (``extra_input_channels``) are left out: otherwise the map could match the
    prior by copying it. The map is min-max normalised per image like the stored priors; a map
    with no positive evidence stays all zero, and a nearly flat one is divided by at least
    ``MIN_RANGE`` so its gradient stays bounded.
    """
    logits = model.decide(features, seg_logits, stop_gradient=False)
    (grads,) = torch.autograd.grad(logits.sum(), features, create_graph=second_order)
    own = features.shape[1] - getattr(model, "extra_input_channels", 0)
    weights = grads[:, :own].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features[:, :own]).sum(dim=1)).float()
    return min_max(cam, MIN_RANGE)


def min_max(maps: torch.Tensor, min_range: float = EPS) -> torch.Tensor:
    """Each N×H×W map scaled to [0, 1], dividing by at least ``min_range``."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp_min(min_range)


def prior_at(prior: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×H×W priors averaged over the cells of an N×h×w map and min-max scaled again: the
    prior as the final network's 1/8 saliency can express it, at that saliency's resolution."""
    pooled = F.adaptive_avg_pool2d(prior.float()[:, None], tuple(size))[:, 0]
    return min_max(pooled)


def consistency_loss(
    saliency: torch.Tensor,
    prior: torch.Tensor,
    distance: str = "bce",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Distance between N×H×W saliency maps and priors, both in [0, 1], per image then reduced.

    ``bce``: the prior as a soft pixel target; ``l1``/``mse``: pixel differences; ``kl``:
    KL(prior ‖ saliency) of both read as distributions over pixels (only where the mass lies
    matters, not its scale); ``cosine``: 1 − cosine similarity of the flattened maps.
    Computed in float32, so it is safe under bf16 autocast.
    """
    if distance not in CONSISTENCY_DISTANCES:
        raise ValueError(f"consistency distance {distance!r} is unknown; allowed: "
                         f"{', '.join(CONSISTENCY_DISTANCES)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if saliency.shape != prior.shape or saliency.ndim != 3:
        raise ValueError(f"saliency and prior must both be N×H×W of one size, got "
                         f"{tuple(saliency.shape)} and {tuple(prior.shape)}")
    s = saliency.float().flatten(1)
    p = prior.float().flatten(1).to(s.device)
    if distance == "bce":
        s = s.clamp(EPS, 1 - EPS)
        per_image = -(p * s.log() + (1 - p) * (1 - s).log()).mean(1)
    elif distance == "l1":
        per_image = (s - p).abs().mean(1)
    elif distance == "mse":
        per_image = (s - p).square().mean(1)
    elif distance == "kl":
        p = (p + EPS) / (p + EPS).sum(1, keepdim=True)
        q = (s + EPS) / (s + EPS).sum(1, keepdim=True)
        per_image = (p * (p.log() - q.log())).sum(1)
    else:
        per_image = 1 - F.cosine_similarity(s, p, dim=1, eps=EPS)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


class ConsistencyLoss:
    """``extra_loss`` hook: ``weight`` × distance of the final network's Grad-CAM to the prior.

    Reads the priors the training loop puts in each batch (flipped with their images) and
    compares at the Grad-CAM's resolution (``prior_at``): upsampling a 1/8 map to meet a
    full-resolution prior would ask it for detail it cannot have. Only positive images count by
    default: a defect-free image's saliency points at nothing in particular, so there is nothing
    to agree on. ``reduction`` "sum" adds per-image losses like the loop's default
    ``loss_reduction``; use "mean" with a loop that averages. ``second_order`` False holds the
    Grad-CAM weights fixed (see ``segdec_gradcam``).

    With ``epochs`` the term is weighted like the segmentation loss it stands in for, by the
    dynamically balanced ``λ = 1 - epoch/epochs``: it shapes the features first and fades as
    the classifier takes over. The second-order gradient through the classifier can still grow
    step by step until the loss overflows; the study clips the gradient norm of these runs
    (``TrainConfig.max_grad_norm``), and of the baseline they are compared with.
    """

    def __init__(
        self,
        distance: str = "bce",
        weight: float = 1.0,
        positives_only: bool = True,
        reduction: Literal["mean", "sum"] = "sum",
        epochs: int | None = None,
        second_order: bool = True,
    ):
        if distance not in CONSISTENCY_DISTANCES:
            raise ValueError(f"consistency distance {distance!r} is unknown; allowed: "
                             f"{', '.join(CONSISTENCY_DISTANCES)}")
        if weight < 0:
            raise ValueError(f"consistency weight must be >= 0, got {weight}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be None or >= 1, got {epochs}")
        self.distance, self.weight = distance, weight
        self.positives_only, self.reduction, self.epochs = positives_only, reduction, epochs
        self.second_order = second_order

    def __repr__(self) -> str:
        return (f"ConsistencyLoss(distance={self.distance!r}, weight={self.weight}, "
                f"positives_only={self.positives_only}, reduction={self.reduction!r}, "
                f"epochs={self.epochs}, second_order={self.second_order})")

    def weight_at(self, epoch: int) -> float:
        """The term's weight in 0-based ``epoch``: constant, or ``weight·λ`` with ``epochs``."""
        if self.epochs is None:
            return self.weight
        return self.weight * loss_weights(epoch, self.epochs, 1.0, dynamic_balance=True)[0]

    def __call__(
        self, model: nn.Module, batch: Batch, outputs: StepOutputs, epoch: int
    ) -> torch.Tensor:
        if batch.priors is None or outputs.features is None:
            raise ValueError("ConsistencyLoss needs priors in the batch (pass priors= to train) "
                             "and a SegDecNet-like model with segment/decide")
        keep = batch.labels > 0.5 if self.positives_only else torch.ones_like(batch.labels,
                                                                              dtype=torch.bool)
        if not keep.any():
            return outputs.cls_logits.new_zeros(())
        saliency = segdec_gradcam(model, outputs.features[keep], outputs.seg_logits[keep],
                                  self.second_order)
        prior = prior_at(batch.priors[keep, 0], saliency.shape[-2:])
        distance = consistency_loss(saliency, prior, self.distance, self.reduction)
        return self.weight_at(epoch) * distance
