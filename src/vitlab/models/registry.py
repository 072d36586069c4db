"""Model names → configurations: the paper's variants (Table 1, timm's names) and small-data models.

Each entry states where it comes from; `create_model(name, **overrides)` builds one. Overrides are
ViTConfig fields or timm's constructor keywords (`mlp_ratio`, `img_size` as an int, ...).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from vitlab.errors import VitlabError
from vitlab.models.vit import ViTConfig, VisionTransformer


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: dict[str, Any]
    about: str
    params: int | None = None  # with the default head, the figure in SPEC.md / Table 1
    extra: dict[str, Any] = field(default_factory=dict)


def _paper(depth: int, dim: int, heads: int, patch: int, size: int = 224) -> dict[str, Any]:
    return dict(depth=depth, embed_dim=dim, num_heads=heads, mlp_dim=4 * dim, patch_size=patch, img_size=size)


_ENTRIES = [
    ModelEntry("vit_tiny_patch16_224", _paper(12, 192, 3, 16), "ViT-Ti/16 (DeiT/AugReg)", 5_717_416),
    ModelEntry("vit_small_patch16_224", _paper(12, 384, 6, 16), "ViT-S/16 (DeiT/AugReg)", 22_050_664),
    ModelEntry("vit_small_patch32_224", _paper(12, 384, 6, 32), "ViT-S/32 (AugReg)", 22_878_952),
    ModelEntry("vit_base_patch16_224", _paper(12, 768, 12, 16), "ViT-B/16, paper Table 1", 86_567_656),
    ModelEntry("vit_base_patch32_224", _paper(12, 768, 12, 32), "ViT-B/32, paper Table 1", 88_224_232),
    ModelEntry("vit_base_patch8_224", _paper(12, 768, 12, 8), "ViT-B/8 (AugReg)", 86_576_872),
    ModelEntry("vit_large_patch16_224", _paper(24, 1024, 16, 16), "ViT-L/16, paper Table 1", 304_326_632),
    # The public L/32 and H/14 weights are ImageNet-21k features without a classifier, so (as in timm) these
    # two names default to num_classes=0; pass num_classes=N to add a head.
    ModelEntry("vit_large_patch32_224", {**_paper(24, 1024, 16, 32), "num_classes": 0}, "ViT-L/32, paper Table 1", 305_510_400),
    ModelEntry("vit_huge_patch14_224", {**_paper(32, 1280, 16, 14), "num_classes": 0}, "ViT-H/14, paper Table 1", 630_764_800),
    ModelEntry("vit_base_patch16_384", _paper(12, 768, 12, 16, 384), "ViT-B/16 fine-tuned at 384 px (paper 3.2)", 86_859_496),
    ModelEntry(
        "vit_base_r50_s16_384",
        {**_paper(12, 768, 12, 16, 384), "hybrid_layers": (3, 4, 9)},
        "R50+ViT-B/16 hybrid: BiT ResNet-v2 stem (stages 3, 4, 9), 1x1 patches of its stride-16 map",
        98_950_952,
    ),
    ModelEntry(
        "vit_cifar_patch4_32",
        dict(img_size=32, patch_size=4, embed_dim=192, depth=9, num_heads=12, mlp_dim=384, num_classes=10),
        "small-data ViT for 32 px images (depth 9, D 192, 12 heads of 16, as in 'ViT for small-size datasets')",
    ),
    ModelEntry(
        "vit_digits_patch2_8",
        dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_dim=128, num_classes=10,
             global_pool="avg", class_token=False),
        "tiny ViT for scikit-learn's 8 px digits (vitlab train's default): 4x4 patches of 2 px, average pooling "
        "(no class token: 97.6 % mean test accuracy over 5 runs against 97.2 % with one)",
    ),
    ModelEntry(
        "vit_mnist_patch4_28",
        dict(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_dim=256, num_classes=10),
        "small ViT for 28 px grey digits (MNIST, Fashion-MNIST): 7x7 patches of 4 px",
    ),
    ModelEntry(
        "vit_mnist_patch7_28",
        dict(img_size=28, patch_size=7, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_dim=256, num_classes=10),
        "small ViT for 28 px grey digits: 4x4 patches of 7 px, 16 tokens, fastest",
    ),
]
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}

# timm's constructor keywords that are not ViTConfig fields, and how they map onto it.
TIMM_KEYWORDS = ("mlp_ratio",)


def list_models(pattern: str = "") -> list[str]:
    """Registered names containing `pattern`."""
    return sorted(name for name in MODELS if pattern in name)


def get_entry(name: str) -> ModelEntry:
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, MODELS, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise VitlabError(f"unknown model {name!r}{hint} (`vitlab models` lists all {len(MODELS)})")


def model_config(name: str | None = None, **overrides: Any) -> ViTConfig:
    """The ViTConfig of a registered model with overrides applied (timm keyword names accepted)."""
    base = ViTConfig().to_dict() if name is None else {**ViTConfig().to_dict(), **get_entry(name).config}
    overrides = dict(overrides)
    if "mlp_ratio" in overrides:
        ratio = overrides.pop("mlp_ratio")
        overrides.setdefault("mlp_dim", int(overrides.get("embed_dim", base["embed_dim"]) * ratio))
    elif "embed_dim" in overrides and "mlp_dim" not in overrides:
        # keep the entry's MLP ratio when only the width changes, as timm does
        overrides["mlp_dim"] = int(overrides["embed_dim"] * base["mlp_dim"] / base["embed_dim"])
    return ViTConfig.from_dict({**base, **overrides})


def create_model(name: str, **overrides: Any) -> VisionTransformer:
    """Build a registered model, e.g. `create_model("vit_base_patch16_224", num_classes=10, img_size=384)`."""
    return VisionTransformer(model_config(name, **overrides))
