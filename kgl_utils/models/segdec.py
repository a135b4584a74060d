"""SegDecNet of the mixed-supervision paper (Božič, Tabernik, Skočaj 2021), as its code builds it.

A segmentation sub-network maps the image to 1024 features and one logit map at 1/8 resolution; a
small classification sub-network reads features and logits and gives one defect logit per image.
Details follow the authors' published code rather than the paper's table where the two differ
(see ``second_conv``). The module holds no training logic; ``kgl_utils.training`` trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NORM_EPS = 1e-3
MIN_INPUT_SIZE = 128
"""Smallest side: the classifier pools 1/8 three more times and standardises what is left, which
needs at least 2×2 pixels (the authors' code turns a single pixel into NaN)."""


class FeatureNorm(nn.Module):
    """Per-sample, per-channel standardisation over H×W with a learnable scale and bias.

    No running statistics, so a sample is normalised the same in training and at test time and a
    batch of any size gives the same result per sample as batch 1. The formula is the authors':
    ``scale · (x - mean) / sqrt(std + eps) + bias`` with the unbiased std. Statistics are taken in
    float32 so bf16 autocast does not degrade them. Applied as one ``addcmul`` with a per-channel
    factor and shift: the same formula in two passes over the map instead of four, which made the
    layer 1.2–1.6× faster forward and backward on a CPU.
    """

    def __init__(self, channels: int, eps: float = FEATURE_NORM_EPS):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        std, mean = torch.std_mean(x32, dim=(-2, -1), keepdim=True)
        factor = self.scale * (std + self.eps).rsqrt()
        return torch.addcmul(self.bias - mean * factor, x32, factor).to(x.dtype)


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv without bias (the normalisation has one) → FeatureNorm → ReLU, 'same' padding."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.xavier_normal_(conv.weight)
    return nn.Sequential(conv, FeatureNorm(out_channels), nn.ReLU())


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class SegDecNet(nn.Module):
    """Segmentation and decision network; ``forward`` gives (logit [N], seg logits [N,1,H/8,W/8]).

    ``width`` scales the segmentation sub-network's channels (32, 64, 1024) for CPU-sized runs; the
    classification sub-network keeps its 8/16/32 channels, so it always pools 66 values.
    ``gradient_adjustment`` stops the classification loss from reaching the segmentation
    sub-network at both junctions (features and pooled segmentation logits), as the authors do.
    ``extra_input_channels`` > 0 takes a map per sample at input resolution (e.g. a knowledge
    prior), average-pools it to 1/8 and concatenates it to the features, so both the segmentation
    head and the classifier see it. ``second_conv`` adds the 32→32 conv the paper's table lists
    but the authors' code leaves out.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        width: float = 1.0,
        extra_input_channels: int = 0,
        gradient_adjustment: bool = True,
        second_conv: bool = False,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if extra_input_channels < 0:
            raise ValueError(f"extra_input_channels must be >= 0, got {extra_input_channels}")
        self.in_channels = in_channels
        self.width = width
        self.extra_input_channels = extra_input_channels
        self.gradient_adjustment = gradient_adjustment
        c32, c64, c1024 = (_scaled(c, width) for c in (32, 64, 1024))
        first = [conv_block(in_channels, c32, 5)]
        if second_conv:
            first.append(conv_block(c32, c32, 5))
        self.volume = nn.Sequential(
            *first, nn.MaxPool2d(2),
            conv_block(c32, c64, 5), conv_block(c64, c64, 5), conv_block(c64, c64, 5),
            nn.MaxPool2d(2),
            *(conv_block(c64, c64, 5) for _ in range(4)),
            nn.MaxPool2d(2),
            conv_block(c64, c1024, 15),
        )
        self.feature_channels = c1024 + extra_input_channels
        # The authors' head asks for no bias in its normalisation, but their code still registers
        # it as a trainable parameter, so it is trained here too.
        seg_conv = nn.Conv2d(self.feature_channels, 1, 1, bias=False)
        nn.init.xavier_normal_(seg_conv.weight)
        self.seg_head = nn.Sequential(seg_conv, FeatureNorm(1))
        self.extractor = nn.Sequential(
            nn.MaxPool2d(2), conv_block(self.feature_channels + 1, 8, 5),
            nn.MaxPool2d(2), conv_block(8, 16, 5),
            nn.MaxPool2d(2), conv_block(16, 32, 5),
        )
        self.fc = nn.Linear(2 * 32 + 2, 1)

    def _check_inputs(self, x: torch.Tensor, extra: torch.Tensor | None) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SegDecNet expects input N×{self.in_channels}×H×W, "
                             f"got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % 8 or width % 8 or min(height, width) < MIN_INPUT_SIZE:
            raise ValueError(f"SegDecNet input size must be multiples of 8 and at least "
                             f"{MIN_INPUT_SIZE} px per side, got {height}x{width}")
        if self.extra_input_channels and extra is None:
            raise ValueError(f"this SegDecNet takes {self.extra_input_channels} extra input "
                             f"channel(s) (extra_input_channels); pass extra=N×C×H×W")
        if not self.extra_input_channels and extra is not None:
            raise ValueError("extra input given, but this SegDecNet was built with "
                             "extra_input_channels=0")
        if extra is not None and (extra.ndim != 4 or extra.shape[0] != x.shape[0]
                                  or extra.shape[1] != self.extra_input_channels):
            raise ValueError(f"extra must be N×{self.extra_input_channels}×H×W for N="
                             f"{x.shape[0]}, got shape {tuple(extra.shape)}")

    def segment(
        self, x: torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation sub-network: (features [N,C,H/8,W/8] incl. extra channels, seg logits)."""
        self._check_inputs(x, extra)
        features = self.volume(x)
        if extra is not None:
            pooled = F.adaptive_avg_pool2d(extra.to(features.dtype), features.shape[-2:])
            features = torch.cat([features, pooled], dim=1)
        return features, self.seg_head(features)

    def decide(
        self,
        features: torch.Tensor,
        seg_logits: torch.Tensor,
        stop_gradient: bool | None = None,
    ) -> torch.Tensor:
        """Classification sub-network: one logit per sample, shape [N].

        ``stop_gradient`` None follows ``gradient_adjustment``; False lets gradients of the logit
        reach ``features`` (needed to take a saliency map of the logit inside the training graph).
        """
        stop = self.gradient_adjustment if stop_gradient is None else stop_gradient
        if stop:
            features, seg_logits = features.detach(), seg_logits.detach()
        pooled = self.extractor(torch.cat([features, seg_logits], dim=1))
        fc_in = torch.cat([
            pooled.amax(dim=(-2, -1)), pooled.mean(dim=(-2, -1)),
            seg_logits.amax(dim=(-2, -1)), seg_logits.mean(dim=(-2, -1)),
        ], dim=1)
        return self.fc(fc_in).squeeze(1)

    def forward(
        self, x: torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, seg_logits = self.segment(x, extra)
        return self.decide(features, seg_logits), seg_logits
