"""A deterministic DAGM-style dataset, generated on first use, so a study runs without downloads.

Like DAGM 2007, each image is a statistical texture (grain, stripes, gradient or clouds) and a
positive image carries one defect (scratch, spots, blob or a local texture change) drawn inside a
random ellipse; the ellipse is the pixel mask, as loose as DAGM's own ellipse labels. Brightness and
contrast vary per image, so the defect, not the global intensity, separates the classes.

The files are written in a native layout (``root/{train,test}/<id>.png`` and
``<id>_label.png`` beside each positive) with ``manifest.json`` holding the generation parameters;
they are regenerated only when missing or when the parameters differ.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgl_utils.data.base import DataError, DefectDataset
from kgl_utils.results import save_image, write_json

GENERATOR_VERSION = 1
TEXTURES = ("grain", "stripes", "gradient", "cloudy")
DEFECTS = ("scratch", "spots", "blob", "texture_change")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines the generated files (written to the manifest)."""

    n_train: int
    n_test: int
    size: tuple[int, int]
    positive_fraction: float
    seed: int
    version: int = GENERATOR_VERSION

    def validate(self) -> None:
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise DataError(f"synthetic: {name} must be an integer >= 2, got {value!r}")
        if (len(self.size) != 2 or any(not isinstance(s, int) or s < 32 for s in self.size)):
            raise DataError(f"synthetic: size must be (height, width) with both >= 32, "
                            f"got {self.size!r}")
        if not 0.0 < self.positive_fraction < 1.0:
            raise DataError(f"synthetic: positive_fraction must be in (0, 1), "
                            f"got {self.positive_fraction!r}")
        if round(self.n_train * self.positive_fraction) < 1:
            raise DataError(f"synthetic: n_train={self.n_train} with positive_fraction="
                            f"{self.positive_fraction} gives no training positive")


def _plan(params: SyntheticParams) -> pd.DataFrame:
    """Decide every image's split, label, texture, defect and seed before drawing any pixel."""
    rng = np.random.default_rng(params.seed)
    rows = []
    for split, n in (("train", params.n_train), ("test", params.n_test)):
        n_pos = max(1, round(n * params.positive_fraction))
        labels = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
        textures = rng.permutation(np.resize(np.arange(len(TEXTURES)), n))
        defects = rng.permutation(np.resize(np.arange(len(DEFECTS)), n_pos))
        seeds = rng.integers(0, 2**31, size=n)
        k = 0
        for i in range(n):
            defect = ""
            if labels[i]:
                defect, k = DEFECTS[defects[k]], k + 1
            rows.append(dict(id=f"{split}_{i:04d}", split=split, label=int(labels[i]),
                             texture=TEXTURES[textures[i]], defect=defect, seed=int(seeds[i])))
    return pd.DataFrame(rows)


def _normalise(field: np.ndarray) -> np.ndarray:
    return (field - field.mean()) / (field.std() + 1e-6)


def _texture(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A zero-mean texture field (float32, roughly unit scale times its own contrast)."""
    h, w = shape
    scale = min(h, w) / 128.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "grain":
        noise = rng.normal(0.0, 1.0, shape).astype(np.float32)
        return 18.0 * _normalise(cv2.GaussianBlur(noise, (0, 0), 0.8 * scale))
    if kind == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(7.0, 14.0) * scale
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        return 26.0 * wave + rng.normal(0.0, 6.0, shape).astype(np.float32)
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        ramp = _normalise(xx * np.cos(theta) + yy * np.sin(theta))
        return 30.0 * ramp + rng.normal(0.0, 5.0, shape).astype(np.float32)
    if kind == "cloudy":
        coarse = rng.normal(0.0, 1.0, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
        fine = rng.normal(0.0, 1.0, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
        field = (cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
                 + 0.4 * cv2.resize(fine, (w, h), interpolation=cv2.INTER_CUBIC))
        return 22.0 * _normalise(field) + rng.normal(0.0, 4.0, shape).astype(np.float32)
    raise DataError(f"synthetic: unknown texture {kind!r}; allowed: {TEXTURES}")


def _ellipse(shape: tuple[int, int], rng: np.random.Generator):
    """A random ellipse well inside the image: (centre, semi-axes, angle in degrees, mask)."""
    h, w = shape
    side = min(h, w)
    a = rng.uniform(0.08, 0.17) * side
    b = a * rng.uniform(0.35, 0.9)
    cx = rng.uniform(a + 2, w - a - 2)
    cy = rng.uniform(a + 2, h - a - 2)
    angle = rng.uniform(0, 180)
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(cx), round(cy)), (round(a), round(b)), angle, 0, 360, 1, -1)
    return (cx, cy), (a, b), angle, mask


def _inside(centre, axes, angle, rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A random point within ``radius`` (normalised) of the ellipse centre."""
    r = radius * np.sqrt(rng.uniform())
    t = rng.uniform(0, 2 * np.pi)
    u, v = r * axes[0] * np.cos(t), r * axes[1] * np.sin(t)
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    return centre[0] + u * c - v * s, centre[1] + u * s + v * c


def _defect(kind: str, image: np.ndarray, texture: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one defect of ``kind`` into ``image`` (float32, in place); return the ellipse mask."""
    shape = image.shape
    side = min(shape)
    centre, axes, angle, mask = _ellipse(shape, rng)
    sign = rng.choice([-1.0, 1.0])
    layer = np.zeros(shape, np.float32)
    if kind == "scratch":
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        thickness = max(2, round(side / 50))
        for _ in range(rng.integers(1, 3)):
            off = rng.uniform(-0.3, 0.3) * axes[1]
            px, py = centre[0] - off * s, centre[1] + off * c
            tilt = rng.uniform(-0.15, 0.15)
            dx, dy = np.cos(np.deg2rad(angle) + tilt), np.sin(np.deg2rad(angle) + tilt)
            p0 = (round(px - axes[0] * dx), round(py - axes[0] * dy))
            p1 = (round(px + axes[0] * dx), round(py + axes[0] * dy))
            cv2.line(layer, p0, p1, 1.0, thickness, cv2.LINE_AA)
        layer *= mask * rng.uniform(70, 100)
    elif kind == "spots":
        for _ in range(rng.integers(2, 5)):
            x, y = _inside(centre, axes, angle, rng, 0.6)
            radius = max(2, round(rng.uniform(0.02, 0.04) * side))
            cv2.circle(layer, (round(x), round(y)), radius, 1.0, -1, cv2.LINE_AA)
        layer *= mask * rng.uniform(75, 105)
    elif kind == "blob":
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        u = ((xx - centre[0]) * c + (yy - centre[1]) * s) / axes[0]
        v = (-(xx - centre[0]) * s + (yy - centre[1]) * c) / axes[1]
        layer = rng.uniform(60, 85) * np.exp(-1.5 * (u**2 + v**2)).astype(np.float32) * mask
    elif kind == "texture_change":
        other = [t for t in TEXTURES if t not in (texture, "gradient")]
        local = _texture(str(rng.choice(other)), shape, rng) * 2.2 + sign * 25.0
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, side / 128))
        image += soft * (local - image)
        return mask
    else:
        raise DataError(f"synthetic: unknown defect {kind!r}; allowed: {DEFECTS}")
    image += sign * layer
    return mask


def render(row: pd.Series | dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw one planned image: H×W uint8 image and, for a positive, its H×W uint8 mask {0, 1}."""
    rng = np.random.default_rng(row["seed"])
    base = rng.uniform(90, 165)
    contrast = rng.uniform(0.8, 1.2)
    image = contrast * _texture(row["texture"], size, rng)
    mask = _defect(row["defect"], image, row["texture"], rng) if row["label"] else None
    image = np.clip(image + base, 0, 255).round().astype(np.uint8)
    return image, mask


def _table(plan: pd.DataFrame, root: Path) -> pd.DataFrame:
    table = plan.drop(columns="seed").copy()
    table["image_path"] = [str(root / s / f"{i}.png") for s, i in zip(plan.split, plan.id)]
    table["mask_path"] = [str(root / s / f"{i}_label.png") if y else None
                          for s, i, y in zip(plan.split, plan.id, plan.label)]
    table["is_segmented"] = plan["label"].astype(bool)
    return table[["id", "split", "label", "image_path", "mask_path", "is_segmented",
                  "texture", "defect"]]


def generate_synthetic(root: str | os.PathLike, params: SyntheticParams,
                       progress: bool = True) -> pd.DataFrame:
    """Write the dataset under ``root`` unless its manifest already matches ``params``.

    Returns the table. The manifest is written last, so an interrupted run regenerates.
    """
    params.validate()
    root = Path(root)
    wanted = asdict(params) | {"size": list(params.size)}
    manifest = root / MANIFEST
    plan = _plan(params)
    if manifest.is_file():
        if json.loads(manifest.read_text()) == wanted:
            return _table(plan, root)
        for split in ("train", "test"):
            shutil.rmtree(root / split, ignore_errors=True)
        manifest.unlink()
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for _, row in tqdm(plan.iterrows(), total=len(plan), desc="synthetic", disable=not progress):
        image, mask = render(row, params.size)
        save_image(root / row["split"] / f"{row['id']}.png", image)
        if mask is not None:
            save_image(root / row["split"] / f"{row['id']}_label.png", mask * 255)
    write_json(manifest, wanted)
    return _table(plan, root)


def load_synthetic(
    root: str | os.PathLike, *, n_train: int = 160, n_test: int = 80,
    size: tuple[int, int] = (128, 128), positive_fraction: float = 0.35, seed: int = 0,
    channels: int = 1, progress: bool = True,
) -> DefectDataset:
    """The synthetic dataset under ``root`` (generated there when missing or stale).

    Images are grayscale; ``channels=3`` replicates the gray plane, as for DAGM.
    """
    params = SyntheticParams(n_train=n_train, n_test=n_test, size=tuple(size),
                             positive_fraction=positive_fraction, seed=seed)
    return DefectDataset("synthetic", generate_synthetic(root, params, progress), channels)
