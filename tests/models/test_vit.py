"""The ViT model: paper structure, orthogonal options, timm's model contract, fused vs exact attention."""

import pytest
import torch

import vitlab
from vitlab import VitlabError, ViTConfig, VisionTransformer
from vitlab.models.registry import MODELS

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5)


def tiny(**overrides) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**{**TINY, **overrides}))
    for name, param in model.named_parameters():  # non-trivial weights everywhere, the head included
        with torch.no_grad():
            param.normal_(0.0, 0.2)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                param.add_(1.0)
    return model.eval()


@pytest.mark.parametrize("name", [name for name, entry in MODELS.items() if entry.params is not None])
def test_parameter_counts_match_the_table(name):
    with torch.device("meta"):
        model = vitlab.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == MODELS[name].params


def test_forward_returns_logits_tensor():
    model = tiny()
    logits = model(torch.randn(2, 3, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)


def test_sequence_layout_follows_equation_1():
    model = tiny()
    images = torch.randn(2, 3, 32, 32)
    tokens = model.embed(images)
    assert tokens.shape == (2, 1 + 16, 32)
    patches = model.patch_embed(images)
    torch.testing.assert_close(tokens[:, 0], (model.cls_token + model.pos_embed[:, :1]).expand(2, 1, 32)[:, 0])
    torch.testing.assert_close(tokens[:, 1:], patches + model.pos_embed[:, 1:])


def test_patch_embedding_is_a_linear_map_of_flattened_patches():
    model = tiny()
    images = torch.randn(1, 3, 32, 32)
    patch = images[0, :, 8:16, 0:8]  # grid row 1, column 0 -> token index 4 (raster order)
    expected = model.patch_embed.proj.weight.flatten(1) @ patch.flatten() + model.patch_embed.proj.bias
    torch.testing.assert_close(model.patch_embed(images)[0, 4], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"global_pool": "avg", "class_token": False}, {"gelu": "tanh"}, {"representation_size": 24}])
def test_exact_attention_path_matches_fused(overrides):
    model = tiny(**overrides)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fused = model.forward_features(images)
        exact = model.forward_intermediates(images, return_attention=True)
    torch.testing.assert_close(exact.features, fused, rtol=0, atol=1e-5)
    assert len(exact.attentions) == 3
    tokens = 16 + model.num_prefix_tokens
    for weights in exact.attentions:
        assert weights.shape == (3, 4, tokens, tokens)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, tokens))


def test_intermediates_hold_every_block_output():
    model = tiny()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_intermediates(images)
        x = model.embed(images)
        for block, hidden in zip(model.blocks, out.hidden_states, strict=True):
            x, _ = block(x)
            torch.testing.assert_close(hidden, x)
    assert out.attentions is None
    torch.testing.assert_close(model.norm(out.hidden_states[-1]), out.features)


def test_forward_head_pre_logits_and_representation_layer():
    model = tiny(representation_size=24)
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (2, 24) and pre.abs().max() <= 1.0  # tanh
    torch.testing.assert_close(model.head(pre), model.forward_head(features))
    assert model.num_features == 24


def test_avg_pool_averages_patch_tokens_only():
    model = tiny(global_pool="avg")
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features[:, 1:].mean(1))


def test_fc_norm_moves_the_final_norm_after_pooling():
    model = tiny(global_pool="avg", class_token=False, fc_norm=True)
    assert isinstance(model.norm, torch.nn.Identity)
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), model.fc_norm(features.mean(1)))


def test_reset_classifier_gives_zero_head():
    model = tiny()
    model.reset_classifier(7)
    assert model.head.out_features == 7 and model.num_classes == 7 == model.config.num_classes
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_no_weight_decay_names_real_parameters():
    model = tiny()
    names = dict(model.named_parameters())
    assert model.no_weight_decay() == {"pos_embed", "cls_token"} and all(n in names for n in model.no_weight_decay())
    fixed = tiny(pos_embed="sincos2d", global_pool="avg", class_token=False)
    assert fixed.no_weight_decay() == set()
    assert "pos_embed" not in fixed.state_dict()


def test_stochastic_depth_follows_linear_schedule_and_is_off_in_eval():
    model = tiny(drop_path_rate=0.2)
    assert [block.drop_path.p for block in model.blocks] == pytest.approx([0.0, 0.1, 0.2])
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(images), tiny(drop_path_rate=0.0)(images))
    model.train()
    torch.manual_seed(1)
    assert not torch.allclose(model(images), tiny()(images))


def test_options_reach_the_layers():
    model = tiny(gelu="tanh", layer_norm_eps=1e-12, qkv_bias=False)
    assert model.blocks[0].mlp.act.approximate == "tanh"
    assert model.blocks[0].norm1.eps == 1e-12 and model.norm.eps == 1e-12
    assert model.blocks[0].attn.qkv.bias is None


def test_zero_head_default_and_optional():
    assert torch.count_nonzero(VisionTransformer(ViTConfig(**TINY)).head.weight) == 0
    assert torch.count_nonzero(VisionTransformer(ViTConfig(**TINY, zero_head=False)).head.weight) > 0


def test_gradients_flow_and_a_batch_can_be_fitted():
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**TINY))
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_wrong_image_size_and_channels_are_explained():
    model = tiny()
    with pytest.raises(VitlabError, match="expected images of 32x32 pixels, got 48x48"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(VitlabError, match="expected 3 channels, got 1"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"class_token": False}, "global_pool='token' needs class_token=True"),
        ({"num_heads": 5}, "not divisible by num_heads"),
        ({"img_size": 30}, "not a multiple of patch_size"),
        ({"global_pool": "max"}, "global_pool='max' is not one of token, avg"),
    ],
)
def test_bad_configs_are_explained(overrides, message):
    with pytest.raises(VitlabError, match=message):
        VisionTransformer(ViTConfig(**{**TINY, **overrides}))


def test_config_round_trips_through_dict():
    config = ViTConfig(**TINY, representation_size=16, hybrid_layers=None)
    assert ViTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(VitlabError, match="unknown ViT config field"):
        ViTConfig.from_dict({**config.to_dict(), "width": 3})


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_inference_fast_path_matches_training_path(gelu):
    """Without autograd, linears (and fc1's GELU) run as fused oneDNN calls; the numbers must not change."""
    model = tiny(gelu=gelu)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(images)
    torch.testing.assert_close(fast, model(images).detach(), rtol=0, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast_bf16 = model(images).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        slow_bf16 = model(images).float().detach()
    torch.testing.assert_close(fast_bf16, slow_bf16, rtol=0, atol=0.05)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    model = tiny()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(images), model(images), rtol=0, atol=1e-5)
