"""A first look at vitlab without any data or download: build a paper model, check it, move its weights.

Used by `vitlab demo` (the README's first command until training lands). Every number it prints is
measured in the run: nothing is quoted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitlab.checkpoints import convert, load_pretrained, save_pretrained
from vitlab.data.preprocessing import load_image
from vitlab.models.registry import MODELS, create_model


def test_pattern(size: int = 256) -> Image.Image:
    """A colourful synthetic picture (gradients and a disc), so the demo needs no image file."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2) < 0.05
    rgb = np.stack([x, y, 1 - x * y], axis=-1)
    rgb[disc] = (0.9, 0.2, 0.1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def larger_size(img_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """The paper's fine-tuning step up in resolution (224 → 384 px, Section 3.2), rounded to whole patches."""
    height, width = (max(round(side * 384 / 224 / patch_size), 1) * patch_size for side in img_size)
    return (height, width)


def run_demo(model_name: str = "vit_small_patch16_224", image: str | Path | None = None, topk: int = 5) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model(model_name, zero_head=False).eval()  # random head, so predictions are not uniform
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image_path = Path(image) if image else folder / "pattern.png"
        if image is None:
            test_pattern().save(image_path)
        batch = load_image(image_path, model.preprocessing)[None]
        with torch.no_grad():
            logits = model(batch)
            exact = model.forward_head(model.forward_intermediates(batch, return_attention=True).features)
            save_pretrained(model, folder / "vitlab")
            round_trips = {}
            for target, out in (("hf", folder / "hf"), ("timm", folder / "timm.safetensors")):
                convert(folder / "vitlab", out, to=target)
                round_trips[target] = (load_pretrained(out, model=model_name)(batch) - logits).abs().max().item()
            larger_img_size = larger_size(model.config.img_size, model.config.patch_size)
            larger = load_pretrained(folder / "vitlab", img_size=larger_img_size)
            larger_logits = larger(load_image(image_path, larger.preprocessing)[None])
    probabilities = logits.softmax(-1)[0]
    top = probabilities.topk(topk)
    return dict(
        model=model_name,
        params=params,
        params_in_table=MODELS[model_name].params,
        image=str(image) if image else "built-in test pattern",
        exact_vs_fused_max_abs_diff=(exact - logits).abs().max().item(),
        round_trip_max_abs_diff=round_trips,
        resampled=dict(img_size=list(larger.config.img_size), grid=list(larger.grid_size), logits_shape=list(larger_logits.shape)),
        top=[dict(index=int(i), probability=float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())],
    )
