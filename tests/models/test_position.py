"""Position embeddings: 2-D sin-cos table and resampling checked against independent computations."""

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab import VitlabError, resample_pos_embed, sincos_2d


def test_sincos_table_layout():
    table = sincos_2d((3, 5), 16)
    assert table.shape == (15, 16)
    torch.testing.assert_close(table[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    # token 7 sits at row 1, column 2: the x quarter uses 2, the y quarter uses 1, first frequency 1
    assert table[7, 0].item() == pytest.approx(np.sin(2.0)) and table[7, 8].item() == pytest.approx(np.sin(1.0))
    with pytest.raises(VitlabError, match="divisible by 4"):
        sincos_2d((2, 2), 6)


def _random_pos(prefix: int, grid: tuple[int, int], dim: int) -> torch.Tensor:
    return torch.randn(1, prefix + grid[0] * grid[1], dim, generator=torch.Generator().manual_seed(0))


def test_same_grid_is_untouched_and_prefix_kept():
    pos = _random_pos(1, (4, 6), 8)
    assert resample_pos_embed(pos, (4, 6), (4, 6)) is pos
    out = resample_pos_embed(pos, (6, 9), (4, 6))
    assert out.shape == (1, 1 + 54, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])


def test_bicubic_matches_pillow_antialiased_bicubic():
    """timm's mode is PIL's kernel (a = -0.5, antialiased): Pillow's float resize is an independent reference."""
    pos = _random_pos(1, (5, 7), 3)
    out = resample_pos_embed(pos, (8, 11), (5, 7), mode="bicubic")
    grid = pos[0, 1:].reshape(5, 7, 3).numpy()
    for channel in range(3):
        expected = np.asarray(Image.fromarray(grid[:, :, channel], mode="F").resize((11, 8), Image.Resampling.BICUBIC))
        np.testing.assert_allclose(out[0, 1:, channel].reshape(8, 11).numpy(), expected, atol=2e-5)


def test_bilinear_uses_aligned_corners_like_scipy_zoom():
    pos = _random_pos(0, (3, 4), 2)
    out = resample_pos_embed(pos, (5, 7), (3, 4), num_prefix_tokens=0, mode="bilinear")
    grid = pos[0].reshape(3, 4, 2).double().numpy()

    def interp_axis(values: np.ndarray, size: int, axis: int) -> np.ndarray:
        coords = np.linspace(0, values.shape[axis] - 1, size)  # corners map onto corners
        low = np.floor(coords).astype(int).clip(max=values.shape[axis] - 2)
        frac = coords - low
        a, b = np.take(values, low, axis=axis), np.take(values, low + 1, axis=axis)
        shape = [1] * values.ndim
        shape[axis] = size
        return a * (1 - frac.reshape(shape)) + b * frac.reshape(shape)

    expected = interp_axis(interp_axis(grid, 5, 0), 7, 1)
    np.testing.assert_allclose(out[0].reshape(5, 7, 2).numpy(), expected, atol=1e-6)


def test_bad_shapes_and_modes_are_explained():
    pos = _random_pos(1, (4, 4), 8)
    with pytest.raises(VitlabError, match="does not fit a 5x5 grid"):
        resample_pos_embed(pos, (6, 6), (5, 5))
    with pytest.raises(VitlabError, match="unknown position-embedding resample mode"):
        resample_pos_embed(pos, (6, 6), (4, 4), mode="nearest")
