import pytest

import vitlab
from vitlab import VitlabError


def test_every_spec_variant_is_registered():
    spec = [
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_small_patch32_224", "vit_base_patch16_224",
        "vit_base_patch32_224", "vit_base_patch8_224", "vit_large_patch16_224", "vit_large_patch32_224",
        "vit_huge_patch14_224", "vit_base_patch16_384", "vit_base_r50_s16_384",
    ]
    assert set(spec) <= set(vitlab.list_models())


def test_small_data_models_build_for_their_image_sizes():
    import torch

    assert vitlab.create_model("vit_cifar_patch4_32")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert vitlab.create_model("vit_mnist_patch4_28")(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert vitlab.create_model("vit_mnist_patch7_28").grid_size == (4, 4)


def test_overrides_accept_timm_keywords():
    config = vitlab.model_config("vit_small_patch16_224", img_size=384, mlp_ratio=2.0, num_classes=10)
    assert config.img_size == (384, 384) and config.mlp_dim == 768 and config.num_classes == 10
    assert vitlab.model_config("vit_small_patch16_224", embed_dim=192, num_heads=3).mlp_dim == 768


def test_unknown_name_lists_close_matches():
    with pytest.raises(VitlabError, match="did you mean vit_base_patch16_224"):
        vitlab.create_model("vit_base_patch16_244")
