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
    """Whether the CPU computes bf16 natively (AMX tiles or AVX512-BF16), read from CPUID as
    ``torch.cpu`` does rather than from ``/proc/cpuinfo``, whose flags virtual machines often
    hide. oneDNN also runs bf16 on plain AVX512, by converting: measured on such a 2-core host,
    SegDecNet then trains about 2.7× slower than in float32 (``make bench``), so that does not
    count."""
    return any(getattr(torch.cpu, name, lambda: False)()
               for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


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
