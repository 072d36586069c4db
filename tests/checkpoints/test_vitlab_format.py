"""vitlab's own format: round trips, atomic saves, and `convert` between formats."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.checkpoints import convert, detect_format, files, load_pretrained, save_pretrained
from vitlab.data.preprocessing import Preprocessing
from vitlab.errors import VitlabError


def test_round_trip(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(gelu="tanh", layer_norm_eps=1e-5, img_size=(16, 20), global_pool="avg")
    model.preprocessing = Preprocessing((16, 20), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear", 0.875)
    model.labels = list("abcde")
    vitlab.save_pretrained(model, tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt").kind == "vitlab"
    loaded = vitlab.load_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.preprocessing == model.preprocessing and loaded.labels == model.labels
    x = inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training


def test_weights_file_inside_a_vitlab_folder(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(), tmp_path)
    assert detect_format(tmp_path / "model.safetensors").kind == "vitlab"


def test_behaviour_overrides_and_resampling(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(), tmp_path)
    loaded = load_pretrained(tmp_path, gelu="tanh", img_size=24, mean=0.0, std=1.0)
    assert loaded.config.gelu == "tanh" and loaded.config.img_size == (24, 24)
    assert loaded.preprocessing.img_size == (24, 24) and loaded.preprocessing.mean == (0.0, 0.0, 0.0)


def test_interrupted_save_keeps_previous_checkpoint(
    tmp_path: Path, make_vit: Callable, inputs: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = make_vit(seed=1), make_vit(seed=2)
    folder = tmp_path / "ckpt"
    save_pretrained(old, folder)
    (folder / "README.md").write_text("mine")

    def crash(tensors: dict, path: str, metadata: dict | None = None) -> None:
        Path(path).write_bytes(b"partial" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(new, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    x = inputs(old)
    with torch.no_grad():
        assert torch.equal(load_pretrained(folder)(x), old(x))


def test_files_from_different_saves_are_detected(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(seed=1), tmp_path / "a")
    save_pretrained(make_vit(seed=2), tmp_path / "b")
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(VitlabError, match="come from different saves"):
        load_pretrained(tmp_path / "a")


def test_newer_format_version(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "version": 2}))
    with pytest.raises(VitlabError, match="config.json: format version 2 is not one this vitlab reads"):
        load_pretrained(tmp_path)


def test_bad_architecture_field(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architecture"]["gelu"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VitlabError, match="config.json: architecture: ViT option gelu='relu'"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("to", ["vitlab", "hf", "timm"])
def test_convert_round_trip(to: str, tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(img_size=(16, 24))
    save_pretrained(model, tmp_path / "source")
    out = convert(tmp_path / "source", tmp_path / ("out.safetensors" if to == "timm" else "out"), to=to)
    extra = dict(num_heads=4, img_size=(16, 24)) if to == "timm" else {}
    x = inputs(model)
    with torch.no_grad():
        assert torch.equal(load_pretrained(out, **extra)(x), model(x))


def test_convert_arguments(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(), tmp_path / "source")
    with pytest.raises(VitlabError, match="unknown target format 'onnx'"):
        convert(tmp_path / "source", tmp_path / "out", to="onnx")
    with pytest.raises(VitlabError, match="give a path ending in .safetensors"):
        convert(tmp_path / "source", tmp_path / "out", to="timm")
