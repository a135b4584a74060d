"""Control priors: does the primary network's knowledge help, or would any map do as well?

Each control has the signature ``control(maps, masks, seed) -> N×H×W float16 in [0, 1]``, takes
the real prior maps and the ground-truth masks of the same images, and is used exactly like a
real prior downstream. ``random`` and ``shuffled`` keep no image-specific information, ``blurred``
keeps only the coarse location, and ``oracle`` is the upper bound a perfect saliency method
would reach.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from kgl_utils.saliency.priors import normalise_maps

ControlPrior = Callable[..., np.ndarray]


def _check(maps: np.ndarray, masks: np.ndarray) -> None:
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be N×H×W of one size, got maps "
                         f"{maps.shape} and masks {masks.shape}")


def random_prior(maps: np.ndarray, masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform noise in [0, 1) per pixel: a prior without any information."""
    _check(maps, masks)
    return np.random.default_rng(seed).random(maps.shape, dtype=np.float32).astype(np.float16)


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point, uniform over all such permutations."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 images, got {n}")
    rng = np.random.default_rng(seed)
    while True:  # rejection sampling; each draw succeeds with probability about 1/e
        order = rng.permutation(n)
        if (order != np.arange(n)).all():
            return order


def shuffled_prior(maps: np.ndarray, masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every image gets another image's map: realistic maps in the wrong place.

    Pass only the positives' maps to shuffle among defective images.
    """
    _check(maps, masks)
    return maps[derangement(len(maps), seed)].astype(np.float16)


def blurred_prior(
    maps: np.ndarray, masks: np.ndarray, seed: int = 0, sigma_fraction: float = 0.15
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


def oracle_prior(maps: np.ndarray, masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """The ground-truth masks themselves (zero where an image has none): the upper bound."""
    _check(maps, masks)
    return (np.asarray(masks) > 0).astype(np.float16)


CONTROL_PRIORS: dict[str, ControlPrior] = {
    "random": random_prior,
    "shuffled": shuffled_prior,
    "blurred": blurred_prior,
    "oracle": oracle_prior,
}


def make_control_prior(
    name: str, maps: np.ndarray, masks: np.ndarray, seed: int = 0, **kwargs: float
) -> np.ndarray:
    """The control prior ``name`` (see ``CONTROL_PRIORS``) for these maps and masks."""
    if name not in CONTROL_PRIORS:
        raise ValueError(f"control prior {name!r} is unknown; allowed: "
                         f"{', '.join(CONTROL_PRIORS)}")
    return CONTROL_PRIORS[name](np.asarray(maps), np.asarray(masks), seed, **kwargs)
