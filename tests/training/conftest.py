"""A tiny ViT (8 px images, 4 px patches, width 16, 2 blocks) for the training tests."""

from __future__ import annotations

import pytest
import torch

from vitlab.models.vit import ViTConfig, VisionTransformer


def tiny_vit(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    config = dict(img_size=8, patch_size=4, num_classes=4, embed_dim=16, depth=2, num_heads=2, mlp_dim=32)
    return VisionTransformer(ViTConfig(**{**config, **overrides}))


@pytest.fixture
def make_vit():
    """The tiny_vit builder (test modules cannot import conftest reliably: other folders have one too)."""
    return tiny_vit


@pytest.fixture
def vit() -> VisionTransformer:
    return tiny_vit()
