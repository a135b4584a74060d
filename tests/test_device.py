"""Device and precision: ``auto`` resolves to what this hardware runs fast, and is checked."""

from __future__ import annotations

import pytest
import torch
from conftest import open_study, synthetic_study

from kgl_utils import device as device_module
from kgl_utils.config import ConfigError
from kgl_utils.device import resolve_precision
from kgl_utils.units.cells import Cell, segdec_train_config
from kgl_utils.units.primary import primary_train_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("units, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu(monkeypatch, units, expected):
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: units)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", CPU, deterministic=True) == "fp32"
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, True), (False, True, True), (False, False, False)])
def test_bf16_units_are_amx_or_avx512_bf16_only(monkeypatch, amx, avx512_bf16, expected):
    """Plain AVX512 runs bf16 in oneDNN too, by conversion, slower than float32: not counted."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    device_module.cpu_has_bf16_units.cache_clear()
    try:
        assert device_module.cpu_has_bf16_units() is expected
    finally:
        device_module.cpu_has_bf16_units.cache_clear()


def test_the_profiles_precision_reaches_every_run(tmp_path):
    params = synthetic_study("precision", n_train=8, n_test=4, positive_fraction=0.5, epochs=1,
                             batch_size=4, width=0.0625, precision="bf16")
    ctx = open_study(tmp_path, params)
    assert ctx.bf16
    for config in (segdec_train_config(ctx, Cell.baseline(0, 0)), primary_train_config(ctx, 0)):
        assert config.bf16 and config.channels_last
    fp32 = open_study(tmp_path / "fp32", params | {"profiles": {"t": params["profiles"]["t"]
                                                               | {"precision": "fp32"}}})
    assert not fp32.bf16 and not segdec_train_config(fp32, Cell.baseline(0, 0)).bf16
    split = open_study(tmp_path / "split", params | {"profiles": {"t": params["profiles"]["t"]
                                                                 | {"primary_precision": "fp32"}}})
    assert split.bf16 and not split.primary_bf16 and not primary_train_config(split, 0).bf16
    assert segdec_train_config(split, Cell.baseline(0, 0)).bf16
    with pytest.raises(ConfigError, match="precision: 'bf16' is not allowed; expected auto or "
                                          "fp32 when deterministic is true"):
        open_study(tmp_path / "bad", params | {"profiles": {"t": params["profiles"]["t"]
                                                           | {"deterministic": True}}})


def test_deterministic_studies_run_fp32_with_deterministic_algorithms(tmp_path):
    params = synthetic_study("exact", n_train=8, n_test=4, positive_fraction=0.5, epochs=1,
                             batch_size=4, width=0.0625, deterministic=True)
    try:
        ctx = open_study(tmp_path, params)
        assert not ctx.bf16 and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
