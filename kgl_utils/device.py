"""The compute device and arithmetic a run uses: ``auto`` is CUDA where present, else the CPU;
bf16 autocast where the hardware has bf16 matrix units, else float32."""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

import torch

from kgl_utils.names import Precision


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@cache
def cpu_has_bf16_units() -> bool:
    """Whether oneDNN, which runs PyTorch's CPU convolutions, has bf16 kernels on this CPU
    (AVX512 and newer; AMX and AVX512-BF16 run them natively, 2.4–2.8× faster than float32 for
    SegDecNet here). Asked of oneDNN rather than read from ``/proc/cpuinfo``, whose flags virtual
    machines often hide."""
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(supported is not None and supported())


def resolve_precision(precision: Precision, device: torch.device,
                      deterministic: bool = False) -> Literal["fp32", "bf16"]:
    """``auto``: bf16 autocast (with channels_last memory) on CUDA with bf16 support or on a CPU
    with bf16 matrix units, else float32. ``deterministic`` runs are float32 always."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if deterministic:
        return "fp32"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16_units() else "fp32"


def make_deterministic() -> None:
    """Bit-exact reruns, on a GPU too: deterministic algorithms only, no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
