"""A user's own images: ``good/`` and ``defect/`` folders with optional ``masks/``, optionally
under fixed ``train/`` and ``test/`` folders; or a CSV manifest for images that live elsewhere.

The folder (or the manifest's ``label``) states the label; a mask only says where the defect
is, so a defect image without a mask is an image-label-only positive, as every ELPV image is.
A mask belongs to the image of the same name stem (plus ``mask_suffix``, e.g. ``_mask``), in
any common format; every non-zero pixel is defect. Without fixed splits the split is seeded
and stratified by label, like Magnetic Tile's.

Every file is checked when the table is built (each image's header, each mask decoded and
compared with its image), so a bad file stops the study before any training, named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kgl_utils.data.base import DataError, DefectDataset, check_mask_size, read_mask
from kgl_utils.data.splits import stratified_split, train_first
from kgl_utils.data.summary import image_size

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CLASSES = {"good": 0, "defect": 1}
MASKS = "masks"
SPLITS = ("train", "test")
LABELS = {"0": 0, "good": 0, "1": 1, "defect": 1}
"""The values a manifest's ``label`` column may hold (case-insensitive)."""
MANIFEST_COLUMNS = ("image", "label", "mask", "split")
DEFAULT_TEST_FRACTION = 0.3


def _image_files(folder: Path) -> dict[str, Path]:
    """The image files directly in ``folder`` by name stem; hidden files are skipped, anything
    else (another format, a subfolder, two files of one stem) stops."""
    if not folder.is_dir():
        raise DataError(f"folder: {folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"folder: {path} is not an image file ({', '.join(IMAGE_SUFFIXES)}); "
                            f"{folder.name}/ must hold images only")
        if path.stem in found:
            raise DataError(f"folder: {found[path.stem]} and {path} share the name "
                            f"{path.stem!r}; keep one of them")
        found[path.stem] = path
    return found


def _row(key: str, split: str, label: int, image: Path, mask: Path | None = None) -> dict:
    return dict(id=key, split=split, label=label, image_path=str(image),
                mask_path=None if mask is None else str(mask), is_segmented=mask is not None)


def _split_rows(base: Path, split: str, mask_suffix: str) -> list[dict]:
    """The rows of one ``good/`` + ``defect/`` (+ ``masks/``) folder; ``split`` "" when the
    split is drawn later. Ids are ``[<split>/]<class>/<stem>``."""
    prefix = f"{split}/" if split else ""
    rows, by_stem = [], {}
    for name, label in CLASSES.items():
        for stem, image in _image_files(base / name).items():
            rows.append(_row(f"{prefix}{name}/{stem}", split, label, image))
            by_stem.setdefault(stem, []).append(rows[-1])
    if not (base / MASKS).is_dir():
        return rows
    for stem, mask in _image_files(base / MASKS).items():
        if not stem.endswith(mask_suffix):
            raise DataError(f"folder: mask {mask} does not end in mask_suffix {mask_suffix!r}")
        owners = by_stem.get(stem[:len(stem) - len(mask_suffix)], [])
        if not owners:
            raise DataError(f"folder: mask {mask} belongs to no image of {base / 'good'} or "
                            f"{base / 'defect'}")
        if len(owners) > 1:
            found = " and ".join(r["image_path"] for r in owners)
            raise DataError(f"folder: mask {mask} matches two images, {found}; rename one")
        owners[0].update(mask_path=str(mask), is_segmented=True)
    return rows


def folders_table(root: Path, mask_suffix: str) -> tuple[pd.DataFrame, bool]:
    """The table of ``root``'s folders and whether its split is fixed (``train/``, ``test/``)."""
    if not root.is_dir():
        raise DataError(f"folder: root {root} is neither a folder nor a .csv manifest")
    fixed = [s for s in SPLITS if (root / s).is_dir()]
    flat = [c for c in (*CLASSES, MASKS) if (root / c).is_dir()]
    if fixed and flat:
        raise DataError(f"folder: {root} holds both {'/, '.join(fixed)}/ and {'/, '.join(flat)}/; "
                        f"put every image under train/ and test/, or none")
    if fixed and len(fixed) != len(SPLITS):
        raise DataError(f"folder: {root} holds {fixed[0]}/ but no "
                        f"{(set(SPLITS) - set(fixed)).pop()}/; fixed splits need both")
    if not fixed and not flat:
        raise DataError(f"folder: {root} holds no good/ and defect/ folders (or train/ and "
                        f"test/, each with good/ and defect/)")
    if fixed:
        rows = [r for s in SPLITS for r in _split_rows(root / s, s, mask_suffix)]
    else:
        rows = _split_rows(root, "", mask_suffix)
    return pd.DataFrame(rows, columns=["id", "split", "label", "image_path", "mask_path",
                                       "is_segmented"]), bool(fixed)


def manifest_table(path: Path) -> tuple[pd.DataFrame, bool]:
    """The table of a CSV manifest and whether it fixes the split (a ``split`` column). Paths
    are relative to the manifest's folder unless absolute; ids are the ``image`` entries."""
    if not path.is_file():
        raise DataError(f"folder: manifest {path} is missing")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV manifest ({err})") from err
    columns = list(frame.columns)
    if not {"image", "label"} <= set(columns) or set(columns) - set(MANIFEST_COLUMNS):
        raise DataError(f"{path} has columns {columns}; expected image, label and optionally "
                        f"mask, split")
    if frame.empty:
        raise DataError(f"{path}: lists no images")
    fixed = "split" in columns
    rows, lines = [], {}
    for index, entry in frame.iterrows():
        where = f"{path}, line {index + 2}"  # the header is line 1
        image = entry["image"].strip()
        if not image:
            raise DataError(f"{where}: the image entry is empty")
        if image in lines:
            raise DataError(f"{where}: image {image!r} is listed again (first on line "
                            f"{lines[image]})")
        lines[image] = index + 2
        label = LABELS.get(entry["label"].strip().lower())
        if label is None:
            raise DataError(f"{where}: label {entry['label']!r} is not one of 0, 1, good, "
                            f"defect")
        split = entry["split"].strip().lower() if fixed else ""
        if fixed and split not in SPLITS:
            raise DataError(f"{where}: split {entry['split']!r} is not one of "
                            f"{', '.join(SPLITS)}")
        mask = entry.get("mask", "").strip()
        rows.append(_row(image, split, label, path.parent / image,
                         path.parent / mask if mask else None))
    return pd.DataFrame(rows), fixed


def check_files(table: pd.DataFrame) -> None:
    """Every image readable (its header); every mask readable, of its image's size, with a
    defect pixel on a defect image and none on a good one."""
    for row in table.itertuples():
        size = image_size(row.image_path)
        if not row.is_segmented:
            continue
        mask = read_mask(row.mask_path)
        check_mask_size(row.mask_path, mask.shape, row.image_path, size)
        if bool(mask.any()) != bool(row.label):
            state = ("has no defect pixel, but its image" if row.label else
                     f"marks {int(mask.sum())} defect pixels, but its image")
            kind = "a defect image" if row.label else "defect-free"
            raise DataError(f"{row.mask_path}: mask {state} {row.image_path} is {kind}; "
                            f"fix the mask or remove it")


def check_classes(table: pd.DataFrame, where: str, at_least: int, why: str) -> None:
    """Stop unless ``table`` holds at least ``at_least`` good and as many defect images."""
    for name, label in CLASSES.items():
        count = int((table["label"] == label).sum())
        if count < at_least:
            raise DataError(f"folder: {where} holds {count} {name} images; {why}")


def load_folder(
    root: str | os.PathLike, *, test_fraction: float | None = None, mask_suffix: str = "",
    seed: int = 0, channels: int = 1,
) -> DefectDataset:
    """Images in ``good/`` and ``defect/`` (with optional ``masks/``) under ``root``, or under
    its ``train/`` and ``test/``; or a CSV manifest as ``root`` (columns image, label, optional
    mask and split). Without a fixed split a seeded ``test_fraction`` (default 0.3) is held
    out per label."""
    root = Path(root)
    if root.suffix.lower() == ".csv":
        table, fixed = manifest_table(root)
    else:
        table, fixed = folders_table(root, mask_suffix)
    if fixed and test_fraction is not None:
        raise DataError(f"folder: test_fraction={test_fraction!r} given, but {root} fixes the "
                        f"split (train/ and test/ folders, or a split column)")
    check_files(table)
    if not fixed:
        check_classes(table, str(root), 2, "a seeded split needs at least 2, one for train "
                      "and one for test")
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        table["split"] = stratified_split(table, fraction, seed)
    for split in SPLITS:
        check_classes(table[table["split"] == split], f"the {split} split of {root}", 1,
                      "every split needs good and defect images")
    return DefectDataset("folder", train_first(table), channels)
