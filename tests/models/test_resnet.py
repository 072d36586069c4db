"""The hybrid's ResNet-v2 stem (R50+ViT-B/16): size, timm key names, weight standardisation, shapes, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.errors import VitlabError
from vitlab.models.registry import MODELS
from vitlab.models.resnet import Bottleneck, HybridEmbed, MaxPool2dSame, StdConv2d, backbone_stride, same_padding

TINY = dict(img_size=64, hybrid_layers=(1, 1, 1), embed_dim=64, depth=1, num_heads=2, mlp_dim=128, num_classes=10)


def tiny_hybrid(**overrides):
    torch.manual_seed(0)
    return vitlab.create_model("vit_base_r50_s16_384", **{**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def r50_meta():
    with torch.device("meta"):
        return vitlab.create_model("vit_base_r50_s16_384")


def test_parameter_count_matches_registry(r50_meta):
    count = sum(p.numel() for p in r50_meta.parameters())
    assert count == MODELS["vit_base_r50_s16_384"].params == 98_950_952
    # ViT-B/16 at 384 minus its 16x16 patch projection, plus the ResNet and the 1x1 projection 1024 -> 768.
    backbone = sum(p.numel() for p in r50_meta.patch_embed.backbone.parameters())
    assert backbone == 11_894_848
    assert count == 86_859_496 - (768 * 3 * 16 * 16 + 768) + backbone + (1024 * 768 + 768)


def test_state_dict_keys_are_timms(r50_meta):
    state = r50_meta.state_dict()
    # Expected key count, following timm's vit_base_r50_s16_384 (resnetv2.Bottleneck with preact=False):
    #   stem: conv.weight, norm.{weight,bias}                                              3
    #   every bottleneck: conv{1,2,3}.weight + norm{1,2,3}.{weight,bias}  -> 9 x (3+4+9)   144
    #   first block of each stage: downsample.conv.weight + downsample.norm.{weight,bias}  3 x 3 = 9
    #   -> backbone 156 (no conv biases, GroupNorm has no buffers, the backbone has no head or final norm)
    #   patch_embed.proj.{weight,bias}                                                     2
    #   cls_token, pos_embed                                                               2
    #   12 transformer blocks x (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) x {weight,bias} = 144
    #   norm.{weight,bias}, head.{weight,bias}                                             4
    assert len(state) == 156 + 2 + 2 + 144 + 4 == 308
    assert sum(k.startswith("patch_embed.backbone.") for k in state) == 156
    expected_shapes = {
        "patch_embed.backbone.stem.conv.weight": (64, 3, 7, 7),
        "patch_embed.backbone.stem.norm.weight": (64,),
        "patch_embed.backbone.stem.norm.bias": (64,),
        "patch_embed.backbone.stages.0.blocks.0.downsample.conv.weight": (256, 64, 1, 1),
        "patch_embed.backbone.stages.0.blocks.0.downsample.norm.weight": (256,),
        "patch_embed.backbone.stages.0.blocks.0.conv1.weight": (64, 64, 1, 1),
        "patch_embed.backbone.stages.0.blocks.2.conv3.weight": (256, 64, 1, 1),
        "patch_embed.backbone.stages.1.blocks.0.downsample.conv.weight": (512, 256, 1, 1),
        "patch_embed.backbone.stages.1.blocks.0.conv2.weight": (128, 128, 3, 3),
        "patch_embed.backbone.stages.1.blocks.3.norm2.bias": (128,),
        "patch_embed.backbone.stages.2.blocks.0.downsample.norm.bias": (1024,),
        "patch_embed.backbone.stages.2.blocks.8.conv3.weight": (1024, 256, 1, 1),
        "patch_embed.backbone.stages.2.blocks.8.norm3.weight": (1024,),
        "patch_embed.proj.weight": (768, 1024, 1, 1),
        "patch_embed.proj.bias": (768,),
        "pos_embed": (1, 1 + 24 * 24, 768),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    # Only blocks.0 of each stage projects its shortcut; no backbone conv has a bias.
    assert not any("downsample" in k for k in state if ".blocks.0." not in k)
    assert not any("backbone" in k and "conv" in k and k.endswith(".bias") for k in state)
    assert r50_meta.patch_embed.grid_size == (24, 24) and r50_meta.patch_embed.patch_size == 16


def test_tiny_hybrid_forward_shapes():
    model = tiny_hybrid()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, 1 + 4 * 4, 64)
    assert logits.shape == (2, 10)
    assert model.patch_embed.backbone(x).shape == (2, 1024, 4, 4)
    assert torch.isfinite(features).all()


def test_tiny_hybrid_trains():
    model = tiny_hybrid(zero_head=False).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert model.patch_embed.backbone.stem.conv.weight.grad.abs().sum() > 0


def test_weight_standardisation_standardises():
    torch.manual_seed(0)
    conv = StdConv2d(8, 16, kernel_size=3)
    with torch.no_grad():
        conv.weight.mul_(0.5 + 5 * torch.rand(16, 1, 1, 1)).add_(torch.randn(16, 1, 1, 1))
    w = conv.standardized_weight().flatten(1)
    torch.testing.assert_close(w.mean(dim=1), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(dim=1, correction=0), torch.ones(16), atol=1e-4, rtol=0)
    x = torch.randn(1, 8, 10, 10)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.standardized_weight(), padding=1))
    # Scaling or shifting a channel's raw weights does not change the output.
    with torch.no_grad():
        before = conv(x)
        conv.weight.mul_(3.0).add_(0.5)
    torch.testing.assert_close(conv(x), before, atol=1e-4, rtol=1e-4)


def test_same_padding_is_tensorflows():
    assert same_padding(224, 7, 2) == (2, 3)  # odd total: the extra pixel goes after
    assert same_padding(225, 7, 2) == (3, 3)
    assert same_padding(56, 3, 2) == (0, 1)
    assert same_padding(56, 1, 2) == (0, 0)
    conv = StdConv2d(3, 32, kernel_size=3, stride=2)
    assert conv(torch.randn(1, 3, 15, 16)).shape[-2:] == (8, 8)  # ceil(size / stride)
    # Max-pool padding never wins: all-negative inputs stay negative at the border.
    pooled = MaxPool2dSame(3, 2)(-torch.rand(1, 1, 8, 8) - 1)
    assert pooled.shape[-2:] == (4, 4) and (pooled < -1).all()


def test_each_block_starts_as_identity_residual():
    model = tiny_hybrid()
    blocks = [m for m in model.patch_embed.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 3
    assert all((b.norm3.weight == 0).all() and (b.norm3.bias == 0).all() for b in blocks)


def test_grid_size_non_square():
    model = tiny_hybrid(img_size=(64, 96))
    assert model.patch_embed.grid_size == (4, 6) and model.grid_size == (4, 6)
    assert model.patch_embed.img_size == (64, 96)
    assert model.pos_embed.shape == (1, 1 + 24, 64)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 96)).shape == (1, 25, 64)


def test_stride_follows_the_stages():
    assert backbone_stride((3, 4, 9)) == 16
    assert backbone_stride((3, 4, 6, 3)) == 32
    assert backbone_stride((2,)) == 4
    embed = HybridEmbed((64, 32), 8, 3, 32, (1, 1))
    assert embed.patch_size == 8 and embed.grid_size == (8, 4)
    assert embed(torch.randn(1, 3, 64, 32)).shape == (1, 32, 32)


def test_wrong_input_raises():
    model = tiny_hybrid()
    with pytest.raises(VitlabError, match="64x64"):
        model(torch.randn(1, 3, 96, 64))
    with pytest.raises(VitlabError, match="channels"):
        model(torch.randn(1, 1, 64, 64))


def test_bad_configurations_raise():
    with pytest.raises(VitlabError, match="stride 16"):
        vitlab.create_model("vit_base_r50_s16_384", **{**TINY, "patch_size": 32})
    with pytest.raises(VitlabError, match="multiple"):
        vitlab.create_model("vit_base_r50_s16_384", **{**TINY, "img_size": 72})


def test_fused_and_exact_attention_agree():
    model = tiny_hybrid(depth=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        exact = model.forward_intermediates(x, return_attention=True)
        fused = model.forward_features(x)
    assert len(exact.attentions) == 2 and exact.attentions[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(exact.features, fused, atol=1e-5, rtol=1e-5)
