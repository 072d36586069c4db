"""timm state dicts: what the tensors say about the architecture, and what they don't."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vitlab.checkpoints import convert, detect_format, load_pretrained, save_pretrained
from vitlab.checkpoints.timm import infer_config
from vitlab.models.registry import create_model
from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer


def save_timm(model: VisionTransformer, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def same_logits(a: VisionTransformer, b: VisionTransformer, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item() <= 1e-6


VARIANTS = {
    "avg pool + fc_norm": dict(global_pool="avg", fc_norm=True),
    "no class token": dict(class_token=False, global_pool="avg"),
    "pre-logits": dict(representation_size=24),
    "no qkv bias, no head": dict(qkv_bias=False, num_classes=0),
    "grey, patch 8": dict(in_chans=1, patch_size=8, img_size=32, mlp_dim=20),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_inferred_from_tensors(variant: str, tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(**VARIANTS[variant])
    loaded = load_pretrained(save_timm(model, tmp_path / "model.safetensors"), num_heads=4)
    assert loaded.config == model.config
    assert same_logits(loaded, model, inputs(model))
    assert loaded.preprocessing.mean == (0.5,) * model.config.in_chans and loaded.labels is None


def test_registry_name_supplies_heads(tmp_path: Path, randomize: Callable, inputs: Callable) -> None:
    model = randomize(create_model("vit_mnist_patch7_28"))
    loaded = load_pretrained(save_timm(model, tmp_path / "mnist.safetensors"), model="vit_mnist_patch7_28")
    assert loaded.config.num_heads == 4 and same_logits(loaded, model, inputs(model))


def test_container_and_ddp_prefix(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, tmp_path / "checkpoint.pth")
    assert detect_format(tmp_path / "checkpoint.pth").kind == "timm"
    assert same_logits(load_pretrained(tmp_path / "checkpoint.pth", num_heads=4), model, inputs(model))


def test_non_square_needs_img_size(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(img_size=(16, 24))
    path = save_timm(model, tmp_path / "wide.safetensors")
    with pytest.raises(VitlabError, match=r"24 patch positions, not a square grid.*img_size=\(height, width\)"):
        load_pretrained(path, num_heads=4)
    assert same_logits(load_pretrained(path, num_heads=4, img_size=(16, 24)), model, inputs(model))


def test_resample_modes(tmp_path: Path, make_vit: Callable) -> None:
    path = save_timm(make_vit(), tmp_path / "model.safetensors")
    bicubic = load_pretrained(path, num_heads=4, img_size=(24, 32))
    bilinear = load_pretrained(path, num_heads=4, img_size=(24, 32), pos_embed_resample="bilinear")
    assert bicubic.pos_embed.shape == (1, 1 + 6 * 8, 32)
    assert torch.equal(bicubic.pos_embed[:, 0], bilinear.pos_embed[:, 0])
    assert not torch.allclose(bicubic.pos_embed, bilinear.pos_embed)
    assert bicubic.preprocessing.img_size == (24, 32)


def test_sincos_model_exports_its_table(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    """timm has no fixed sin-cos option: the table is written as a learned pos_embed with the same values."""
    model = make_vit(pos_embed="sincos2d")
    convert_source = tmp_path / "vitlab"
    save_pretrained(model, convert_source)
    assert load_pretrained(convert_source).config.pos_embed == "sincos2d"
    convert(convert_source, tmp_path / "timm.safetensors", to="timm")
    loaded = load_pretrained(tmp_path / "timm.safetensors", num_heads=4)
    assert loaded.config.pos_embed == "learned" and same_logits(loaded, model, inputs(model))


def test_hub_folder(tmp_path: Path, make_vit: Callable) -> None:
    """timm's hub layout: config.json with architecture + pretrained_cfg beside model.safetensors."""
    model = make_vit()
    save_timm(model, tmp_path / "model.safetensors")
    config = {
        "architecture": "not_registered_vit",
        "num_classes": 5,
        "global_pool": "token",
        "label_names": list("abcde"),
        "pretrained_cfg": {
            "input_size": [3, 16, 16],
            "interpolation": "bilinear",
            "mean": [0.4, 0.5, 0.6],
            "std": [0.2, 0.2, 0.2],
            "crop_pct": 0.875,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert detect_format(tmp_path).layout == "hub folder"
    assert detect_format(tmp_path / "model.safetensors").layout == "hub folder"
    loaded = load_pretrained(tmp_path, num_heads=4)
    assert loaded.labels == list("abcde") and loaded.preprocessing.mean == (0.4, 0.5, 0.6)
    assert loaded.preprocessing.crop_pct == 0.875 and loaded.preprocessing.interpolation == "bilinear"


def test_hybrid_stages_are_read_from_keys() -> None:
    tensors = {
        "patch_embed.proj.weight": torch.zeros(64, 1024, 1, 1),
        "patch_embed.backbone.stem.conv.weight": torch.zeros(64, 3, 7, 7),
        "blocks.0.attn.qkv.weight": torch.zeros(192, 64),
        "blocks.0.mlp.fc1.weight": torch.zeros(256, 64),
    }
    for stage, blocks in enumerate((3, 4, 9)):
        for block in range(blocks):
            tensors[f"patch_embed.backbone.stages.{stage}.blocks.{block}.conv1.weight"] = torch.zeros(1)
    facts = infer_config(tensors, "test")
    assert facts["hybrid_layers"].value == (3, 4, 9)
    assert facts["patch_size"].value == 16 and facts["in_chans"].value == 3


def test_hybrid_round_trip(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(hybrid_layers=(1,), img_size=16, patch_size=4)
    loaded = load_pretrained(save_timm(model, tmp_path / "hybrid.safetensors"), num_heads=4)
    assert loaded.config.hybrid_layers == (1,) and same_logits(loaded, model, inputs(model))


def test_legacy_pickle_format(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert same_logits(load_pretrained(tmp_path / "old.pt", num_heads=4), model, inputs(model))
