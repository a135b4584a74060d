"""Teacher–student distillation for unsupervised defect detection: the modules only.

The comparison row of the study (Zhou, Sui, Zhang, Wang 2025) learns from defect-free images
alone. A frozen teacher and a student see the same image; the student is trained to reproduce the
teacher's feature pyramid on normal texture only, so where they disagree the image is abnormal
(STPM, Wang et al. 2021). In reverse distillation (Deng & Li 2022) the student is a decoder that
rebuilds the pyramid from a compact embedding of it. The student carries the two additions of the
compared paper: an SSPCAB block (Ristea et al. 2022) and SimAM attention (Yang et al. 2021).

Training and scoring live in ``kgl_utils.distillation`` (anomalib's split of torch model and
loop); nothing here knows about datasets or optimisers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torch.fx import GraphModule
from torchvision.models import VGG, ResNet
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import SqueezeExcitation

RESNET_NODES = ["layer1", "layer2", "layer3"]
"""STPM's pyramid: ResNet stages 1–3, at strides 4, 8 and 16."""


class SSPCAB(nn.Module):
    """Self-supervised predictive convolutional attentive block (Ristea et al., CVPR 2022).

    The convolution sees only four k×k corners at distance ``dilation`` from each pixel, never the
    pixel itself, so its output is a prediction of the centre from its context; squeeze-and-
    excitation then reweights the channels. Trained with ``reconstruction_loss`` (MSE to its own
    input) it learns to predict normal texture, and mispredicts where a defect sits.
    The four corner kernels of the original are one convolution here with a fixed mask, which is
    the same function with a single bias.
    """

    def __init__(self, channels: int, kernel_size: int = 1, dilation: int = 1,
                 reduction: int = 8):
        super().__init__()
        for name, value in (("channels", channels), ("kernel_size", kernel_size),
                            ("dilation", dilation), ("reduction", reduction)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SSPCAB: {name} must be a positive integer, got {value!r}")
        span = 2 * (kernel_size + dilation) + 1
        mask = torch.zeros(span, span)
        for rows in (slice(0, kernel_size), slice(span - kernel_size, span)):
            for cols in (slice(0, kernel_size), slice(span - kernel_size, span)):
                mask[rows, cols] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        # Initialised as one of the original's four k×k convolutions (fan-in C·k²).
        bound = (channels * kernel_size**2) ** -0.5
        weight = torch.empty(channels, channels, span, span).uniform_(-bound, bound)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
        self.attention = SqueezeExcitation(channels, max(channels // reduction, 1))

    def masked_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The corner convolution alone (before ReLU and attention); shape-preserving."""
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.mask.shape[-1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(F.relu(self.masked_conv(x)))

    @staticmethod
    def reconstruction_loss(block_input: torch.Tensor, block_output: torch.Tensor
                            ) -> torch.Tensor:
        """The block's self-supervised loss: its output should reproduce its input."""
        return F.mse_loss(block_output, block_input)


class SimAM(nn.Module):
    """Parameter-free attention from an energy function (Yang et al., ICML 2021).

    Each activation is weighted by how much it stands out from its channel:
    ``x·sigmoid(d / (4(v + λ)) + 0.5)`` with ``d = (x − μ)²`` and ``v = Σd / (H·W − 1)``.
    """

    def __init__(self, lambda_: float = 1e-4):
        super().__init__()
        if not lambda_ > 0:
            raise ValueError(f"SimAM: lambda_ must be > 0, got {lambda_!r}")
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height * width < 2:
            raise ValueError(f"SimAM needs at least 2 positions per channel, got a {height}x"
                             f"{width} feature map (use larger images or shallower layers)")
        d = (x - x.mean(dim=(-2, -1), keepdim=True)).pow(2)
        v = d.sum(dim=(-2, -1), keepdim=True) / (height * width - 1)
        return x * torch.sigmoid(d / (4 * (v + self.lambda_)) + 0.5)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def _vgg_nodes(vgg: VGG) -> list[str]:
    """The activations just before VGG's 3rd, 4th and 5th max-pool (relu3_3, relu4_3, relu5_3
    in VGG16): the same strides as ``RESNET_NODES``, for any depth, with or without BN."""
    pools = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
    return [f"features.{i - 1}" for i in pools[2:5]]


def _efficientnet_nodes(network: EfficientNet) -> list[str]:
    """The last block at strides 4, 8 and 16 (the stem has stride 2)."""
    stride, last = 2, {}
    for i, block in enumerate(network._blocks):
        stride *= block._depthwise_conv.stride[0]
        last[stride] = i
    return [f"_blocks.{last[s]}" for s in (4, 8, 16)]


def default_return_nodes(network: nn.Module) -> list[str]:
    """The pyramid levels of the first torchvision ResNet or VGG, or EfficientNet, found inside
    ``network``, at strides 4, 8 and 16.

    Works on a wrapped classifier too (e.g. a primary network holding a VGG16 as a submodule).
    """
    for prefix, module in network.named_modules():
        if isinstance(module, ResNet):
            nodes = RESNET_NODES
        elif isinstance(module, VGG):
            nodes = _vgg_nodes(module)
        elif isinstance(module, EfficientNet):
            nodes = _efficientnet_nodes(module)
        else:
            continue
        return [f"{prefix}.{n}" if prefix else n for n in nodes]
    raise ValueError(f"no default return nodes for {type(network).__name__}: it holds no "
                     f"torchvision ResNet or VGG; pass return_nodes (torchvision "
                     f"get_graph_node_names lists the choices)")


def input_channels(network: nn.Module) -> int:
    """Channels the network expects: those of its first convolution."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(f"{type(network).__name__} has no Conv2d, so its input channels are unknown")


def _extractor(network: nn.Module, return_nodes: Sequence[str]) -> GraphModule:
    """A private copy of ``network`` that returns the named nodes, without in-place activations
    (an in-place ReLU after a returned node would overwrite the feature the loss still needs)."""
    if not return_nodes:
        raise ValueError("return_nodes is empty; give at least one layer name")
    network = copy.deepcopy(network)
    for module in network.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    try:
        return create_feature_extractor(network, {n: n for n in return_nodes})
    except ValueError as err:
        raise ValueError(f"return_nodes {list(return_nodes)} do not all exist in "
                         f"{type(network).__name__}: {err}") from err


class FeaturePyramid(nn.Module):
    """The frozen teacher: a copy of any network seen as a list of feature maps.

    It is a copy, so freezing it leaves the caller's network (e.g. the trained primary) alone;
    it stays in eval mode whatever ``train()`` is called with, so batch-norm statistics are kept.
    """

    def __init__(self, network: nn.Module, return_nodes: Sequence[str] | None = None):
        super().__init__()
        self.return_nodes = list(return_nodes or default_return_nodes(network))
        self.in_channels = input_channels(network)
        self.extractor = _extractor(network, self.return_nodes)
        self.extractor.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FeaturePyramid:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.extractor(x)
        return [out[n] for n in self.return_nodes]


class StudentOutput(NamedTuple):
    """The student's pyramid, plus the SSPCAB block's input and output (None when it is off)."""

    features: list[torch.Tensor]
    sspcab_input: torch.Tensor | None
    sspcab_output: torch.Tensor | None


def _reinitialise(network: nn.Module) -> None:
    """Fresh random weights: the STPM student starts from scratch, not from the teacher."""
    for module in network.modules():
        if module is not network and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _splice(graph_module: GraphModule, blocks: dict[str, list[tuple[str, nn.Module]]]) -> None:
    """Insert each return node's blocks after it, in order, on the forward path; the SSPCAB's
    input and output become two more outputs, for its reconstruction loss."""
    for spliced in blocks.values():
        for module_name, module in spliced:
            graph_module.add_submodule(module_name, module)
    done = set()
    for mode in (True, False):  # torchvision traces a train and an eval graph: splice both
        graph = graph_module.train(mode).graph
        if id(graph) in done:
            continue
        done.add(id(graph))
        output = next(n for n in graph.nodes if n.op == "output")
        returned, extra = dict(output.args[0]), {}
        for name, spliced in blocks.items():
            node = returned[name]
            for module_name, _ in spliced:
                with graph.inserting_after(node):
                    new = graph.call_module(module_name, (node,))
                node.replace_all_uses_with(
                    new, delete_user_cb=lambda user, new=new: user is not new)
                if module_name == "sspcab":
                    extra = {"sspcab_input": node, "sspcab_output": new}
                node = new
        output.args = ({**output.args[0], **extra},)
        graph.lint()
        graph_module.recompile()
    graph_module.train()


class Student(nn.Module):
    """STPM student: the teacher's architecture, freshly initialised, with the blocks spliced in.

    SimAM follows every pyramid level and SSPCAB the ``sspcab_node`` level (default the deepest,
    near where its authors put it), SSPCAB first; both lie on the forward path, so later stages
    see the attended features. The splice is done on the torch.fx graph, so any traceable
    architecture works.
    """

    def __init__(self, network: nn.Module, return_nodes: Sequence[str], feature_channels:
                 Sequence[int], *, sspcab: bool = True, simam: bool = True,
                 simam_lambda: float = 1e-4, sspcab_kernel: int = 1, sspcab_dilation: int = 1,
                 sspcab_node: str | None = None):
        super().__init__()
        self.return_nodes = list(return_nodes)
        if len(feature_channels) != len(self.return_nodes):
            raise ValueError(f"feature_channels has {len(feature_channels)} entries for "
                             f"{len(self.return_nodes)} return_nodes")
        sspcab_node = sspcab_node or self.return_nodes[-1]
        if sspcab_node not in self.return_nodes:
            raise ValueError(f"sspcab_node {sspcab_node!r} is not one of the return_nodes "
                             f"{self.return_nodes}")
        graph_module = _extractor(network, self.return_nodes)
        _reinitialise(graph_module)
        blocks: dict[str, list[tuple[str, nn.Module]]] = {}
        for level, (name, channels) in enumerate(zip(self.return_nodes, feature_channels,
                                                     strict=True)):
            if sspcab and name == sspcab_node:
                blocks.setdefault(name, []).append(
                    ("sspcab", SSPCAB(channels, sspcab_kernel, sspcab_dilation)))
            if simam:
                blocks.setdefault(name, []).append((f"simam{level}", SimAM(simam_lambda)))
        _splice(graph_module, blocks)
        self.network = graph_module

    def forward(self, x: torch.Tensor) -> StudentOutput:
        out = self.network(x)
        return StudentOutput([out[n] for n in self.return_nodes], out.get("sspcab_input"),
                             out.get("sspcab_output"))


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU())


class ReverseStudent(nn.Module):
    """Reverse-distillation student: one-class bottleneck plus a decoder (Deng & Li, CVPR 2022).

    The teacher's levels are pooled to the deepest one, fused and squeezed one stride further
    into an embedding (with SSPCAB on it); the decoder expands the embedding back to each level,
    deepest first, with SimAM after every stage. What the compact embedding cannot carry (a
    defect unlike the training texture) the decoder cannot restore. The bottleneck and decoder
    are generic over channel counts, so any teacher pyramid fits.
    """

    def __init__(self, feature_channels: Sequence[int], *, sspcab: bool = True,
                 simam: bool = True, simam_lambda: float = 1e-4, sspcab_kernel: int = 1,
                 sspcab_dilation: int = 1):
        super().__init__()
        channels = list(feature_channels)
        deepest = channels[-1]
        self.project = nn.ModuleList(_conv_block(c, deepest) for c in channels)
        self.fuse = _conv_block(deepest * len(channels), deepest, stride=2)
        self.sspcab = SSPCAB(deepest, sspcab_kernel, sspcab_dilation) if sspcab else None
        inputs = [deepest] + channels[:0:-1]
        self.decoder = nn.ModuleList(
            nn.Sequential(_conv_block(i, c), _conv_block(c, c)) for i, c in
            zip(inputs, channels[::-1], strict=True))
        self.attention = nn.ModuleList(
            SimAM(simam_lambda) if simam else nn.Identity() for _ in channels)

    def forward(self, teacher_features: Sequence[torch.Tensor]) -> StudentOutput:
        size = teacher_features[-1].shape[-2:]
        pooled = [F.adaptive_avg_pool2d(p(f), size)
                  for p, f in zip(self.project, teacher_features, strict=True)]
        embedding = self.fuse(torch.cat(pooled, dim=1))
        reconstruction = self.sspcab(embedding) if self.sspcab is not None else None
        x = embedding if reconstruction is None else reconstruction
        decoded = []
        for stage, attend, target in zip(self.decoder, self.attention, teacher_features[::-1],
                                         strict=True):
            x = F.interpolate(x, size=target.shape[-2:], mode="bilinear", align_corners=False)
            x = attend(stage(x))
            decoded.append(x)
        return StudentOutput(decoded[::-1], None if reconstruction is None else embedding,
                             reconstruction)


class DistillationOutput(NamedTuple):
    """What the loss and the anomaly map need from one forward pass."""

    teacher: list[torch.Tensor]
    student: StudentOutput


class TeacherStudent(nn.Module):
    """The whole detector: a frozen teacher pyramid and a trainable student (STPM or reverse).

    ``network`` itself is left untouched (teacher and student are copies). ``input_size`` is used
    once, to probe the teacher's channel counts with a blank image.
    """

    def __init__(self, network: nn.Module, return_nodes: Sequence[str] | None = None, *,
                 input_size: tuple[int, int] = (64, 64), reverse: bool = False,
                 sspcab: bool = True, simam: bool = True, simam_lambda: float = 1e-4,
                 sspcab_kernel: int = 1, sspcab_dilation: int = 1):
        super().__init__()
        self.teacher = FeaturePyramid(network, return_nodes)
        with torch.no_grad():
            probe = self.teacher(torch.zeros(1, self.teacher.in_channels, *input_size))
        channels = [f.shape[1] for f in probe]
        blocks = dict(sspcab=sspcab, simam=simam, simam_lambda=simam_lambda,
                      sspcab_kernel=sspcab_kernel, sspcab_dilation=sspcab_dilation)
        self.reverse = reverse
        self.student = (ReverseStudent(channels, **blocks) if reverse else
                        Student(network, self.teacher.return_nodes, channels, **blocks))

    def forward(self, x: torch.Tensor) -> DistillationOutput:
        teacher = self.teacher(x)
        return DistillationOutput(teacher, self.student(teacher if self.reverse else x))


def anomaly_map(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor],
                size: tuple[int, int]) -> torch.Tensor:
    """N×H×W map: per level, 1 − cosine of the channel vectors (half the squared distance of the
    channel-normalised features), upsampled to ``size`` and summed over levels."""
    if len(teacher) != len(student):
        raise ValueError(f"teacher has {len(teacher)} levels, student {len(student)}")
    total = None
    for t, s in zip(teacher, student, strict=True):
        distance = 1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)
        distance = F.interpolate(distance, size=size, mode="bilinear", align_corners=False)
        total = distance if total is None else total + distance
    return total[:, 0]
