"""Control priors: does the primary network's knowledge help, or would any map do as well?

Each control has the signature ``control(maps, masks, targets, seed) -> N×H×W float16 in
[0, 1]``: it takes a method's prior maps, the ground-truth masks and the method's own binary
pseudo-masks (``targets``) of the same images, and is used exactly like a real prior
downstream. ``random`` keeps each image's target area and blob count but not its place,
``shuffled`` gives every image another image's map, ``blurred`` keeps only the coarse location;
``full`` (the whole image is defect) and ``oracle`` (the human mask) need no method at all.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from kgl_utils.saliency.priors import normalise_maps

ControlFunction = Callable[..., np.ndarray]
PLACEMENT_TRIES = 50


def _check(maps: np.ndarray, masks: np.ndarray) -> None:
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be N×H×W of one size, got maps "
                         f"{maps.shape} and masks {masks.shape}")


def random_prior(maps: np.ndarray, masks: np.ndarray, targets: np.ndarray,
                 seed: int = 0) -> np.ndarray:
    """Each image's target moved: every blob of the method's pseudo-mask translated to a random
    place, largest first, neither overlapping nor touching the blobs already placed where it
    can. The count and total area of the target stay; where the prior pointed does not."""
    _check(targets, masks)
    rng = np.random.default_rng(seed)
    height, width = targets.shape[1:]
    out = np.zeros(targets.shape, np.float16)
    for i, target in enumerate(targets):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (target > 0).astype(np.uint8), connectivity=8)
        placed = np.zeros((height, width), np.uint8)
        for j in sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA]):
            x, y, w, h = stats[j, :4]
            blob = labels[y:y + h, x:x + w] == j
            near = cv2.dilate(placed, np.ones((3, 3), np.uint8)).astype(bool)
            for _ in range(PLACEMENT_TRIES):
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                if not (near[top:top + h, left:left + w] & blob).any():
                    break
            placed[top:top + h, left:left + w] |= blob
        out[i] = placed
    return out


def full_prior(maps: np.ndarray, masks: np.ndarray, targets: np.ndarray | None = None,
               seed: int = 0) -> np.ndarray:
    """The whole image is defect: a segmentation target that says only "this image is
    positive" (what an Otsu-binarised, dilated noise map used to amount to)."""
    _check(maps, masks)
    return np.ones(maps.shape, np.float16)


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point, uniform over all such permutations."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 images, got {n}")
    rng = np.random.default_rng(seed)
    while True:  # rejection sampling; each draw succeeds with probability about 1/e
        order = rng.permutation(n)
        if (order != np.arange(n)).all():
            return order


def shuffled_prior(maps: np.ndarray, masks: np.ndarray, targets: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """Every image gets another image's map: realistic maps in the wrong place.

    Pass only the positives' maps to shuffle among defective images.
    """
    _check(maps, masks)
    return maps[derangement(len(maps), seed)].astype(np.float16)


def blurred_prior(
    maps: np.ndarray, masks: np.ndarray, targets: np.ndarray | None = None, seed: int = 0,
    sigma_fraction: float = 0.15,
) -> np.ndarray:
    """Maps blurred with a Gaussian of ``sigma_fraction`` × the shorter side, then renormalised.

    Keeps where the defect roughly is but not its shape. ``seed`` is unused (deterministic).
    """
    _check(maps, masks)
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    sigma = sigma_fraction * min(maps.shape[1:])
    blurred = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma) for m in maps])
    return normalise_maps(blurred).astype(np.float16)


def oracle_prior(maps: np.ndarray, masks: np.ndarray, targets: np.ndarray | None = None,
                 seed: int = 0) -> np.ndarray:
    """The ground-truth masks themselves (zero where an image has none): the upper bound."""
    _check(maps, masks)
    return (np.asarray(masks) > 0).astype(np.float16)


CONTROL_FUNCTIONS: dict[str, ControlFunction] = {
    "random": random_prior,
    "full": full_prior,
    "shuffled": shuffled_prior,
    "blurred": blurred_prior,
    "oracle": oracle_prior,
}


def make_control_prior(
    name: str, maps: np.ndarray, masks: np.ndarray, targets: np.ndarray | None = None,
    seed: int = 0, **kwargs: float,
) -> np.ndarray:
    """The control prior ``name`` (see ``CONTROL_FUNCTIONS``) for these maps, masks and the
    method's binary pseudo-masks ``targets`` (``random`` needs them)."""
    if name not in CONTROL_FUNCTIONS:
        raise ValueError(f"control prior {name!r} is unknown; allowed: "
                         f"{', '.join(CONTROL_FUNCTIONS)}")
    if name == "random" and targets is None:
        raise ValueError("the random control moves the method's pseudo-masks: give targets")
    return CONTROL_FUNCTIONS[name](np.asarray(maps), np.asarray(masks), targets, seed, **kwargs)
