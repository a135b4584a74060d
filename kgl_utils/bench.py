"""Throughput benchmark: ``python -m kgl_utils.bench [--device auto]``.

Measures SegDecNet training and inference images/s at KolektorSDD2 (232×640×3) and KolektorSDD
(512×1408×1) size and VGG16 training images/s, on random data, with warm-up iterations excluded.
On CUDA inference runs batched under bf16 autocast with channels_last memory (the deployment
setting); on CPU everything is float32 with small batches so the run takes a few minutes. Prints
the table and writes ``results/bench/<host>.csv``.
"""

from __future__ import annotations

import argparse
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kgl_utils.device import resolve_device
from kgl_utils.models.classifiers import vgg16
from kgl_utils.models.segdec import SegDecNet
from kgl_utils.results import write_csv

SIZES = {"ksdd2": (3, 232, 640), "ksdd": (1, 512, 1408)}


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


def _inputs(shape: tuple[int, int, int], batch: int, device: torch.device,
            channels_last: bool) -> torch.Tensor:
    x = torch.rand(batch, *shape, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def bench_train(model: torch.nn.Module, shape: tuple[int, int, int], batch: int, iters: int,
                warmup: int, device: torch.device, bf16: bool, channels_last: bool) -> float:
    """One SGD step per call: forward, BCE on every output, backward, update."""
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = _inputs(shape, batch, device, channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            outputs = out if isinstance(out, tuple) else (out,)
            loss = sum(F.binary_cross_entropy_with_logits(o.float(), torch.zeros_like(o.float()))
                       for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _throughput(step, batch, iters, warmup, device)


@torch.no_grad()
def bench_infer(model: torch.nn.Module, shape: tuple[int, int, int], batch: int, iters: int,
                warmup: int, device: torch.device, bf16: bool, channels_last: bool) -> float:
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = _inputs(shape, batch, device, channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return _throughput(step, batch, iters, warmup, device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run(device: str = "auto", train_batch: int | None = None, infer_batch: int | None = None,
        iters: int | None = None, warmup: int | None = None, width: float = 1.0,
        progress: bool = True) -> pd.DataFrame:
    """All benchmarks on ``device``; ``None`` picks CPU- or CUDA-sized defaults."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    train_batch = train_batch or (8 if cuda else 1)
    infer_batch = infer_batch or (64 if cuda else 1)
    iters = iters or (20 if cuda else 2)
    warmup = warmup if warmup is not None else (5 if cuda else 1)
    if min(train_batch, infer_batch, iters) < 1 or warmup < 0 or not width > 0:
        raise ValueError("batch sizes and iters must be >= 1, warmup >= 0 and width > 0")
    if cuda:
        torch.backends.cudnn.benchmark = True
    bf16 = channels_last = cuda
    cases = [(model, mode, shape, train_batch if mode == "train" else infer_batch)
             for shape in SIZES.values() for model, mode in (("segdecnet", "train"),
                                                             ("segdecnet", "inference"))]
    cases.append(("vgg16", "train", SIZES["ksdd2"], train_batch))
    rows = []
    for model_name, mode, shape, batch in tqdm(cases, desc="bench", disable=not progress):
        torch.manual_seed(0)
        model = (SegDecNet(shape[0], width=width) if model_name == "segdecnet"
                 else vgg16(shape[0], width=width))
        fn = bench_train if mode == "train" else bench_infer
        rate = fn(model, shape, batch, iters, warmup, dev, bf16, channels_last)
        rows.append({
            "model": model_name, "mode": mode, "input": "x".join(map(str, shape[1:] + shape[:1])),
            "images_per_s": round(rate, 3), "batch_size": batch,
            "precision": "bf16-autocast" if bf16 else "fp32", "channels_last": channels_last,
            "width": width, "iters": iters, "warmup": warmup,
            "device": device_name(dev), "torch": torch.__version__,
        })
        if cuda:
            torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kgl_utils.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--train-batch-size", type=int, help="default 1 on CPU, 8 on CUDA")
    parser.add_argument("--infer-batch-size", type=int, help="default 1 on CPU, 64 on CUDA")
    parser.add_argument("--iters", type=int, help="timed iterations (default 2 CPU, 20 CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed iterations (default 1 CPU, 5 CUDA)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier of both networks (default 1: the published ones)")
    parser.add_argument("--out", default="results/bench", help="folder of <host>.csv")
    args = parser.parse_args(argv)
    frame = run(args.device, args.train_batch_size, args.infer_batch_size, args.iters,
                args.warmup, args.width)
    print(frame.to_string(index=False))
    print(f"written to {write_csv(Path(args.out) / f'{socket.gethostname()}.csv', frame)}")


if __name__ == "__main__":
    main()
