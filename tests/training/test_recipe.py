"""TrainConfig: defaults, presets, config files (YAML and JSON), validation."""

from __future__ import annotations

import json

import pytest

from vitlab.errors import VitlabError
from vitlab.training.recipe import TrainConfig, preset_for, presets


def test_defaults_are_deits_regularisation():
    config = TrainConfig()
    assert (config.weight_decay, config.label_smoothing, config.drop_path_rate) == (0.05, 0.1, 0.1)
    assert (config.mixup_alpha, config.cutmix_alpha, config.randaugment, config.random_erasing) == (0.8, 1.0, (2, 9), 0.25)
    assert config.optimizer == "adamw" and config.ema_decay is None and config.precision == "fp32"


@pytest.mark.parametrize("name", ["digits", "mnist", "MNIST"])
def test_digits_are_never_flipped(name):
    preset = preset_for(name)
    assert preset["hflip"] is False and preset["randaugment"] is None and preset["crop_scale"] is None
    config = TrainConfig.resolve(data=name)
    assert config.hflip is False and config.data == name.lower()


def test_cifar_preset_flips_crops_and_randaugments():
    config = TrainConfig.resolve(data="cifar10")
    assert config.hflip and config.crop_padding == 4 and config.randaugment == (2, 9)
    assert preset_for("cifar-100")["model"] == "vit_cifar_patch4_32"
    assert preset_for("my-own-data") == {}
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"} <= set(presets())


def test_resolve_order_is_defaults_preset_file_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: mnist\nlr: 3e-4\nepochs: 7\nrandaugment: [1, 5]\nema_decay: 0.99\n")
    config = TrainConfig.resolve(path, epochs=2)
    assert config.data == "mnist" and config.hflip is False  # the file's dataset picks the preset
    assert config.lr == 3e-4  # YAML reads 1e-3 without a dot as a string: converted
    assert (config.epochs, config.randaugment, config.ema_decay) == (2, (1, 5), 0.99)
    assert TrainConfig.from_file(path).epochs == 7


def test_json_round_trip(tmp_path):
    config = TrainConfig.resolve(data="cifar10", lr=5e-4, crop_scale=[0.5, 1.0])
    path = tmp_path / "config.json"
    config.save(path)
    assert json.loads(path.read_text())["crop_scale"] == [0.5, 1.0]
    assert TrainConfig.from_file(path) == config
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_unknown_keys_list_the_valid_ones(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"learning_rate": 0.1, "epochs": 3}')
    with pytest.raises(VitlabError, match=r"bad.json: unknown training field\(s\) learning_rate.*valid: .*\blr\b"):
        TrainConfig.from_file(path)
    with pytest.raises(VitlabError, match="batchsize \\(did you mean batch_size\\?\\)"):
        TrainConfig.resolve(batchsize=3)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"lr": "fast"}, "lr must be a number"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"precision": "fp8"}, "precision must be fp32, bf16, fp16"),
        ({"randaugment": [2, 40]}, "randaugment"),
        ({"crop_scale": [0.9, 0.1]}, "crop_scale"),
        ({"mix_prob": 1.5}, "mix_prob must be between 0 and 1"),
        ({"hflip": "yes"}, "hflip must be true or false"),
        ({"min_lr": 1.0}, "min_lr must be at most lr"),
    ],
)
def test_bad_values_are_one_line_errors(values, match):
    with pytest.raises(VitlabError, match=match):
        TrainConfig.from_dict(values)


def test_bad_files(tmp_path):
    with pytest.raises(VitlabError, match="no such config file"):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(VitlabError, match="mapping"):
        TrainConfig.from_file(tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(VitlabError, match="not valid JSON"):
        TrainConfig.from_file(tmp_path / "broken.json")


def test_yaml_without_pyyaml_says_what_to_do(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    with pytest.raises(VitlabError, match="needs PyYAML.*or write the config as JSON"):
        TrainConfig.from_file(tmp_path / "c.yaml")
