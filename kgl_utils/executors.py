"""Executors: what computes a study's grid before its notebooks assemble the tables.

``local`` (the default) computes the units one after another in this process. ``ray`` sends
each unit as a Ray task to a Ray cluster (this machine's, or many machines'), with a resource
request per task, a unit's task waiting for the tasks of the units it reads (primaries before
priors before cells). Every task computes its unit through the same recipe into the same unit
store as the local executor, so tables, resume and provenance do not depend on the executor.
Ray is imported only by the ``ray`` executor.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from kgl_utils.grid import Job, study_grid
from kgl_utils.stages.context import StudyContext

EXECUTORS = ("local", "ray")
RETRIES = 3
"""How often Ray runs a unit's task again when its worker process dies (killed, out of memory,
its node lost); the new attempt resumes from the unit's checkpoint. An exception raised by the
computation itself is not retried: it would be raised again."""


class ExecutorError(RuntimeError):
    """The grid could not be computed: options or a cluster that cannot run it, or units that
    failed (each named with its error)."""


@dataclass(frozen=True)
class StudyRef:
    """What opens one study in any process: its params file, profile and results root, as
    absolute paths (every machine of a cluster must see them at the same place)."""

    params_path: Path
    profile: str | None
    results_root: Path

    def open(self) -> StudyContext:
        return StudyContext.open(self.params_path, self.profile, self.results_root)


class Executor(Protocol):
    def compute(self, study: StudyRef, notebooks: Sequence[str]) -> None:
        """Compute every unit the named notebooks (stems) read that is not done yet."""


def pending(ctx: StudyContext, notebooks: Sequence[str]) -> list[tuple[Job, str, tuple]]:
    """The grid's units that are not done: (job, key, input keys), inputs before readers."""
    grid = study_grid(ctx, notebooks)
    todo = [(job, unit.key, unit.inputs) for job, unit in grid if ctx.units.done(unit) is None]
    print(f"{len(todo)} of {len(grid)} units to compute", flush=True)
    return todo


class LocalExecutor:
    """Every unit in this process, one after another, in the grid's order."""

    def compute(self, study: StudyRef, notebooks: Sequence[str]) -> None:
        ctx = study.open()
        todo = pending(ctx, notebooks)
        for i, (job, _, _) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {job}", flush=True)
            job.compute(ctx)


@cache
def _opened(study: StudyRef) -> StudyContext:
    """One context per study and Ray worker process (its decoded arrays are reused)."""
    return study.open()


def compute_unit(study: StudyRef, job: Job, key: str, threads: int, *inputs: str) -> str:
    """A Ray task: compute one unit into the study's unit store; ``inputs`` are the keys the
    tasks of the units it reads returned (Ray runs it only once they have). Refuses a unit
    whose key differs from the driver's: that machine runs other code, device or precision."""
    torch.set_num_threads(threads)
    ctx = _opened(study)
    unit = job.unit(ctx)
    if unit.key != key:
        raise ExecutorError(
            f"{job}: unit {key} on the machine that dispatched it, {unit.key} on "
            f"{socket.gethostname()}; every machine must see the same params file, run the "
            f"same kgl_utils checkout and resolve the same device type and precision")
    job.compute(ctx)
    return key


@dataclass(frozen=True)
class RayExecutor:
    """Every unit as a Ray task on the Ray cluster whose head is at ``address`` (HOST:PORT).
    None: ``RAY_ADDRESS``, else the cluster ``ray start`` runs on this machine, else a Ray
    instance started on this machine for this run (``ray.init``'s rules). A process already
    connected to Ray (a test, a notebook) keeps its connection.

    Each task asks for ``cpus_per_unit`` CPUs (its torch threads) and, when the study's device
    is CUDA, ``gpus_per_unit`` GPUs (1: one unit per GPU). Tasks of a unit that is already done
    are never sent; those whose worker dies are retried (``RETRIES``). Units whose computation
    raises are reported together after every other unit has finished.
    """

    address: str | None = None
    cpus_per_unit: int = 1
    gpus_per_unit: float = 1.0

    def __post_init__(self) -> None:
        if self.cpus_per_unit < 1:
            raise ExecutorError(f"CPUs per unit must be at least 1, got {self.cpus_per_unit}")
        if not 0 < self.gpus_per_unit <= 1:
            raise ExecutorError(f"GPUs per unit must be in (0, 1], got {self.gpus_per_unit}")

    def compute(self, study: StudyRef, notebooks: Sequence[str]) -> None:
        import ray

        started = not ray.is_initialized()
        if started:  # worker logs stay in Ray's session folder; progress is the bar here
            ray.init(address=self.address, log_to_driver=False)
        try:
            self._compute(ray, study, notebooks)
        finally:
            if started:
                ray.shutdown()

    def _resources(self, ray, ctx: StudyContext) -> dict[str, float]:
        """The request of one unit's task, checked against what the cluster's nodes have."""
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        request = {"num_cpus": self.cpus_per_unit,
                   "num_gpus": self.gpus_per_unit if ctx.device.type == "cuda" else 0}
        for resource, amount in (("CPU", request["num_cpus"]), ("GPU", request["num_gpus"])):
            largest = max((n.get(resource, 0) for n in nodes), default=0)
            if amount > largest:
                raise ExecutorError(
                    f"a unit asks for {amount} {resource} (device {ctx.device.type}), but no "
                    f"node of the Ray cluster has more than {largest}")
        return request

    def _compute(self, ray, study: StudyRef, notebooks: Sequence[str]) -> None:
        ctx = study.open()
        options = self._resources(ray, ctx) | {"max_retries": RETRIES}
        # Decoded once here, so that no two tasks write a dataset or its cache at once.
        for fold in ctx.folds:
            for split in ctx.dataset(fold).splits:
                ctx.arrays(split, fold)
        todo = pending(ctx, notebooks)
        if not todo:
            return
        task = ray.remote(compute_unit)
        refs, keys = {}, {}
        for job, key, inputs in todo:
            ready = [refs[k] for k in inputs if k in refs]
            ref = task.options(name=str(job), **options).remote(
                study, job, key, self.cpus_per_unit, *ready)
            refs[key], keys[ref] = ref, key
        errors: dict[str, Exception] = {}
        waiting = list(refs.values())
        with tqdm(total=len(waiting), desc="units", unit="unit") as bar:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        errors[keys[ref]] = exc
                    bar.update()
        if errors:
            raise ExecutorError(failure_report(todo, errors))


def failure_report(todo: list[tuple[Job, str, tuple]], errors: dict[str, Exception]) -> str:
    """Each failed unit with its error; the units that failed only because a unit they read
    did are named, without the same error again."""
    failed = [(job, errors[key]) for job, key, inputs in todo
              if key in errors and not set(inputs) & set(errors)]
    skipped = [str(job) for job, key, inputs in todo if key in errors and set(inputs) & set(errors)]
    text = f"{len(failed)} of {len(todo)} units failed; the units computed are stored:\n"
    text += "\n".join(f"{job}: {error}" for job, error in failed)
    if skipped:
        text += (f"\n{len(skipped)} units were not computed, because a unit they read failed: "
                 + "; ".join(skipped))
    return text


def make_executor(name: str, address: str | None = None, cpus_per_unit: int | None = None,
                  gpus_per_unit: float | None = None) -> Executor:
    """The executor the command line names; the Ray options (None: not given) are refused for
    any other, so that a forgotten ``--executor ray`` does not silently run here."""
    given = {option: value for option, value in (("address", address),
                                                 ("cpus_per_unit", cpus_per_unit),
                                                 ("gpus_per_unit", gpus_per_unit))
             if value is not None}
    if name == "ray":
        return RayExecutor(**given)
    if name not in EXECUTORS:
        raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if given:
        flags = ", ".join("--" + option.replace("_", "-") for option in given)
        raise ExecutorError(f"{flags} apply to --executor ray only")
    return LocalExecutor()
