"""The inspection figures as PNG, drawn like the paper's Figures 6 and 7; each function returns a file writer.

The writers go to `vitlab.checkpoints.files.write_files`, so every PNG is written atomically. Images are
float (channels, H, W) in [0, 1]; one channel is drawn in grey, three in RGB.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from vitlab.checkpoints.files import Writer  # noqa: E402


def png_writer(figure: Any) -> Writer:
    """Render `figure` now (and close it); the writer writes the PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
    data = buffer.getvalue()

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def rollout_figure(images: Tensor, maps: Tensor, inputs: Sequence[str], predictions: Sequence[str],
                   source: str, per_row: int = 4) -> Writer:
    """Each image beside its rollout map with the predicted label (paper Figure 6), `per_row` pairs a row."""
    count = images.shape[0]
    pairs, rows = min(count, per_row), -(-count // per_row)
    figure, axes = plt.subplots(rows, 2 * pairs, figsize=(2.0 * 2 * pairs, 2.3 * rows + 0.3), squeeze=False,
                                layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for index, (image, heat) in enumerate(zip(images, maps)):
        left, right = axes[index // per_row, 2 * (index % per_row)], axes[index // per_row, 2 * (index % per_row) + 1]
        _show_image(left, image)
        left.set_title(inputs[index], fontsize=8)
        _show_image(right, image, dim=True)
        right.imshow(_upsampled(heat, image.shape[-2:]), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        right.set_title(predictions[index], fontsize=8)
    figure.suptitle(f"attention rollout of the {source}", fontsize=9)
    return png_writer(figure)


def head_attention_figure(images: Tensor, maps: Tensor, layer: int, source: str) -> Writer:
    """One row per image: the image, then each head's attention (of `source`) over the patches in `layer`."""
    count, heads = maps.shape[:2]
    figure, axes = plt.subplots(count, heads + 1, figsize=(1.6 * (heads + 1), 1.7 * count + 0.4), squeeze=False,
                                layout="constrained")
    for row, (image, per_head) in enumerate(zip(images, maps)):
        _show_image(axes[row, 0], image)
        for head, heat in enumerate(per_head):
            axis = axes[row, head + 1]
            _show_image(axis, image, dim=True)
            axis.imshow(_upsampled(heat, image.shape[-2:]), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if row == 0:
                axis.set_title(f"head {head + 1}", fontsize=8)
    figure.suptitle(f"layer {layer}: attention of the {source} over the patches, per head", fontsize=9)
    return png_writer(figure)


def distance_figure(distances: Tensor, image_size: tuple[int, int]) -> Writer:
    """Mean attention distance of every head against network depth (paper Figure 7 right)."""
    layers, heads = distances.shape
    figure, axis = plt.subplots(figsize=(5.0, 4.0))
    colours = plt.get_cmap("tab20" if heads > 10 else "tab10")
    for head in range(heads):
        axis.scatter(range(1, layers + 1), distances[:, head].numpy(), s=14, color=colours(head % colours.N),
                     label=f"head {head + 1}")
    axis.set(xlabel="network depth (layer)", ylabel="mean attention distance (pixels)",
             title=f"mean attention distance ({image_size[0]}x{image_size[1]} px inputs)",
             ylim=(0, max(float(distances.max()) * 1.1, 1e-6)))
    axis.set_xticks(range(1, layers + 1))
    axis.grid(alpha=0.3)
    if heads <= 16:
        axis.legend(fontsize=6, ncol=2, loc="lower right")
    return png_writer(figure)


def position_similarity_figure(similarity: Tensor) -> Writer:
    """A grid of grids (paper Figure 7 centre): tile (i, j) is patch (i, j)'s similarity with every patch."""
    rows, cols = similarity.shape[:2]
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan)
    for i in range(rows):
        for j in range(cols):
            mosaic[i * (rows + 1) : i * (rows + 1) + rows, j * (cols + 1) : j * (cols + 1) + cols] = similarity[i, j].numpy()
    figure, axis = plt.subplots(figsize=(5.5, 5.0 * rows / cols + 0.5))
    colours = plt.get_cmap("viridis").with_extremes(bad="white")  # the gaps between tiles
    image = axis.imshow(mosaic, cmap=colours, vmin=-1, vmax=1, interpolation="nearest")
    step_r, step_c = max(1, rows // 8), max(1, cols // 8)
    axis.set_yticks([i * (rows + 1) + (rows - 1) / 2 for i in range(0, rows, step_r)], labels=range(1, rows + 1, step_r))
    axis.set_xticks([j * (cols + 1) + (cols - 1) / 2 for j in range(0, cols, step_c)], labels=range(1, cols + 1, step_c))
    axis.set(xlabel="input patch column", ylabel="input patch row", title="position embedding similarity")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="cosine similarity")
    return png_writer(figure)


def filters_figure(components: Tensor, ratio: Tensor) -> Writer:
    """The principal components of the patch filters as tiles, each normalised to [0, 1] (paper Figure 7 left)."""
    count = components.shape[0]
    cols = min(7, count)
    rows = -(-count // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows + 0.4), squeeze=False, layout="constrained")
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            tile = components[index]
            tile = (tile - tile.min()) / (tile.max() - tile.min()).clamp(min=1e-12)
            _show_image(axis, tile)
            axis.set_title(f"{100 * float(ratio[index]):.1f}%", fontsize=6)
    figure.suptitle(f"first {count} principal components of the patch-embedding filters (variance share)", fontsize=8)
    return png_writer(figure)


def _show_image(axis: Any, image: Tensor, dim: bool = False) -> None:
    """Draw a (channels, H, W) image in [0, 1]: grey for one channel, RGB for three, the channel mean otherwise."""
    array = image.float().clamp(0, 1)
    array = array.permute(1, 2, 0).numpy() if array.shape[0] == 3 else array.mean(dim=0).numpy()
    if dim:
        array = 0.5 * array
    axis.imshow(array, cmap=None if array.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def _upsampled(heat: Tensor, size: Sequence[int]) -> np.ndarray:
    """A (grid_h, grid_w) map bilinearly upsampled to the image size, scaled to a maximum of 1 for display."""
    heat = heat.float().clamp(min=0)
    heat = heat / heat.max().clamp(min=1e-12)
    return F.interpolate(heat[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def as_display(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalised model inputs (B, C, H, W) back to [0, 1] for drawing."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float().cpu() * std_t + mean_t).clamp(0, 1)
