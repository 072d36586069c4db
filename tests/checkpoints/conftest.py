"""Shared fixtures: the peer-made fixtures folder, and small ViTs with random (non-default) weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vitlab.models.vit import ViTConfig, VisionTransformer

PEERS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "peers"


@pytest.fixture
def peers() -> Path:
    if not PEERS.is_dir():
        pytest.skip(f"peer fixtures not found at {PEERS}")
    return PEERS


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter N(0, 0.2²), LayerNorm weights 1 + N(0, 0.2²): nothing equals a library default."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        for layer in module.modules():
            if isinstance(layer, nn.LayerNorm):
                layer.weight += 1.0
    return module.eval()


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    return randomize_


@pytest.fixture
def make_vit() -> Callable[..., VisionTransformer]:
    """A small ViT with random weights; keyword arguments override its ViTConfig."""

    def make(seed: int = 0, **overrides: Any) -> VisionTransformer:
        base = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, mlp_dim=48, num_classes=5)
        return randomize_(VisionTransformer(ViTConfig(**{**base, **overrides})), seed)

    return make


def images(model: VisionTransformer, batch: int = 2, seed: int = 0) -> torch.Tensor:
    height, width = model.config.img_size
    return torch.randn(batch, model.config.in_chans, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def inputs() -> Callable[..., torch.Tensor]:
    return images
