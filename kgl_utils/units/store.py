"""Content-addressed run units on disk.

A unit's key hashes its kind, its own settings (``spec``), the keys of the units it consumes and
the version of the code that computes it, so a unit is reused exactly when nothing it depends on
changed. Each unit owns a folder ``<root>/<kind>/<key>/``; its outputs are written there
atomically and its manifest last, so a unit is done exactly when its manifest names outputs that
all exist. Nothing outside the folder (a table row, say) ever marks a unit as done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from kgl_utils import __version__
from kgl_utils.paths import MANIFEST, PACKAGE_DIR, ROW
from kgl_utils.results import git_commit, write_json

COMPUTING_CODE = ("data", "models", "saliency", "evaluation", "units", "losses.py",
                  "training.py", "distillation.py", "device.py")
"""The parts of the package whose changes change numbers (relative to the package folder).
Plots, report, widgets, the runner and the stages' tables and figures are left out, so editing
a figure retrains nothing; so is this store, which keeps units but computes none."""
BOOKKEEPING = ("units/store.py",)

STALE_MARK = ".recompute_before.json"


def code_version(package: str | os.PathLike = PACKAGE_DIR,
                 parts: tuple[str, ...] = COMPUTING_CODE) -> str:
    """Hash of the computing modules' source (path and text of every ``.py`` file in ``parts``
    but the bookkeeping ones)."""
    package = Path(package)
    digest = hashlib.sha256()
    for part in parts:
        path = package / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in (f for f in files if f.relative_to(package).as_posix() not in BOOKKEEPING):
            digest.update(file.relative_to(package).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def current_code_version() -> str:
    """The installed package's code version, computed once per process."""
    return code_version()


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"a unit spec holds {type(obj).__name__}, which has no canonical form")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain)


@dataclass(frozen=True)
class Unit:
    """One piece of work: its kind, its settings and the keys of the units it consumes."""

    kind: str
    spec: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    code: str = field(default_factory=current_code_version)

    def __post_init__(self) -> None:  # plain JSON values: what the manifest records
        object.__setattr__(self, "spec", json.loads(_canonical(self.spec)))
        object.__setattr__(self, "inputs", tuple(self.inputs))

    @cached_property
    def key(self) -> str:
        text = _canonical({"kind": self.kind, "spec": self.spec, "inputs": self.inputs,
                           "code": self.code})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DoneUnit:
    """A finished unit: its folder and manifest."""

    folder: Path
    manifest: Mapping[str, Any]

    def file(self, name: str) -> Path:
        return self.folder / name

    def metrics(self) -> dict[str, Any]:
        """What the unit measured (its ``row.json``)."""
        return json.loads(self.file(ROW).read_text())

    def provenance(self) -> dict[str, str]:
        """The commit and package version of the run that made the unit."""
        return {"git_commit": self.manifest["git_commit"],
                "kgl_utils": self.manifest["kgl_utils"]}


class UnitStore:
    """The units of one study under ``root`` (``results/<study>/units``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def folder(self, unit: Unit) -> Path:
        return self.root / unit.kind / unit.key

    def _recompute_before(self, kind: str) -> float:
        mark = self.root / kind / STALE_MARK
        return json.loads(mark.read_text())["time"] if mark.is_file() else float("-inf")

    def done(self, unit: Unit) -> DoneUnit | None:
        """The unit if it is done, else None: missing, incomplete, or marked for recompute."""
        path = self.folder(unit) / MANIFEST
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        complete = all((self.folder(unit) / name).is_file() for name in manifest["outputs"])
        fresh = manifest["finished"] >= self._recompute_before(unit.kind)
        if manifest["key"] != unit.key or not complete or not fresh:
            return None
        return DoneUnit(self.folder(unit), manifest)

    def ensure(self, unit: Unit, compute: Callable[[Path], Mapping[str, Any]]) -> DoneUnit:
        """The done unit, computing it first unless it is done already.

        ``compute(folder)`` writes the unit's outputs into ``folder`` (each atomically; a
        half-done run may leave a checkpoint there to resume from) and returns the manifest's
        ``outputs``: file name → what it holds. The manifest is written last.
        """
        done = self.done(unit)
        if done is not None:
            return done
        folder = self.folder(unit)
        if (folder / MANIFEST).is_file():  # done once, no longer: marked, or an output lost
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        outputs = dict(compute(folder))
        manifest = {
            "key": unit.key, "kind": unit.kind, "spec": unit.spec, "inputs": list(unit.inputs),
            "code": unit.code, "outputs": outputs, "git_commit": git_commit(),
            "kgl_utils": __version__, "seconds": time.perf_counter() - began,
            "finished": time.time(),
        }
        write_json(folder / MANIFEST, manifest)
        return DoneUnit(folder, json.loads((folder / MANIFEST).read_text()))

    def manifests(self) -> list[dict[str, Any]]:
        """The manifest of every unit on disk, done or since superseded (the caller filters,
        e.g. by ``git_commit``)."""
        return [json.loads(path.read_text())
                for path in sorted(self.root.glob(f"*/*/{MANIFEST}"))]

    def mark_for_recompute(self, kinds: tuple[str, ...]) -> None:
        """``--force``: every unit of these kinds finished before now counts as not done. The
        mark persists, so a forced run that is killed resumes with what it recomputed."""
        now = time.time()
        for kind in kinds:
            write_json(self.root / kind / STALE_MARK, {"time": now})
