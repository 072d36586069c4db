"""Position-embedding similarity and the principal components of the patch filters."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import vitlab.inspect
from vitlab import VitlabError
from vitlab.inspection.embeddings import max_components


@pytest.mark.parametrize("options", [{}, {"class_token": False, "global_pool": "avg"}, {"pos_embed": "sincos2d"}],
                         ids=["learned, class token", "no class token", "sincos"])
def test_similarity_is_symmetric_with_unit_diagonal(make_tiny: Callable, options: dict) -> None:
    model = make_tiny(img_size=(12, 20), **options)  # a 3x5 grid
    similarity = vitlab.inspect.position_embedding_similarity(model)
    assert similarity.shape == (3, 5, 3, 5)
    flat = similarity.reshape(15, 15)
    torch.testing.assert_close(flat, flat.T)
    torch.testing.assert_close(flat.diagonal(), torch.ones(15))
    assert flat.abs().max().item() <= 1 + 1e-6
    table = model.pos_embed.detach()[0, model.num_prefix_tokens :]  # patch (i, j) is row i * 5 + j
    cosine = torch.nn.functional.cosine_similarity(table[1 * 5 + 2], table[2 * 5 + 4], dim=0)
    torch.testing.assert_close(similarity[1, 2, 2, 4], cosine)


def test_similarity_leaves_the_class_slot_out(make_tiny: Callable) -> None:
    model = make_tiny()
    before = vitlab.inspect.position_embedding_similarity(model)
    with torch.no_grad():
        model.pos_embed[0, 0] = 100.0
    torch.testing.assert_close(vitlab.inspect.position_embedding_similarity(model), before)


@pytest.mark.parametrize("in_chans", [3, 1])
def test_components_are_orthonormal_and_match_numpy(make_tiny: Callable, in_chans: int) -> None:
    model = make_tiny(in_chans=in_chans, embed_dim=64, patch_size=4, img_size=8)  # 64 filters of C x 4 x 4
    pca = vitlab.inspect.patch_embedding_components(model, k=10)
    assert pca.components.shape == (10, in_chans, 4, 4)
    flat = pca.components.reshape(10, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(10, dtype=torch.float64), atol=1e-5, rtol=0)
    assert (pca.explained_variance[:-1] >= pca.explained_variance[1:]).all()

    filters = model.patch_embed.proj.weight.detach().double().numpy().reshape(64, -1)
    centred = filters - filters.mean(axis=0)
    _, singular, vectors = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(pca.explained_variance.numpy(), singular[:10] ** 2 / 63, rtol=1e-5)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), singular[:10] ** 2 / (singular**2).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.abs((flat.numpy() * vectors[:10]).sum(axis=1)), np.ones(10), atol=1e-5)  # up to sign
    assert np.allclose(np.var(centred @ flat.numpy().T, axis=0, ddof=1), pca.explained_variance.numpy(), rtol=1e-4)


def test_all_components_explain_all_the_variance(make_tiny: Callable) -> None:
    model = make_tiny(in_chans=1, embed_dim=32, patch_size=4, img_size=8)  # 16 values a filter: 16 components
    assert max_components(model) == 16
    pca = vitlab.inspect.patch_embedding_components(model, k=16)
    torch.testing.assert_close(pca.explained_variance_ratio.sum(), torch.tensor(1.0))


def test_too_many_components(make_tiny: Callable) -> None:
    model = make_tiny(in_chans=1, embed_dim=32, patch_size=4, img_size=8)
    with pytest.raises(VitlabError, match=r"k=28 principal components asked for, but the 32 patch filters of 16 values "
                                          r"each have 16: use 1 <= k <= 16"):
        vitlab.inspect.patch_embedding_components(model)
    with pytest.raises(VitlabError, match="k=0"):
        vitlab.inspect.patch_embedding_components(model, k=0)


def test_hybrid_has_no_pixel_filters(make_tiny: Callable) -> None:
    model = make_tiny(img_size=16, patch_size=4, hybrid_layers=(1,))
    with pytest.raises(VitlabError, match=r"hybrid model \(ResNet stem, hybrid_layers=\[1\]\).*no pixel patch filters"):
        vitlab.inspect.patch_embedding_components(model)
    similarity = vitlab.inspect.position_embedding_similarity(model)  # the rest works for hybrids
    assert similarity.shape == (4, 4, 4, 4)
