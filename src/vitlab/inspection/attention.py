"""What the attention does (paper Section 4.5, Figures 6 and 7 right, Appendix D.7-D.8).

Every map comes from the exact (non-fused) attention path, `forward_intermediates(return_attention=True)`,
whose outputs equal the fused path's. The public functions run a model over a batch of normalised images at
the model's size, a few images at a time; the pure functions below them (`rollout`, `attention_distances`,
`patch_distances`) take attention maps that were already computed, so one pass can feed several views.

Which token a map is read from follows what the classifier reads (`config.global_pool`): the class token's
row for `'token'` pooling (every paper model), and for `'avg'` pooling (also every model without a class
token) the mean over the patch tokens' rows, because the pooled representation is the mean of the patch
tokens, so its attention (and its rollout) is the mean of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer

CLASS_TOKEN = "class token"
PATCH_MEAN = "mean over the patch tokens (the model pools them by averaging: global_pool='avg')"


def attention_maps(model: VisionTransformer, images: Tensor, *, batch_size: int = 32,
                   progress: bool = False) -> list[Tensor]:
    """One (batch, heads, tokens, tokens) tensor of softmax weights per layer, tokens = prefix + patches."""
    batches = [attentions for _, attentions in attention_batches(model, images, batch_size=batch_size, progress=progress)]
    return [torch.cat(layer) for layer in zip(*batches)]


def attention_rollout(model: VisionTransformer, images: Tensor, *, batch_size: int = 32,
                      progress: bool = False) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of each image: (batch, grid_h, grid_w), unscaled.

    Per layer the heads are averaged, the identity is added for the residual connection and the rows are
    re-normalised (A' = (A + I) / 2); R = A'_L ... A'_1 (last layer leftmost). The map is the class token's row
    of R over the patch tokens, or for models that pool by averaging (including those without a class token)
    the mean of the patch tokens' rows of R over the patch tokens: see `rollout_source`.
    """
    grid, prefix, pooled = model.grid_size, model.num_prefix_tokens, model.global_pool
    maps = [rollout(attentions, grid, prefix, pooled)
            for _, attentions in attention_batches(model, images, batch_size=batch_size, progress=progress)]
    return torch.cat(maps)


def mean_attention_distance(model: VisionTransformer, images: Tensor, *, batch_size: int = 32,
                            progress: bool = False) -> Tensor:
    """(layers, heads): the attention-weighted distance in input pixels between query and key patches.

    Prefix tokens are dropped as queries and keys, each query's weights are re-normalised over the patches,
    the distances between patch centres are weighted by them and summed over keys, then averaged over the
    queries and the images (paper Figure 7 right).
    """
    distances = patch_distances(model.grid_size, token_pixels(model))
    total, count = None, 0
    for _, attentions in attention_batches(model, images, batch_size=batch_size, progress=progress):
        per_image = attention_distances(attentions, distances, model.num_prefix_tokens)
        total = per_image.sum(0) if total is None else total + per_image.sum(0)
        count += per_image.shape[0]
    return total / count


def rollout_source(model: VisionTransformer) -> str:
    """In words, which row of the rollout (and which attention row) the maps show for this model."""
    return CLASS_TOKEN if model.global_pool == "token" else PATCH_MEAN


# --- the pass over the images ---------------------------------------------------------------------------


def attention_batches(model: VisionTransformer, images: Tensor, *, batch_size: int = 32,
                      progress: bool = False) -> Iterator[tuple[Tensor, list[Tensor]]]:
    """(logits, attention maps per layer) for successive batches of `images`, in eval mode, without gradients.

    Logits are the model's outputs (pooled features when it has no head), as float32 on the CPU like the maps.
    """
    _check_model(model)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise VitlabError(f"expected a non-empty batch of images shaped (batch, channels, height, width), got {shape}")
    if batch_size < 1:
        raise VitlabError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            starts = range(0, images.shape[0], batch_size)
            for start in tqdm(starts, desc="attention", unit="batch", disable=None if progress else True, leave=False):
                batch = images[start : start + batch_size].to(device, torch.float32)
                out = model.forward_intermediates(batch, return_attention=True)
                logits = model.forward_head(out.features)
                yield logits.float().cpu(), [a.float().cpu() for a in out.attentions or []]
    finally:
        model.train(was_training)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, VisionTransformer):
        raise VitlabError(f"inspection needs a vitlab VisionTransformer (from load_pretrained or create_model), "
                          f"got a {type(model).__name__}")


# --- pure functions of attention maps ----------------------------------------------------------------


def rollout(attentions: Sequence[Tensor], grid: tuple[int, int], num_prefix_tokens: int,
            global_pool: str = "token") -> Tensor:
    """Rollout maps (batch, grid_h, grid_w) from per-layer (batch, heads, tokens, tokens) attention weights."""
    result = None
    for weights in attentions:
        mixed = weights.float().mean(dim=1)
        mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    if result is None:
        raise VitlabError("no attention maps to roll out: the model has no layers")
    return read_rows(result, grid, num_prefix_tokens, global_pool)


def read_rows(matrix: Tensor, grid: tuple[int, int], num_prefix_tokens: int, global_pool: str = "token") -> Tensor:
    """(..., tokens, tokens) → (..., grid_h, grid_w): the row the classifier reads, over the patch columns.

    The class token's row for 'token' pooling; the mean of the patch tokens' rows for 'avg' pooling.
    """
    if global_pool == "token":
        rows = matrix[..., 0, num_prefix_tokens:]
    else:
        rows = matrix[..., num_prefix_tokens:, num_prefix_tokens:].mean(dim=-2)
    return rows.reshape(*rows.shape[:-1], *grid)


def patch_distances(grid: tuple[int, int], patch: int | tuple[int, int]) -> Tensor:
    """(patches, patches) Euclidean distances in pixels between patch centres, patches in row-major order."""
    height, width = (patch, patch) if isinstance(patch, int) else patch
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten() * float(height), cols.flatten() * float(width)], dim=1)
    return torch.cdist(centres.double(), centres.double()).float()


def attention_distances(attentions: Sequence[Tensor], distances: Tensor, num_prefix_tokens: int) -> Tensor:
    """(batch, layers, heads): each image's mean over query patches of the weighted key-patch distance."""
    per_layer = []
    for weights in attentions:
        patches = weights.float()[..., num_prefix_tokens:, num_prefix_tokens:]
        patches = patches / patches.sum(dim=-1, keepdim=True)
        per_layer.append((patches * distances).sum(dim=-1).mean(dim=-1))
    return torch.stack(per_layer, dim=1)


def token_pixels(model: VisionTransformer) -> tuple[int, int]:
    """The input pixels one token covers: the patch size, or a hybrid stem's output stride."""
    size = model.patch_embed.patch_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
