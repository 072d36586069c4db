"""Position embeddings: fixed 2-D sin-cos tables and resampling of learned ones to a new grid.

Resampling is the paper's Section 3.2 recipe for fine-tuning at a higher resolution: the prefix tokens'
embeddings (the class token's) are kept aside untouched, the patch embeddings are treated as a (D, gh, gw)
image and interpolated to the new grid by their location in the image.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vitlab.errors import VitlabError

ResampleMode = Literal["bicubic", "bilinear"]
RESAMPLE_MODES: tuple[str, ...] = ("bicubic", "bilinear")


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10_000.0) -> Tensor:
    """Fixed 2-D sin-cos embeddings, (gh·gw, dim), rows in raster order (big_vision's `posemb_sincos_2d`).

    A quarter of the channels each: sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω), ω spaced geometrically
    from 1 to 1/temperature.
    """
    if dim % 4:
        raise VitlabError(f"sin-cos position embeddings need embed_dim divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64), torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1))
    x = x.flatten()[:, None] * omega[None, :]
    y = y.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    mode: ResampleMode = "bicubic",
) -> Tensor:
    """Resample (1, prefix + gh·gw, D) position embeddings from `old_grid` to `new_grid`.

    mode="bicubic": bicubic with antialiasing, half-pixel centres; what timm does when it loads a checkpoint
    at another size (PIL-style kernel, a = -0.5, out-of-grid taps dropped).
    mode="bilinear": bilinear with aligned corners; what Google's vit_jax does (scipy.ndimage.zoom, order=1).
    Grids are explicit (height, width) so non-square grids never round to an off-by-one size.
    """
    if mode not in RESAMPLE_MODES:
        raise VitlabError(f"unknown position-embedding resample mode {mode!r}: use one of {', '.join(RESAMPLE_MODES)}")
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != expected:
        raise VitlabError(
            f"position embedding of shape {tuple(pos_embed.shape)} does not fit a {old_grid[0]}x{old_grid[1]} grid "
            f"with {num_prefix_tokens} prefix token(s): expected (1, {expected}, D)"
        )
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = patches.shape[-1]
    image = patches.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    if mode == "bicubic":
        image = F.interpolate(image, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    else:
        image = F.interpolate(image, size=new_grid, mode="bilinear", align_corners=True)
    patches = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)
