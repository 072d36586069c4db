"""What the embeddings learned (paper Figure 7 left and centre): patch filters and position similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer


@dataclass
class PatchComponents:
    """Principal components of the patch-embedding filters, strongest first."""

    components: Tensor  # (k, channels, patch, patch), each of unit norm, orthogonal to one another
    explained_variance: Tensor  # (k,) variance of the filters along each component (sample variance, /(D - 1))
    explained_variance_ratio: Tensor  # (k,) share of the filters' total variance


def position_embedding_similarity(model: VisionTransformer) -> Tensor:
    """(grid_h, grid_w, grid_h, grid_w): cosine similarity of every patch's position embedding with every other.

    The class token's slot is left out; [i, j] is the (grid_h, grid_w) map of patch (i, j)'s similarities.
    """
    grid = model.grid_size
    patches = grid[0] * grid[1]
    table = model.pos_embed.detach()[0].float().cpu()
    if table.shape[0] != patches:  # the table covers the prefix (class token) slots too
        table = table[model.num_prefix_tokens :]
    if table.shape[0] != patches:
        raise VitlabError(f"the position embedding has {model.pos_embed.shape[1]} rows, which do not match the "
                          f"{grid[0]}x{grid[1]} patch grid plus {model.num_prefix_tokens} prefix token(s)")
    unit = F.normalize(table, dim=-1)
    return (unit @ unit.T).reshape(*grid, *grid)


def max_components(model: VisionTransformer) -> int:
    """How many principal components the patch filters have: min(D - 1, channels x patch x patch)."""
    _check_pixel_filters(model)
    weight = model.patch_embed.proj.weight
    return min(weight.shape[0] - 1, weight[0].numel())


def patch_embedding_components(model: VisionTransformer, k: int = 28) -> PatchComponents:
    """The first `k` principal components of the D patch-embedding filters, each shaped (channels, patch, patch).

    Each filter (a row of E, paper eq. 1) is flattened to channels x patch x patch values, the filters are
    centred on their mean, and the components are the right singular vectors of that (D, C·P·P) matrix. Their
    signs are fixed so that each component's largest-magnitude value is positive.
    """
    available = max_components(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= available:
        weight = model.patch_embed.proj.weight
        raise VitlabError(f"k={k!r} principal components asked for, but the {weight.shape[0]} patch filters of "
                          f"{weight[0].numel()} values each have {available}: use 1 <= k <= {available}")
    weight = model.patch_embed.proj.weight.detach().double().cpu()
    filters = weight.flatten(1)
    centred = filters - filters.mean(dim=0, keepdim=True)
    _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)
    vectors = vectors[:k]
    strongest = vectors.abs().argmax(dim=1, keepdim=True)
    vectors = vectors * vectors.gather(1, strongest).sign()
    variance = singular**2 / (filters.shape[0] - 1)
    return PatchComponents(
        components=vectors.reshape(k, *weight.shape[1:]).float(),
        explained_variance=variance[:k].float(),
        explained_variance_ratio=(variance[:k] / variance.sum()).float(),
    )


def _check_pixel_filters(model: VisionTransformer) -> None:
    if model.config.hybrid_layers is not None:
        raise VitlabError("this is a hybrid model (ResNet stem, hybrid_layers="
                          f"{list(model.config.hybrid_layers)}): its patch embedding is a 1x1 convolution over CNN "
                          "features, so there are no pixel patch filters to take principal components of")
