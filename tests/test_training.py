"""The training loop: negative sampling, guided-run inputs, resume, learning on synthetic data."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from kgl_utils import training
from kgl_utils.data.base import SplitArrays
from kgl_utils.data.synthetic import load_synthetic
from kgl_utils.device import resolve_device
from kgl_utils.models.registry import build_model
from kgl_utils.training import (
    NegativeSampler,
    TrainConfig,
    _segmentation_arrays,
    load_checkpoint,
    predict,
    train,
)

SIZE = 128


def tiny_split(n_pos=4, n_neg=8, size=SIZE, seed=0) -> SplitArrays:
    """Noise images; a positive has a bright square, its mask."""
    rng = np.random.default_rng(seed)
    n = n_pos + n_neg
    images = rng.integers(0, 120, size=(n, size, size, 1), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n_pos):
        top, left = rng.integers(8, size - 40, size=2)
        masks[i, top:top + 24, left:left + 24] = 1
        images[i, top:top + 24, left:left + 24] = 230
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(np.int64)
    return SplitArrays([f"img{i}" for i in range(n)], images, masks, labels, labels == 1)


def small_config(**kwargs) -> TrainConfig:
    base = dict(epochs=3, lr=0.05, batch_size=3, dilate=3, w_pos=2.0, flips=True,
                momentum=0.5, progress=False)
    return TrainConfig(**(base | kwargs))


def small_segdec(**kwargs):
    return build_model("segdecnet", in_channels=1, width=0.0625, seed=0, **kwargs)


def test_frequency_sampling_uses_every_negative_about_equally():
    rng = np.random.default_rng(0)
    sampler = NegativeSampler(37)
    for _ in range(20):
        drawn = sampler.draw(10, rng)
        assert len(set(drawn.tolist())) == 10  # no negative twice within an epoch
    assert sampler.counts.sum() == 200
    assert sampler.counts.max() - sampler.counts.min() <= 2  # uniform draws spread 1..10
    # More positives than negatives: whole rounds of negatives, then the rest by frequency.
    few = NegativeSampler(4)
    assert np.bincount(few.draw(10, rng), minlength=4).tolist() in (
        [3, 3, 2, 2], [3, 2, 3, 2], [3, 2, 2, 3], [2, 3, 3, 2], [2, 3, 2, 3], [2, 2, 3, 3])
    copy = NegativeSampler(37)
    copy.load_state_dict(sampler.state_dict())
    state = rng.bit_generator.state
    first = sampler.draw(10, rng)
    rng.bit_generator.state = state
    assert np.array_equal(copy.draw(10, rng), first)


def test_each_epoch_has_all_positives_and_as_many_negatives():
    data = tiny_split(n_pos=3, n_neg=9)
    seen: dict[int, list[int]] = {}

    def record(model, batch, outputs, epoch):
        seen.setdefault(epoch, []).extend(batch.index.tolist())
        return outputs.cls_logits.sum() * 0

    train(small_segdec(), data, small_config(epochs=3), extra_loss=record)
    negatives_used = []
    for epoch in range(3):
        rows = seen[epoch]
        assert sorted(r for r in rows if r < 3) == [0, 1, 2]
        negs = [r for r in rows if r >= 3]
        assert len(negs) == len(set(negs)) == 3
        negatives_used += negs
    assert sorted(negatives_used) == list(range(3, 12))  # 9 negatives, each once in 3 epochs


def test_resume_ends_like_an_uninterrupted_run(tmp_path):
    data = tiny_split()
    config = small_config(epochs=4, checkpoint_every=1)
    whole = train(small_segdec(), data, config, run_dir=tmp_path / "whole")

    def crash_in_epoch_2(model, batch, outputs, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return outputs.cls_logits.sum() * 0

    with pytest.raises(KeyboardInterrupt):
        train(small_segdec(), data, config, extra_loss=crash_in_epoch_2,
              run_dir=tmp_path / "cut")
    assert len(pd.read_csv(tmp_path / "cut" / "losses.csv")) == 2
    # A different model initialisation must not matter: the checkpoint replaces it.
    fresh = build_model("segdecnet", in_channels=1, width=0.0625, seed=99)
    resumed = train(fresh, data, config, extra_loss=lambda m, b, o, e: o.cls_logits.sum() * 0,
                    run_dir=tmp_path / "cut")
    assert resumed.resumed_epochs == 2
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    columns = ["loss", "loss_seg", "loss_cls", "accuracy"]
    pd.testing.assert_frame_equal(whole.history[columns], resumed.history[columns])
    logged = pd.read_csv(tmp_path / "cut" / "losses.csv")
    assert logged["epoch"].tolist() == [0, 1, 2, 3]
    # A finished run is returned as it is; another setting refuses the folder.
    again = train(small_segdec(), data, config, run_dir=tmp_path / "whole")
    assert again.resumed_epochs == 4
    with pytest.raises(ValueError, match="written by another run"):
        train(small_segdec(), data, small_config(epochs=4, lr=0.01), run_dir=tmp_path / "whole")
    reloaded = small_segdec()
    load_checkpoint(reloaded, tmp_path / "whole" / "checkpoint.pt")
    assert torch.equal(reloaded.fc.weight, whole.model.fc.weight)


def test_weak_positives_and_pseudo_masks():
    data = tiny_split()
    weak = np.zeros(len(data), bool)  # no positive keeps a mask: all weak
    result = train(small_segdec(), data, small_config(epochs=2), segmented=weak)
    assert result.history["loss_seg"].notna().all()  # the negatives still have a target
    unmasked = SplitArrays(data.ids, data.images, np.zeros_like(data.masks), data.labels,
                           np.zeros(len(data), bool))
    with pytest.raises(ValueError, match="positives without a mask"):
        train(small_segdec(), unmasked, small_config(), segmented=data.labels == 1)
    pseudo = data.masks.astype(np.float32) * 0.8
    config = small_config(epochs=1)
    guided = train(small_segdec(), unmasked, config, segmented=data.labels == 1, masks=pseudo)
    assert guided.history["loss_seg"].notna().all()
    # The pseudo-masks, not the (empty) human masks, are the positives' targets.
    seg = _segmentation_arrays(unmasked, data.labels == 1, pseudo, config)
    positive, targets = data.labels == 1, seg.targets[0]
    assert (seg.gamma[positive] == 1).all() and (targets[positive].max(axis=(1, 2)) > 0).all()
    assert targets[~positive].max() == 0
    with pytest.raises(ValueError, match=r"masks must lie in \[0, 1\]"):
        train(small_segdec(), unmasked, small_config(), masks=pseudo * 2)
    with pytest.raises(ValueError, match="masks must be N×H×W"):
        train(small_segdec(), unmasked, small_config(), masks=pseudo[:, :64])


def _column_split(column: int, size: int = SIZE) -> SplitArrays:
    """A positive whose mask is one full-height pixel column, a weak positive, a negative."""
    masks = np.zeros((3, size, size), np.uint8)
    masks[0, :, column] = 1
    images = np.zeros((3, size, size, 1), np.uint8)
    labels = np.array([1, 1, 0])
    return SplitArrays(["line", "weak", "good"], images, masks, labels,
                       np.array([True, False, False]))


def test_flipped_targets_are_made_from_flipped_masks():
    # The 1/8 cell k pools columns 8k-8 .. 8k+8. Column 12 lies in cells 1 and 2; mirrored it is
    # column 115, in cells 14 and 15 -- not 13 and 14, where mirroring the 1/8 target puts it.
    data = _column_split(12)
    segmented = data.is_segmented | (data.labels == 0)
    seg = _segmentation_arrays(data, segmented, None, small_config(dilate=0, flips=True))
    assert seg.targets.shape == (4, 3, SIZE // 8, SIZE // 8)
    columns = {code: set(np.flatnonzero(seg.targets[code, 0].max(axis=0)))
               for code in range(4)}
    assert columns == {0: {1, 2}, 1: {14, 15}, 2: {1, 2}, 3: {14, 15}}
    mirrored = _column_split(SIZE - 1 - 12)
    np.testing.assert_array_equal(seg.targets[1], _segmentation_arrays(
        mirrored, segmented, None, small_config(dilate=0, flips=False)).targets[0])
    assert _segmentation_arrays(data, data.is_segmented, None,
                                small_config(flips=False)).targets.shape[0] == 1


def test_the_classification_target_of_a_thin_defect_is_soft():
    # A one-pixel column fills 17 of the 17×17 pixels a cell pools: the target's maximum is 1/17.
    data = _column_split(12)
    segmented = data.is_segmented | (data.labels == 0)
    soft = _segmentation_arrays(data, segmented, None, small_config(dilate=0))
    np.testing.assert_allclose(soft.cls_targets[:, 0], 1 / 17, rtol=1e-6)
    assert (soft.cls_targets[:, 1] == 1).all() and (soft.cls_targets[:, 2] == 0).all()
    hard = _segmentation_arrays(data, segmented, None,
                                small_config(dilate=0, soft_class_target=False))
    np.testing.assert_array_equal(hard.cls_targets[0], [1, 1, 0])


def test_priors_are_flipped_with_their_images_and_fed_to_the_model():
    data = tiny_split()
    priors = data.images[..., 0].astype(np.float32) / 255  # the image itself: flips must agree
    checked = []

    def compare(model, batch, outputs, epoch):
        assert torch.allclose(batch.priors, batch.images)
        checked.append(bool(batch.flips.any()))
        assert outputs.features.shape[1] == model.feature_channels
        return outputs.cls_logits.sum() * 0

    model = small_segdec(extra_input_channels=1)
    train(model, data, small_config(epochs=2), priors=priors, extra_loss=compare)
    assert any(checked)
    scores, maps = predict(model, data.images, priors, batch_size=5, progress=False)
    assert scores.shape == (len(data),) and maps.shape == (len(data), SIZE // 8, SIZE // 8)
    assert ((scores > 0) & (scores < 1)).all()
    with pytest.raises(ValueError, match="no priors were given"):
        train(model, data, small_config())
    with pytest.raises(ValueError, match="priors must be given exactly"):
        predict(model, data.images, progress=False)
    with pytest.raises(ValueError, match="no extra_loss uses them"):
        train(small_segdec(), data, small_config(), priors=priors)


def test_max_grad_norm_bounds_each_step():
    data = tiny_split()
    before = small_segdec()
    start = [p.detach().clone() for p in before.parameters()]
    clipped = train(before, data, small_config(epochs=1, momentum=0, max_grad_norm=1e-6)).model
    def moved(model):  # the total displacement, bounded by lr × clip per step
        return sum(float((p.detach() - q).square().sum())
                   for p, q in zip(model.parameters(), start)) ** 0.5

    steps = -(-2 * 4 // small_config().batch_size)  # 4 positives and 4 negatives per epoch
    assert moved(clipped) <= steps * small_config().lr * 1e-6 * 1.01
    free = train(small_segdec(), data, small_config(epochs=1, momentum=0)).model
    assert moved(free) > 1e-3


def test_cosine_schedule_is_logged_and_resumed(tmp_path, monkeypatch):
    data = tiny_split()
    config = small_config(epochs=2, lr_schedule="cosine", checkpoint_every=1)
    whole = train(small_segdec(), data, config, run_dir=tmp_path / "whole")
    assert whole.history["lr"].tolist() == pytest.approx([0.05, 0.025])

    real, epochs = training._train_epoch, []

    def killed_in_epoch_2(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(small_segdec(), data, config, run_dir=tmp_path / "killed")
    monkeypatch.setattr(training, "_train_epoch", real)
    resumed = train(small_segdec(), data, config, run_dir=tmp_path / "killed")
    assert resumed.resumed_epochs == 1  # the first epoch came from the checkpoint
    assert resumed.history["lr"].tolist() == pytest.approx([0.05, 0.025])
    pd.testing.assert_frame_equal(resumed.history.drop(columns="seconds"),
                                  whole.history.drop(columns="seconds"))
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bf16_channels_last_and_workers_run():
    data = tiny_split()
    config = small_config(epochs=1, bf16=True, channels_last=True, num_workers=2)
    result = train(small_segdec(), data, config)
    assert np.isfinite(result.history[["loss", "loss_seg", "loss_cls"]].to_numpy()).all()
    scores, maps = predict(result.model, data.images, bf16=True, channels_last=True,
                           progress=False)
    assert scores.dtype == maps.dtype == np.float32 and np.isfinite(scores).all()


def test_config_and_device_are_checked():
    with pytest.raises(ValueError, match="TrainConfig.epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="loss_reduction"):
        TrainConfig(loss_reduction="median")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def synthetic_splits(root, size: int, n_train: int) -> tuple[SplitArrays, SplitArrays]:
    data = load_synthetic(root, n_train=n_train, n_test=80, size=(size, size), seed=0,
                          progress=False)
    return (data.load_split("train", (size, size), progress=False),
            data.load_split("test", (size, size), progress=False))


@pytest.mark.slow
def test_segdec_with_masks_learns_the_synthetic_set(tmp_path):
    train_set, test_set = synthetic_splits(tmp_path, size=128, n_train=160)
    model = build_model("segdecnet", in_channels=1, width=0.125, seed=0)
    config = TrainConfig(epochs=10, lr=0.2, batch_size=4, dilate=5, w_pos=2.0, progress=False)
    result = train(model, train_set, config)
    scores, maps = predict(result.model, test_set.images, progress=False)
    assert average_precision_score(test_set.labels, scores) >= 0.95
    assert maps.shape == (len(test_set), 16, 16)
    history = result.history
    assert history["cls_weight"].iloc[0] == 0 and history["seg_weight"].iloc[0] == 1
    assert history["loss_seg"].iloc[-1] < history["loss_seg"].iloc[0]


@pytest.mark.slow
def test_vgg16_primary_learns_from_image_labels(tmp_path):
    # The BN layout learns from scratch in minutes; the synthetic set's faint defects need
    # ~80 training positives to reach AP 0.95 (0.975-0.985 over model seeds 0-2).
    train_set, test_set = synthetic_splits(tmp_path, size=64, n_train=240)
    model = build_model("vgg16", in_channels=1, width=0.25, batch_norm=True, seed=0)
    config = TrainConfig(epochs=16, lr=0.006, batch_size=16, momentum=0.9, flips=True,
                         loss_reduction="mean", lr_schedule="cosine", progress=False)
    result = train(model, train_set, config)
    scores, maps = predict(result.model, test_set.images, progress=False)
    assert maps is None
    assert average_precision_score(test_set.labels, scores) >= 0.95
    assert result.history["loss_seg"].isna().all()


def test_validation_keeps_the_best_epochs_weights(tmp_path):
    data, validation = tiny_split(), tiny_split(seed=1)
    config = small_config(epochs=4)
    result = train(small_segdec(), data, config, validation=validation, run_dir=tmp_path / "run")
    aps = result.history["validation_ap"].to_numpy()
    assert len(aps) == 4 and result.best_epoch == int(aps.argmax())
    scores, _ = predict(result.model, validation.images, batch_size=4, progress=False)
    assert average_precision_score(validation.labels, scores) == pytest.approx(aps.max())
    # Finished runs come back with the same choice, without training again.
    again = train(small_segdec(), data, config, validation=validation, run_dir=tmp_path / "run")
    assert again.best_epoch == result.best_epoch and again.resumed_epochs == 4
    one_class = SplitArrays(validation.ids[4:], validation.images[4:], validation.masks[4:],
                            validation.labels[4:], validation.is_segmented[4:])
    with pytest.raises(ValueError, match="validation split needs positive and negative"):
        train(small_segdec(), data, config, validation=one_class)
