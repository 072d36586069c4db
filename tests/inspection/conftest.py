"""Small ViTs with random weights, and ways to make their attention known: uniform or the identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from vitlab.models.vit import ViTConfig, ViTIntermediates, VisionTransformer


def tiny(seed: int = 0, **overrides: Any) -> VisionTransformer:
    """3 layers, 2 heads; a non-square 8x12 image of 4x4 patches (a 2x3 grid) unless overridden."""
    base = dict(img_size=(8, 12), patch_size=4, embed_dim=16, depth=3, num_heads=2, mlp_dim=24, num_classes=3)
    model = VisionTransformer(ViTConfig(**{**base, **overrides}))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # N(0, 0.3²) everywhere, LayerNorm scales around 1: attention far from uniform
        for name, param in model.named_parameters():
            param.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.3, generator=generator)
    return model.eval()


def pixels(model: VisionTransformer, batch: int = 3, seed: int = 0) -> torch.Tensor:
    height, width = model.config.img_size
    return torch.randn(batch, model.config.in_chans, height, width, generator=torch.Generator().manual_seed(seed))


def make_uniform_(model: VisionTransformer) -> VisionTransformer:
    """Zero query and key projections: every score is 0, so every head attends uniformly to every token."""
    dim = model.config.embed_dim
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * dim] = 0
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias[: 2 * dim] = 0
    return model


def make_identity_(model: VisionTransformer, monkeypatch: pytest.MonkeyPatch) -> VisionTransformer:
    """Every layer's attention maps replaced by the identity: each token attends only to itself."""
    real = model.forward_intermediates

    def identity(images: torch.Tensor, return_attention: bool = False) -> ViTIntermediates:
        out = real(images, return_attention=return_attention)
        if out.attentions is not None:
            out.attentions = [torch.eye(a.shape[-1]).expand_as(a).clone() for a in out.attentions]
        return out

    monkeypatch.setattr(model, "forward_intermediates", identity)
    return model


@pytest.fixture(scope="session")
def make_tiny() -> Callable[..., VisionTransformer]:
    return tiny


@pytest.fixture
def make_pixels() -> Callable[..., torch.Tensor]:
    return pixels


@pytest.fixture
def uniform() -> Callable[[VisionTransformer], VisionTransformer]:
    return make_uniform_


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Callable[[VisionTransformer], VisionTransformer]:
    return lambda model: make_identity_(model, monkeypatch)
