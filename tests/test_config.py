"""Params files load into typed objects; bad ones fail before any work, naming key and value."""

from pathlib import Path

import pytest
import yaml

from kgl_utils.config import ConfigError, ScaleProfile, StudyConfig, load_params

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base() -> dict:
    return yaml.safe_load((REPO / "params" / "default.yaml").read_text())


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_committed_params_file_loads(path):
    config = load_params(path)
    assert isinstance(config, StudyConfig)
    assert isinstance(config.scale, ScaleProfile)


def test_types_are_kept(tmp_path, base):
    config = load_params(write(tmp_path, base))
    assert config.scale.input_size == (128, 128)
    assert isinstance(config.seeds, tuple) and config.seeds == (0, 1, 2)
    assert isinstance(config.segdec.w_pos, float)  # the YAML may say 1; the code gets 1.0
    assert config.guided.prior_as_input == (False,)
    assert config.ablation.priors == ("layercam",)


def test_prior_layer_is_one_name_a_list_or_null(tmp_path, base):
    assert load_params(write(tmp_path, base)).prior.layer is None
    base["prior"]["layer"] = "features.29"
    assert load_params(write(tmp_path, base)).prior.layer == "features.29"
    base["prior"]["layer"] = ["features.22", "features.29"]
    assert load_params(write(tmp_path, base)).prior.layer == ("features.22", "features.29")


def test_profile_override_changes_scale_and_hash(tmp_path, base):
    path = write(tmp_path, base)
    cpu, gpu = load_params(path), load_params(path, profile="gpu")
    assert gpu.scale.width == 1.0 and cpu.scale.width == 0.125
    assert cpu.params_hash() != gpu.params_hash()
    assert cpu.params_hash() == load_params(path).params_hash()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(colour="red"), "colour: unknown key; allowed keys are study"),
    (lambda d: d["segdec"].update(learning_rate=1), "segdec.learning_rate: unknown key"),
    (lambda d: d["profiles"]["cpu"].update(epochs=-3), "profiles.cpu.epochs: -3 is not allowed"),
    (lambda d: d["profiles"]["cpu"].update(epochs="ten"), "profiles.cpu.epochs: 'ten'"),
    (lambda d: d["profiles"]["cpu"].update(weak_lr=0), "profiles.cpu.weak_lr: 0.0 is not allowed"),
    (lambda d: d["data"].update(dataset="mnist"), "data.dataset: 'mnist' is not allowed; "
                                                   "expected one of synthetic"),
    (lambda d: d["primary"].update(model="alexnet"), "primary.model: 'alexnet'"),
    (lambda d: d["prior"].update(methods=["gradcam", "magic"]),
     "prior.methods[1]: 'magic' is not allowed; expected one of fullgrad"),
    (lambda d: d["ablation"].update(n_a=[0, -1]), "ablation.n_a: -1"),
    (lambda d: d.update(profile="tpu"), "profile: 'tpu' is not allowed; expected one of the "
                                        "profiles defined: cpu, cpu_bf16, gpu"),
    (lambda d: d["segdec"].update(dynamic_balance="yes"), "segdec.dynamic_balance: 'yes' is not "
                                                          "allowed; expected true or false"),
    (lambda d: d["data"].update(folds=[0, 1]), "data.folds: (0, 1) is not allowed"),
    (lambda d: d["prior"].update(pseudo_mask="fixed"), "prior.threshold: None"),
    (lambda d: d.pop("study"), "study: required key is missing"),
    (lambda d: d["ablation"].update(priors=["gradcam"]), "ablation.priors: 'gradcam' is not "
                                                         "allowed; expected a method of prior"),
    (lambda d: d["ablation"].update(priors=["random"]), "ablation.priors[0]: 'random' is not "
                                                        "allowed; expected one of fullgrad"),
    (lambda d: d["ablation"].update(controls=["random", "oracle"], prior_as_input=True),
     "ablation.prior_as_input: True is not allowed; expected false while ablation.controls "
     "holds oracle"),
    (lambda d: d["ablation"].update(controls=["shuffled"], prior_as_input=True),
     "ablation.prior_as_input: True is not allowed; expected false while ablation.controls "
     "holds shuffled"),
    (lambda d: d["data"].update(dataset="elpv", root=None, options={}),
     "prior.controls: ('random', 'full', 'oracle') is not allowed; expected no oracle: "
     "dataset elpv"),
    (lambda d: d["prior"].update(layer=[]), "prior.layer: () is not allowed; expected null, a "
                                            "dotted layer name (e.g. features.29) or a non-empty"),
    (lambda d: d["prior"].update(layer=["features.22", "features.22"]),
     "prior.layer: ('features.22', 'features.22') is not allowed"),
    (lambda d: d["prior"].update(layer="features 29"), "prior.layer: 'features 29' is not allowed"),
    (lambda d: d["prior"].update(layer=["features.22", 29]), "prior.layer: ['features.22', 29] "
                                                             "is not allowed"),
    (lambda d: d["prior"].update(quality_methods=["fullgrad"]),
     "prior.quality_methods: ('fullgrad',) is not allowed; expected distinct saliency methods "
     "that are not in prior.methods"),
    (lambda d: d["prior"].update(quality_methods=["fullgrad_ref"]),
     "prior.quality_methods[0]: 'fullgrad_ref' is not allowed; expected one of fullgrad, "
     "fullgrad_reference"),
    (lambda d: d["distillation"].update(teacher_weights="r18.pth"),
     "distillation.teacher_weights: 'r18.pth' is not allowed; expected null unless teacher is "
     "pretrained"),
    (lambda d: d["distillation"].update(teacher="pretrained", teacher_arch="resnet18"),
     "distillation.teacher_weights: None is not allowed; expected a local weights file for a "
     "resnet18 teacher"),
    (lambda d: d["distillation"].update(teacher="imagenet"), "distillation.teacher: 'imagenet'"),
    (lambda d: d["ablation"].update(priors=["fullgrad_reference"]),  # table only: no cells
     "ablation.priors: 'fullgrad_reference' is not allowed; expected a method of prior.methods"),
])
def test_bad_params_name_key_and_value(tmp_path, base, edit, message):
    edit(base)
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, base))
    assert message in str(err.value)
    assert str(tmp_path / "params.yaml") in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml: params file not found"):
        load_params(tmp_path / "nowhere.yaml")
