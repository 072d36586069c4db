"""Attention maps, rollout and mean attention distance: numbers checked against attention we know by hand and
against an independent computation from a Hugging Face model's eager attention outputs with the same weights."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlab
import vitlab.inspect
from vitlab import VitlabError
from vitlab.inspection.attention import PATCH_MEAN, attention_distances, patch_distances, rollout_source


def test_public_names() -> None:
    import vitlab.inspection

    for name in ("attention_maps", "attention_rollout", "mean_attention_distance", "position_embedding_similarity",
                 "patch_embedding_components"):
        assert getattr(vitlab.inspect, name) is getattr(vitlab.inspection, name)
    assert vitlab.inspect.attention_rollout is getattr(vitlab, "inspect").attention_rollout


def test_maps_are_the_exact_path_and_batching_does_not_matter(make_tiny: Callable, make_pixels: Callable) -> None:
    model, x = make_tiny(), make_pixels(make_tiny(), batch=5)
    maps = vitlab.inspect.attention_maps(model, x, batch_size=2)
    expected = model.forward_intermediates(x, return_attention=True).attentions
    assert len(maps) == model.config.depth
    for got, want in zip(maps, expected):
        assert got.shape == (5, 2, 1 + 6, 1 + 6)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got.sum(-1), torch.ones(5, 2, 7))
    with torch.no_grad():  # the exact path's outputs are the fused path's
        torch.testing.assert_close(model.forward_intermediates(x, return_attention=True).features,
                                   model.forward_features(x), atol=1e-5, rtol=0)


def test_uniform_attention(make_tiny: Callable, make_pixels: Callable, uniform: Callable) -> None:
    """Zero q/k weights: every weight is 1/T, the rollout has a closed form, the distance is the mean pairwise one."""
    model = uniform(make_tiny())
    x = make_pixels(model)
    tokens, layers = 7, model.config.depth
    for weights in vitlab.inspect.attention_maps(model, x):
        torch.testing.assert_close(weights, torch.full_like(weights, 1 / tokens))
    # ((U + I) / 2)^L = 2^-L I + (1 - 2^-L) U with U the uniform matrix (U² = U): off-diagonal entries (1 - 2^-L) / T
    expected = torch.full((3, 2, 3), (1 - 2.0**-layers) / tokens)
    torch.testing.assert_close(vitlab.inspect.attention_rollout(model, x), expected)
    # patch centres of a 2x3 grid of 4-px patches; the mean over all (query, key) pairs of their distance
    centres = [(4 * i, 4 * j) for i in range(2) for j in range(3)]
    by_hand = sum(math.dist(a, b) for a, b in itertools.product(centres, centres)) / 36
    distances = vitlab.inspect.mean_attention_distance(model, x, batch_size=2)
    torch.testing.assert_close(distances, torch.full((layers, 2), by_hand))


def test_uniform_attention_on_a_2x2_grid_is_two_plus_root_two(make_tiny: Callable, make_pixels: Callable,
                                                              uniform: Callable) -> None:
    model = uniform(make_tiny(img_size=8))
    distances = vitlab.inspect.mean_attention_distance(model, make_pixels(model))
    torch.testing.assert_close(distances, torch.full_like(distances, 2 + math.sqrt(2)))  # (0 + 4 + 4 + 4√2) / 4


def test_identity_attention(make_tiny: Callable, make_pixels: Callable, identity: Callable) -> None:
    """Each token attends to itself: distance 0; R = I, whose class row holds nothing over the patches."""
    model = identity(make_tiny())
    x = make_pixels(model)
    assert vitlab.inspect.mean_attention_distance(model, x).abs().max().item() == 0.0
    assert vitlab.inspect.attention_rollout(model, x).abs().max().item() == 0.0


def test_no_class_token_shows_the_mean_over_patch_rows(make_tiny: Callable, make_pixels: Callable,
                                                       identity: Callable) -> None:
    model = make_tiny(class_token=False, global_pool="avg")
    assert rollout_source(model) == PATCH_MEAN and "mean over the patch tokens" in PATCH_MEAN
    x = make_pixels(model)
    maps = vitlab.inspect.attention_maps(model, x)
    assert maps[0].shape == (3, 2, 6, 6)
    expected = np.stack([_rollout_by_hand(layer[b].numpy() for layer in maps) for b in range(3)])
    got = vitlab.inspect.attention_rollout(model, x)
    torch.testing.assert_close(got, torch.from_numpy(expected.mean(axis=1).reshape(3, 2, 3)).float())
    torch.testing.assert_close(got.sum(dim=(1, 2)), torch.ones(3))  # the pooled token's rollout sums to one
    identity(model)
    torch.testing.assert_close(vitlab.inspect.attention_rollout(model, x), torch.full((3, 2, 3), 1 / 6))


def _rollout_by_hand(layers) -> np.ndarray:
    """R = A'_L ... A'_1 with A' = row-normalised (head mean + I), in float64, one image's (heads, T, T) maps."""
    result = None
    for weights in layers:
        mixed = weights.astype(np.float64).mean(axis=0) + np.eye(weights.shape[-1])
        mixed /= mixed.sum(axis=1, keepdims=True)
        result = mixed if result is None else mixed @ result
    return result


def _distance_by_hand(weights: np.ndarray, grid: tuple[int, int], patch: int) -> float:
    """One image's, one head's mean attention distance with explicit loops over queries and keys (prefix dropped)."""
    patches = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
    prefix = weights.shape[0] - len(patches)
    total = 0.0
    for q, (qi, qj) in enumerate(patches):
        row = weights[prefix + q, prefix:]
        for k, (ki, kj) in enumerate(patches):
            total += row[k] / row.sum() * patch * math.hypot(qi - ki, qj - kj)
    return total / len(patches)


def test_against_hugging_face_eager_attention(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=32,
                                    image_size=[12, 16], patch_size=4, num_labels=4, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # larger weights than HF's init, so the attention is far from uniform
        for param in hf.parameters():
            if param.ndim == 2:
                param.mul_(8.0)
    hf.save_pretrained(tmp_path)
    model = vitlab.load_pretrained(tmp_path)
    x = torch.randn(2, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = [a.numpy() for a in hf(pixel_values=x, output_attentions=True).attentions]
    ours = vitlab.inspect.attention_maps(model, x)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert max(float(a.max()) for a in theirs) > 0.3  # not near uniform (1/13)

    rollout = vitlab.inspect.attention_rollout(model, x).numpy()
    for b in range(2):
        by_hand = _rollout_by_hand(layer[b] for layer in theirs)[0, 1:].reshape(3, 4)
        np.testing.assert_allclose(rollout[b], by_hand, atol=1e-5)

    distances = vitlab.inspect.mean_attention_distance(model, x).numpy()
    by_hand = [[np.mean([_distance_by_hand(layer[b, h], (3, 4), 4) for b in range(2)]) for h in range(3)]
               for layer in theirs]
    np.testing.assert_allclose(distances, by_hand, atol=1e-4)


def test_patch_distances_non_square_patches() -> None:
    distances = patch_distances((2, 2), (3, 5))  # patches 3 px tall, 5 px wide
    assert distances.shape == (4, 4)
    torch.testing.assert_close(distances[0], torch.tensor([0.0, 5.0, 3.0, math.hypot(3, 5)]))
    torch.testing.assert_close(distances, distances.T)


def test_attention_distances_renormalise_over_patches() -> None:
    """Weight on the class token is dropped and each query's patch weights re-normalised."""
    weights = torch.zeros(1, 1, 3, 3)  # class token + 2 patches side by side, 4 px apart
    weights[0, 0, 1] = torch.tensor([0.5, 0.25, 0.25])  # patch 1: half on the class token, half split evenly
    weights[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0])  # patch 2: all on patch 1
    got = attention_distances([weights], patch_distances((1, 2), 4), num_prefix_tokens=1)
    torch.testing.assert_close(got, torch.tensor([[[(2.0 + 4.0) / 2]]]))


def test_bad_inputs(make_tiny: Callable, make_pixels: Callable) -> None:
    model = make_tiny()
    with pytest.raises(VitlabError, match="expected images of 8x12 pixels, got 16x16"):
        vitlab.inspect.attention_rollout(model, torch.zeros(1, 3, 16, 16))
    with pytest.raises(VitlabError, match="non-empty batch"):
        vitlab.inspect.mean_attention_distance(model, torch.zeros(0, 3, 8, 12))
    with pytest.raises(VitlabError, match="batch_size must be at least 1"):
        vitlab.inspect.attention_maps(model, make_pixels(model), batch_size=0)
    with pytest.raises(VitlabError, match="needs a vitlab VisionTransformer"):
        vitlab.inspect.attention_maps(torch.nn.Linear(2, 2), make_pixels(model))  # type: ignore[arg-type]
