"""Prior maps are computed once per split and kept on disk with a manifest of what made them.

Layout under a store root (e.g. ``results/<study>/priors``): ``<method>/<split>.npz`` holds the
maps (float16, compressed) and ``<method>/<split>.json`` the manifest. A rerun with the same
method, layer, primary checkpoint, parameters and image ids reuses the file; any difference
recomputes it. The manifest is written after the maps, so a manifest always describes a
complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kgl_utils.results import atomic_write, write_text


class PriorStoreError(ValueError):
    """Stored priors missing, damaged, or asked for images they were not computed for."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (the primary checkpoint), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_params(params: Mapping) -> str:
    """Short stable hash of the extraction parameters (JSON with sorted keys)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PriorManifest:
    """What a set of stored maps was computed from; equal manifests mean reusable maps."""

    method: str
    layer: str | None
    checkpoint_sha256: str
    params_hash: str
    split: str
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))


@dataclass(frozen=True)
class PriorMaps:
    """Maps N×H×W float16 in [0, 1] in the order of ``manifest.ids``."""

    manifest: PriorManifest
    maps: np.ndarray

    def for_split(self, split: str, ids: Sequence[str]) -> np.ndarray:
        """The maps of ``ids`` in that order; stops if they belong to another split or set.

        Guards the training loop against pairing images with another image's prior.
        """
        if split != self.manifest.split:
            raise PriorStoreError(
                f"priors ({self.manifest.method}) were computed for split "
                f"{self.manifest.split!r}, not {split!r}")
        position = {image_id: i for i, image_id in enumerate(self.manifest.ids)}
        missing = [i for i in ids if str(i) not in position]
        if missing:
            raise PriorStoreError(
                f"priors ({self.manifest.method}, split {split!r}) lack {len(missing)} of the "
                f"{len(ids)} requested image ids, e.g. {missing[:3]}; recompute them for this "
                f"id list")
        return self.maps[[position[str(i)] for i in ids]]


class PriorStore:
    """Prior maps of one study, one file per (method, split)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def paths(self, method: str, split: str) -> tuple[Path, Path]:
        """(maps file, manifest file) for a method and split."""
        folder = self.root / method
        return folder / f"{split}.npz", folder / f"{split}.json"

    def load(self, method: str, split: str) -> PriorMaps:
        """The stored maps of ``method`` for ``split``, whatever made them."""
        maps_path, manifest_path = self.paths(method, split)
        if not manifest_path.is_file():
            raise PriorStoreError(f"{manifest_path}: no stored priors for method {method!r}, "
                                  f"split {split!r}")
        manifest = PriorManifest(**json.loads(manifest_path.read_text()))
        with np.load(maps_path) as z:
            maps = z["maps"]
        if maps.shape[0] != len(manifest.ids):
            raise PriorStoreError(f"{maps_path}: holds {maps.shape[0]} maps but its manifest "
                                  f"lists {len(manifest.ids)} image ids")
        return PriorMaps(manifest, maps)

    def cached(self, manifest: PriorManifest) -> PriorMaps | None:
        """The stored maps if they were made from exactly ``manifest``'s inputs, else None."""
        _, manifest_path = self.paths(manifest.method, manifest.split)
        if not manifest_path.is_file():
            return None
        stored = self.load(manifest.method, manifest.split)
        return stored if stored.manifest == manifest else None

    def save(self, manifest: PriorManifest, maps: np.ndarray) -> PriorMaps:
        """Write maps (as float16) and then their manifest, each atomically."""
        maps = np.asarray(maps, dtype=np.float16)
        if maps.ndim != 3 or maps.shape[0] != len(manifest.ids):
            raise PriorStoreError(f"maps must be N×H×W with N = {len(manifest.ids)} image ids, "
                                  f"got shape {maps.shape}")
        maps_path, manifest_path = self.paths(manifest.method, manifest.split)
        atomic_write(maps_path, lambda tmp: np.savez_compressed(tmp, maps=maps))
        text = json.dumps(asdict(manifest), indent=1)
        write_text(manifest_path, text)
        return PriorMaps(manifest, maps)

    def get_or_compute(
        self, manifest: PriorManifest, compute: Callable[[], np.ndarray]
    ) -> PriorMaps:
        """Reuse the stored maps for ``manifest`` or compute, store and return them."""
        stored = self.cached(manifest)
        if stored is not None:
            return stored
        return self.save(manifest, compute())
