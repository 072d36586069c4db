"""Hugging Face ViT ↔ vitlab on random transformers models of several shapes, built in the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from vitlab.checkpoints import convert, detect_format, load_pretrained, save_pretrained
from vitlab.errors import VitlabError

transformers = pytest.importorskip("transformers")

SHAPES = {
    "non-square, no qkv bias, grey": dict(
        image_size=[32, 48], patch_size=8, num_channels=1, qkv_bias=False, num_attention_heads=2
    ),
    "tanh gelu, 7 labels": dict(num_attention_heads=8, hidden_act="gelu_pytorch_tanh", num_labels=7),
    "gelu_new, eps 1e-6": dict(image_size=24, patch_size=6, num_attention_heads=1, hidden_act="gelu_new", layer_norm_eps=1e-6),
}


def hf_config(**overrides: Any) -> Any:
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
    base.update(image_size=16, patch_size=4, num_labels=3)
    return transformers.ViTConfig(**{**base, **overrides})


def pixels(config: Any, seed: int = 0) -> torch.Tensor:
    size = config.image_size if isinstance(config.image_size, list) else [config.image_size] * 2
    return torch.randn(2, config.num_channels, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_classifier(shape: str, tmp_path: Path, randomize: Callable) -> None:
    config = hf_config(**SHAPES[shape])
    hf = randomize(transformers.ViTForImageClassification(config), seed=1)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    x = pixels(config)
    with torch.no_grad():
        assert (model(x) - hf(pixel_values=x).logits).abs().max().item() <= 1e-5
        assert (model.forward_features(x) - hf.vit(pixel_values=x).last_hidden_state).abs().max().item() <= 1e-5
    assert model.config.layer_norm_eps == config.layer_norm_eps
    assert model.config.num_heads == config.num_attention_heads
    assert model.config.gelu == ("exact" if config.hidden_act == "gelu" else "tanh")


def test_model_with_pooler(tmp_path: Path, randomize: Callable) -> None:
    """ViTModel: no `vit.` prefix; its tanh pooler is the pre-logits layer (here narrower than the width)."""
    config = hf_config(pooler_output_size=24)
    hf = randomize(transformers.ViTModel(config), seed=2)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert model.config.representation_size == 24 and model.config.num_classes == 0 and model.labels is None
    x = pixels(config)
    with torch.no_grad():
        out = hf(pixel_values=x)
        features = model.forward_features(x)
        assert (features - out.last_hidden_state).abs().max().item() <= 1e-5
        assert (model.forward_head(features, pre_logits=True) - out.pooler_output).abs().max().item() <= 1e-5


def test_in_memory_names_without_config(tmp_path: Path, randomize: Callable) -> None:
    """torch.save of a transformers ≥ 5 state dict (q_proj, layers.N) loads; eps defaults to HF's 1e-12."""
    config = hf_config()
    hf = randomize(transformers.ViTForImageClassification(config), seed=3)
    torch.save(hf.state_dict(), tmp_path / "weights.pth")
    fmt = detect_format(tmp_path / "weights.pth")
    assert (fmt.kind, fmt.layout) == ("hf", "state dict")
    model = load_pretrained(tmp_path / "weights.pth", num_heads=4)
    assert model.config.layer_norm_eps == 1e-12
    x = pixels(config)
    with torch.no_grad():
        assert (model(x) - hf(pixel_values=x).logits).abs().max().item() <= 1e-5


def test_labels_and_preprocessing(tmp_path: Path, randomize: Callable) -> None:
    config = hf_config(id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    randomize(transformers.ViTForImageClassification(config)).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"image_mean": [0.1, 0.2, 0.3], "image_std": [1, 2, 3], "resample": 3}')
    model = load_pretrained(tmp_path)
    assert model.labels == ["cat", "dog", "fox"]
    assert model.preprocessing.mean == (0.1, 0.2, 0.3) and model.preprocessing.std == (1.0, 2.0, 3.0)
    assert model.preprocessing.interpolation == "bicubic" and model.preprocessing.img_size == (16, 16)


@pytest.mark.parametrize("overrides", [dict(), dict(img_size=(16, 24), gelu="tanh", in_chans=1, qkv_bias=False)])
def test_written_folder_loads_in_transformers(overrides: dict, tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(num_classes=3, **overrides)
    model.labels = ["a", "b", "c"]
    save_pretrained(model, tmp_path / "vitlab")
    convert(tmp_path / "vitlab", tmp_path / "hf", to="hf")
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    x = inputs(model)
    with torch.no_grad():
        assert (hf(pixel_values=x).logits - model(x)).abs().max().item() <= 1e-5
    assert hf.config.id2label == {0: "a", 1: "b", 2: "c"}
    again = load_pretrained(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert again.preprocessing == model.preprocessing


def test_pooler_model_written_as_vit_model(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(num_classes=0, representation_size=24)
    convert_target = tmp_path / "hf"
    save_pretrained(model, tmp_path / "vitlab")
    convert(tmp_path / "vitlab", convert_target, to="hf")
    hf = transformers.ViTModel.from_pretrained(convert_target).eval()
    x = inputs(model)
    with torch.no_grad():
        assert (hf(pixel_values=x).pooler_output - model(x)).abs().max().item() <= 1e-5


def test_unrepresentable_model_is_refused(tmp_path: Path, make_vit: Callable) -> None:
    save_pretrained(make_vit(global_pool="avg", fc_norm=True), tmp_path / "vitlab")
    with pytest.raises(VitlabError, match="average pooling, which Hugging Face.s ViT cannot express"):
        convert(tmp_path / "vitlab", tmp_path / "hf", to="hf")


def test_unsupported_activation(tmp_path: Path, randomize: Callable) -> None:
    randomize(transformers.ViTForImageClassification(hf_config(hidden_act="relu"))).save_pretrained(tmp_path)
    with pytest.raises(VitlabError, match="hidden_act 'relu' is not supported"):
        load_pretrained(tmp_path)


def test_config_that_contradicts_its_tensors(tmp_path: Path, randomize: Callable) -> None:
    randomize(transformers.ViTForImageClassification(hf_config())).save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"intermediate_size": 40', '"intermediate_size": 64')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(VitlabError, match=r"contradicts itself: .*intermediate_size says mlp_dim=64.*fc1.weight \(40, 32\)"):
        load_pretrained(tmp_path)
