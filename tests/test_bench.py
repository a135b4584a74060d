"""The benchmark's arithmetic (FLOPs, conv rate, speed-ups) and a tiny run of every part."""

import pandas as pd
import pytest
import torch
from torch import nn

from kgl_utils import bench
from kgl_utils.bench import (
    BF16,
    FP32,
    PRIOR_METHODS,
    Budget,
    _infer_step,
    conv_rate,
    run,
    speedups,
    step_flops,
)

CPU = torch.device("cpu")


def test_flops_of_a_convolution_are_two_per_multiply_add():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.rand(1, 2, 8, 8)
    # 3 outputs × 64 pixels, each 2 channels × 9 taps multiply-adds: 2·2·3·9·64 FLOPs.
    assert step_flops(_infer_step(conv, x, CPU, FP32)) == 2 * 2 * 3 * 9 * 64


def test_conv_rate_is_flops_over_time():
    rate = conv_rate((2, 4), 5, (16, 16), batch=2, iters=2, warmup=1, device=CPU, setting=FP32)
    assert rate > 0


def test_speedups_pick_the_fastest_non_fp32_setting():
    frame = pd.DataFrame({
        "part": "segdecnet", "network": "segdecnet x1", "mode": "train", "input": "8x8x1",
        "setting": ["fp32", "bf16+channels_last", "bf16+channels_last+compile"],
        "images_per_s": [2.0, 5.0, 4.0]})
    row = speedups(frame).iloc[0]
    assert (row["fp32"], row["best"], row["best_setting"]) == (2.0, 5.0, BF16.name)
    assert row["ratio"] == pytest.approx(2.5)


@pytest.mark.slow
def test_tiny_run_measures_every_part_in_both_settings(monkeypatch):
    monkeypatch.setattr(bench, "PRIOR_SIZE", (1, 64, 64))
    budget = Budget(train_batch=1, infer_batch=1, large_batch=1, iters=1, warmup=0,
                    prior_batch=2, prior_images=2)
    frame = run("cpu", budget, width=0.03, prior_width=0.05, progress=False)
    seg = frame[frame["part"] == "segdecnet"]
    assert len(seg) == 2 * 2 * 2  # sizes × modes × settings
    assert (seg["gflop_per_image"] > 0).all() and (seg["share_of_bf16_conv_rate"] > 0).all()
    train = seg[seg["mode"] == "train"].set_index(["input", "setting"])["gflop_per_image"]
    inference = seg[seg["mode"] == "inference"].set_index(["input", "setting"])["gflop_per_image"]
    assert (train > 2 * inference).all()  # a backward pass costs about two forward passes
    priors = frame[frame["part"] == "priors"]
    assert set(priors["mode"]) == {"primary train", *PRIOR_METHODS}
    assert set(priors["network"]) == {"vgg16_bn x0.05", "efficientnet_lite0"}
    assert set(priors["setting"]) == {FP32.name, BF16.name}
    assert (priors["train_steps_per_image"] > 0).all()
    assert len(speedups(frame)) == 4 + 2 * (1 + len(PRIOR_METHODS))
