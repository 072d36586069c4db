"""vitlab against outputs computed by timm, Google's vit_jax and Hugging Face transformers (../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.checkpoints import convert, detect_format, load_pretrained
from vitlab.models.vit import VisionTransformer


def run(model: VisionTransformer, folder: Path, name: str = "input.npy") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.load(folder / name))
    with torch.no_grad():
        features = model.forward_features(x)
        return model.forward_head(features), features, model.forward_head(features, pre_logits=True)


def close(actual: torch.Tensor, path: Path, atol: float) -> None:
    expected = torch.from_numpy(np.load(path))
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= atol


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_timm(peers: Path, weights: str) -> None:
    folder = peers / "timm_vit"
    model = load_pretrained(folder / weights, num_heads=4)
    logits, features, pre_logits = run(model, folder)
    close(logits, folder / "logits.npy", 1e-5)
    close(features, folder / "features.npy", 1e-5)
    close(pre_logits, folder / "pre_logits.npy", 1e-5)
    assert model.config.gelu == "exact" and model.config.img_size == (32, 32)


def test_timm_resampled_to_48(peers: Path) -> None:
    model = load_pretrained(peers / "timm_vit" / "model.safetensors", num_heads=4, img_size=48)
    folder = peers / "timm_vit_res48"
    close(model.pos_embed.detach(), folder / "pos_embed48.npy", 1e-5)
    logits, features, _ = run(model, folder, "input48.npy")
    close(logits, folder / "logits48.npy", 1e-5)
    close(features, folder / "features48.npy", 1e-5)
    assert model.preprocessing.img_size == (48, 48)


@pytest.mark.parametrize(("weights", "layout"), [("model.npz", "vit_jax linen"), ("model_prelinen.npz", "vit_jax pre-linen")])
def test_jax(peers: Path, weights: str, layout: str) -> None:
    folder = peers / "jax_vit"
    assert detect_format(folder / weights).layout == layout
    model = load_pretrained(folder / weights)
    assert model.config.num_heads == 4 and model.config.gelu == "tanh"
    logits, features, pre_logits = run(model, folder)
    close(logits, folder / "logits.npy", 1e-4)
    close(features, folder / "features.npy", 1e-4)
    close(pre_logits, folder / "pre_logits.npy", 1e-4)
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.interpolation == "bilinear"


def test_jax_tanh_default_matters(peers: Path) -> None:
    """With erf GELU the logits move by more than the tolerance: the tanh default is what makes them match."""
    folder = peers / "jax_vit"
    tanh, _, _ = run(load_pretrained(folder / "model.npz"), folder)
    exact, _, _ = run(load_pretrained(folder / "model.npz", gelu="exact"), folder)
    assert (tanh - exact).abs().max().item() > 1e-4


def test_hf(peers: Path) -> None:
    folder = peers / "hf_vit"
    model = load_pretrained(folder)
    assert model.config.layer_norm_eps == 1e-12
    logits, features, _ = run(model, folder)
    close(logits, folder / "logits.npy", 1e-5)
    close(features, folder / "features.npy", 1e-5)
    assert model.labels is None  # transformers' LABEL_i placeholders are not class names


@pytest.mark.parametrize("to", ["vitlab", "hf", "timm"])
def test_round_trip(peers: Path, tmp_path: Path, to: str) -> None:
    """Fixture → each format → loaded again: identical logits."""
    source = peers / "timm_vit" / "model.safetensors"
    out = tmp_path / ("model.safetensors" if to == "timm" else "out")
    convert(source, out, to=to, num_heads=4)
    again = load_pretrained(out, num_heads=4) if to == "timm" else load_pretrained(out)
    logits, _, _ = run(again, peers / "timm_vit")
    assert torch.equal(logits, run(load_pretrained(source, num_heads=4), peers / "timm_vit")[0])
