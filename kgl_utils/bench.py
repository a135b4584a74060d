"""Throughput benchmark: ``python -m kgl_utils.bench [--device auto] [--compile]``.

Three parts, each measured in float32 and in the fast setting (bf16 autocast with channels_last
memory; with ``--compile`` also under ``torch.compile``) in one run, on random data, warm-up
iterations excluded:

* SegDecNet training and inference at the papers' sizes, 232×640×3 (KolektorSDD2) and
  512×1408×1 (KolektorSDD), full width;
* the bare 15×15 convolution that dominates SegDecNet's arithmetic, as the rate the hardware
  reaches on it: each SegDecNet row reports the share of that rate it reaches (its FLOPs per
  image, counted by ``torch.utils.flop_counter``, times its images/s);
* prior extraction, images/s of every saliency method on the primary networks (VGG16-BN at
  the CPU profiles' width, EfficientNet-Lite0) next to one training step of that network, so a
  method's cost reads in training steps.

Prints the table and the fp32 → best ratios and writes ``results/bench/<host>.csv``.
"""

from __future__ import annotations

import argparse
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from kgl_utils.device import resolve_device
from kgl_utils.models.classifiers import efficientnet_lite0, vgg16
from kgl_utils.models.segdec import SegDecNet
from kgl_utils.results import write_csv
from kgl_utils.saliency.priors import extract_priors

SIZES = {"ksdd2": (3, 232, 640), "ksdd": (1, 512, 1408)}
"""SegDecNet inputs (C, H, W) at the papers' sizes."""

PRIOR_SIZE = (1, 256, 704)
"""Prior extraction: Magnetic Tile / KolektorSDD-like grey images at the CPU profiles' scale."""

PRIOR_METHODS = ("gradcam", "layercam", "fullgrad", "fullgrad_reference")


@dataclass(frozen=True)
class Setting:
    """How a network runs: float32 or bf16 autocast, memory layout, compiled or eager."""

    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


FP32 = Setting("fp32")
BF16 = Setting("bf16+channels_last", bf16=True, channels_last=True)
COMPILED = replace(BF16, name="bf16+channels_last+compile", compile=True)


@dataclass(frozen=True)
class Budget:
    """Batch sizes and iteration counts: small on a CPU so the run takes minutes."""

    train_batch: int
    infer_batch: int
    large_batch: int  # both modes at 512×1408, where one CPU image takes seconds
    iters: int
    warmup: int
    prior_batch: int
    prior_images: int

    @classmethod
    def for_device(cls, device: torch.device) -> Budget:
        if device.type == "cuda":
            return cls(train_batch=8, infer_batch=128, large_batch=8, iters=20, warmup=5,
                       prior_batch=32, prior_images=256)
        return cls(train_batch=8, infer_batch=8, large_batch=2, iters=2, warmup=1,
                   prior_batch=8, prior_images=16)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(step: Callable[[], None], batch: int, iters: int, warmup: int,
                device: torch.device) -> float:
    """Images per second over ``iters`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    began = time.perf_counter()
    for _ in range(iters):
        step()
    _synchronize(device)
    return batch * iters / (time.perf_counter() - began)


def _inputs(shape: tuple[int, ...], batch: int, device: torch.device,
            setting: Setting) -> torch.Tensor:
    x = torch.rand(batch, *shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if setting.channels_last else x


def _prepared(model: nn.Module, device: torch.device, setting: Setting) -> nn.Module:
    model.to(device)
    if setting.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _train_step(model: nn.Module, x: torch.Tensor, device: torch.device,
                setting: Setting) -> Callable[[], None]:
    """One SGD step per call: forward, BCE on every output, backward, update."""
    model.train()
    forward = torch.compile(model) if setting.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=setting.bf16):
            out = forward(x)
            outputs = out if isinstance(out, tuple) else (out,)
            loss = sum(F.binary_cross_entropy_with_logits(o.float(), torch.zeros_like(o.float()))
                       for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _infer_step(model: nn.Module, x: torch.Tensor, device: torch.device,
                setting: Setting) -> Callable[[], None]:
    model.eval()
    forward = torch.compile(model) if setting.compile else model

    @torch.no_grad()
    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=setting.bf16):
            forward(x)

    return step


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step``, counted on the ops it runs (an eager step)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def conv_rate(channels: tuple[int, int], kernel: int, size: tuple[int, int], batch: int,
              iters: int, warmup: int, device: torch.device, setting: Setting) -> float:
    """FLOP/s of one bare convolution's forward pass (2 FLOPs per multiply-add)."""
    conv = _prepared(nn.Conv2d(*channels, kernel, padding=kernel // 2, bias=False), device,
                     setting)
    x = _inputs((channels[0], *size), batch, device, setting)
    images_per_s = _throughput(_infer_step(conv, x, device, setting), batch, iters, warmup,
                               device)
    return images_per_s * 2 * channels[0] * channels[1] * kernel ** 2 * size[0] * size[1]


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape[1:] + shape[:1]))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def bench_segdecnet(device: torch.device, budget: Budget, settings: list[Setting],
                    width: float = 1.0, progress: bool = True) -> list[dict]:
    """SegDecNet train and inference rows at both paper sizes, with the share of the bare 15×15
    convolution's bf16 rate (same input) that the whole network reaches."""
    rows = []
    for name, shape in tqdm(SIZES.items(), desc="SegDecNet", disable=not progress):
        features = (shape[1] // 8, shape[2] // 8)
        conv = {s.name: conv_rate((round(64 * width), round(1024 * width)), 15, features,
                                  budget.large_batch if name == "ksdd" else budget.infer_batch,
                                  budget.iters, budget.warmup, device, replace(s, compile=False))
                for s in (FP32, BF16)}
        for mode in ("train", "inference"):
            batch = budget.large_batch if name == "ksdd" else (
                budget.train_batch if mode == "train" else budget.infer_batch)
            make = _train_step if mode == "train" else _infer_step
            for setting in settings:
                torch.manual_seed(0)
                model = _prepared(SegDecNet(shape[0], width=width), device, setting)
                x = _inputs(shape, batch, device, setting)
                eager = replace(setting, compile=False)
                flops = step_flops(make(model, x[:1], device, eager))
                rate = _throughput(make(model, x, device, setting), batch, budget.iters,
                                   budget.warmup, device)
                rows.append({"part": "segdecnet", "network": f"segdecnet x{width:g}",
                             "mode": mode, "input": _shape_name(shape),
                             "setting": setting.name, "images_per_s": rate, "batch_size": batch,
                             "gflop_per_image": flops / 1e9,
                             "conv_gflop_per_s": conv[BF16.name if setting.bf16 else FP32.name]
                             / 1e9,
                             "share_of_bf16_conv_rate": flops * rate / conv[BF16.name]})
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def primaries(width: float) -> dict[str, Callable[[], nn.Module]]:
    """The primary networks the priors part measures, by the name its rows carry."""
    return {f"vgg16_bn x{width:g}": lambda: vgg16(PRIOR_SIZE[0], width=width, batch_norm=True),
            "efficientnet_lite0": lambda: efficientnet_lite0(PRIOR_SIZE[0])}


def _prior_rate(model: nn.Module, images: np.ndarray, method: str, batch: int,
                device: torch.device, bf16: bool) -> float:
    """Images/s of ``extract_priors`` over ``images``, after one warm-up batch."""
    def explain(n: int) -> None:
        extract_priors(model, images[:n], method, batch_size=batch, device=device,
                       progress=False, bf16=bf16)
        _synchronize(device)

    explain(batch)
    began = time.perf_counter()
    explain(len(images))
    return len(images) / (time.perf_counter() - began)


def bench_priors(device: torch.device, budget: Budget, settings: list[Setting],
                 width: float = 0.25, progress: bool = True) -> list[dict]:
    """Images/s of each saliency method on each primary network, beside its training step."""
    rows = []
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (budget.prior_images, *PRIOR_SIZE[1:], PRIOR_SIZE[0]),
                          dtype=np.uint8)
    cases = [(name, build, setting) for name, build in primaries(width).items()
             for setting in settings]
    for network, build, setting in tqdm(cases, desc="priors", disable=not progress):
        torch.manual_seed(0)
        model = _prepared(build(), device, setting)
        x = _inputs(PRIOR_SIZE, budget.prior_batch, device, setting)
        step = _train_step(model, x, device, setting)
        train_rate = _throughput(step, budget.prior_batch, budget.iters, budget.warmup, device)
        common = {"part": "priors", "network": network, "input": _shape_name(PRIOR_SIZE),
                  "setting": setting.name, "batch_size": budget.prior_batch}
        rows.append({**common, "mode": "primary train", "images_per_s": train_rate,
                     "train_steps_per_image": 1.0})
        for method in PRIOR_METHODS:
            rate = _prior_rate(model, images, method, budget.prior_batch, device, setting.bf16)
            rows.append({**common, "mode": method, "images_per_s": rate,
                         "train_steps_per_image": train_rate / rate})
    return rows


def speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Per case: fp32 and the best other setting, their images/s and the ratio best / fp32."""
    out = []
    for (part, network, mode, shape), group in frame.groupby(
            ["part", "network", "mode", "input"], sort=False):
        rates = group.set_index("setting")["images_per_s"]
        if FP32.name not in rates or len(rates) < 2:
            continue
        others = rates.drop(FP32.name)
        best = others.idxmax()
        out.append({"part": part, "network": network, "mode": mode, "input": shape,
                    "fp32": rates[FP32.name],
                    "best": rates[best], "best_setting": best,
                    "ratio": rates[best] / rates[FP32.name]})
    return pd.DataFrame(out)


def run(device: str = "auto", budget: Budget | None = None, width: float = 1.0,
        prior_width: float = 0.25, compile: bool = False,
        parts: tuple[str, ...] = ("segdecnet", "priors"), progress: bool = True) -> pd.DataFrame:
    """Every part in fp32 and in the fast settings on ``device``; ``budget`` None picks CPU- or
    CUDA-sized batches."""
    dev = resolve_device(device)
    budget = budget or Budget.for_device(dev)
    if min(budget.train_batch, budget.infer_batch, budget.large_batch, budget.iters,
           budget.prior_batch, budget.prior_images) < 1 or budget.warmup < 0:
        raise ValueError(f"batch sizes, iters and prior images must be >= 1 and warmup >= 0, "
                         f"got {budget}")
    if not (width > 0 and prior_width > 0):
        raise ValueError(f"widths must be > 0, got {width} and {prior_width}")
    unknown = set(parts) - {"segdecnet", "priors"}
    if unknown:
        raise ValueError(f"unknown bench parts {sorted(unknown)}; allowed: segdecnet, priors")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = [FP32, BF16, *([COMPILED] if compile else [])]
    rows = []
    if "segdecnet" in parts:
        rows += bench_segdecnet(dev, budget, settings, width, progress)
    if "priors" in parts:
        rows += bench_priors(dev, budget, [FP32, BF16], prior_width, progress)
    frame = pd.DataFrame(rows)
    frame["iters"], frame["warmup"] = budget.iters, budget.warmup
    frame["device"], frame["torch"] = device_name(dev), torch.__version__
    return frame.round(4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kgl_utils.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--compile", action="store_true",
                        help="also measure SegDecNet under torch.compile (minutes of compiling)")
    parser.add_argument("--parts", nargs="+", default=["segdecnet", "priors"],
                        choices=["segdecnet", "priors"])
    parser.add_argument("--width", type=float, default=1.0,
                        help="SegDecNet channel multiplier (default 1: the published network)")
    parser.add_argument("--prior-width", type=float, default=0.25,
                        help="primary VGG16-BN channel multiplier (default 0.25: CPU profiles)")
    parser.add_argument("--out", default="results/bench", help="folder of <host>.csv")
    args = parser.parse_args(argv)
    frame = run(args.device, width=args.width, prior_width=args.prior_width,
                compile=args.compile, parts=tuple(args.parts))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frame.drop(columns=["device", "torch"]).to_string(index=False))
        print(speedups(frame).round(3).to_string(index=False))
    print(f"device: {frame['device'].iloc[0]}, torch {torch.__version__}")
    print(f"written to {write_csv(Path(args.out) / f'{socket.gethostname()}.csv', frame)}")


if __name__ == "__main__":
    main()
