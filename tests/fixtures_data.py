"""Writers of tiny datasets in each dataset's native published layout, for the data tests.

Every image is noise with a bright rectangle where it is defective, and its mask is exactly that
rectangle, so a test can check that resizing keeps image and mask aligned.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np


def picture(positive: bool, size: tuple[int, int], seed: int, colour: bool = False):
    """(image, mask) of ``size`` = (height, width); the mask is 255 on the defect rectangle."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = rng.integers(20, 60, size=size, dtype=np.uint8)
    mask = np.zeros(size, np.uint8)
    if positive:
        top, left = height // 4 + seed % 3, width // 3
        mask[top:top + height // 3, left:left + width // 4] = 255
        image[mask > 0] = 230
    if colour:
        image = np.dstack([image, image // 2, 255 - image])
    return image, mask


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def write_ksdd(root: Path, folders: dict[str, list[bool]], size=(64, 24)) -> Path:
    """``kosNN/PartK.jpg`` + ``PartK_label.bmp``; ``folders`` gives each part's label. Odd folders
    are a few pixels taller, as the real parts differ in height."""
    for f, (folder, labels) in enumerate(folders.items()):
        shape = (size[0] + 4 * (f % 2), size[1])
        for k, positive in enumerate(labels):
            image, mask = picture(positive, shape, seed=f * 10 + k)
            write(root / folder / f"Part{k}.jpg", image)
            write(root / folder / f"Part{k}_label.bmp", mask)
    return root


def write_ksdd2(root: Path, splits: dict[str, dict[str, bool]], size=(48, 24)) -> Path:
    """``<split>/<id>.png`` + ``<id>_GT.png`` (colour images, colour masks as published)."""
    for split, images in splits.items():
        for i, (name, positive) in enumerate(images.items()):
            image, mask = picture(positive, size, seed=i, colour=True)
            write(root / split / f"{name}.png", image)
            write(root / split / f"{name}_GT.png", np.dstack([mask] * 3))
    return root


def write_dagm(root: Path, dagm_class: int, splits: dict[str, dict[str, bool]],
               size=(32, 32)) -> Path:
    """``Class<K>/{Train,Test}/<name>.PNG``; a positive gets ``Label/<name>_label.PNG``."""
    for folder, images in splits.items():
        for i, (name, positive) in enumerate(images.items()):
            image, mask = picture(positive, size, seed=i)
            base = root / f"Class{dagm_class}" / folder
            write(base / f"{name}.PNG", image)
            if positive:
                write(base / "Label" / f"{name}_label.PNG", mask)
    return root


def rle(mask: np.ndarray) -> str:
    """Kaggle run-length encoding: 1-based starts, column-major."""
    flat = np.concatenate([[0], mask.flatten(order="F") > 0, [0]]).astype(np.int8)
    runs = np.flatnonzero(np.diff(flat)) + 1
    runs[1::2] -= runs[0::2]
    return " ".join(map(str, runs))


def write_severstal(root: Path, images: dict[str, list[int]], size=(32, 64)) -> Path:
    """``train_images/<id>.jpg`` + ``train.csv``; ``images`` gives each image's defect classes
    (empty: defect-free, absent from the csv). Each class's mask is the picture's rectangle,
    shifted per class so that classes differ."""
    lines = ["ImageId,ClassId,EncodedPixels"]
    for i, (name, classes) in enumerate(images.items()):
        image, mask = picture(bool(classes), size, seed=i)
        write(root / "train_images" / f"{name}.jpg", image)
        for c in classes:
            lines.append(f"{name}.jpg,{c},{rle(np.roll(mask, 2 * (c - 3), axis=1))}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def write_magnetic_tile(root: Path, per_class: int = 4, empty_uneven: int = 1) -> Path:
    """``MagneticTile/MT_<Class>/Imgs/<name>.jpg`` + ``<name>.png``; Free images have empty
    masks, and ``empty_uneven`` Uneven images too (as in the real data). Sizes vary per image."""
    from kgl_utils.data.magnetic_tile import CLASSES, DEFECT_FREE

    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            positive = name != DEFECT_FREE and not (name == "Uneven" and i < empty_uneven)
            image, mask = picture(positive, (40 + 2 * i, 30 + c), seed=c * 10 + i)
            folder = root / "MagneticTile" / f"MT_{name}" / "Imgs"
            write(folder / f"exp{c}_num_{i}.jpg", image)
            write(folder / f"exp{c}_num_{i}.png", mask)
    return root


def write_elpv(root: Path, probabilities: list[float], size=(30, 30)) -> Path:
    """``images/cellNNNN.png`` + ``labels.csv`` (path probability type), as the package ships."""
    lines = []
    for i, p in enumerate(probabilities):
        write(root / "images" / f"cell{i:04d}.png", picture(p >= 0.5, size, seed=i)[0])
        lines.append(f"images/cell{i:04d}.png  {p}  {'mono' if i % 2 else 'poly'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def write_pickle(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))
    return path


def write_folder(root: Path, good: int, defect: int, masked: int | None = None,
                 size=(40, 32), suffixes=(".png",), mask_suffix: str = "") -> Path:
    """A user's own layout: ``good/gNN`` and ``defect/dNN`` images, and
    ``masks/dNN<mask_suffix>.png`` for the first ``masked`` defect images (default: all).
    Image formats cycle through ``suffixes``."""
    masked = defect if masked is None else masked
    for i in range(good + defect):
        positive = i >= good
        image, mask = picture(positive, size, seed=i)
        name = f"d{i - good:02d}" if positive else f"g{i:02d}"
        write(root / ("defect" if positive else "good") / f"{name}{suffixes[i % len(suffixes)]}",
              image)
        if positive and i - good < masked:
            write(root / "masks" / f"{name}{mask_suffix}.png", mask)
    return root
