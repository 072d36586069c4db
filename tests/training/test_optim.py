"""Parameter groups (weight decay, layer-wise lr decay), the optimiser, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vitlab.errors import VitlabError
from vitlab.training.optim import build_optimizer, lr_at, param_groups, schedule_steps, set_lr, vit_layer_id

NO_DECAY = {"cls_token", "pos_embed", "patch_embed.proj.bias", "norm.weight", "norm.bias", "head.bias"} | {
    f"blocks.{i}.{name}"
    for i in range(2)
    for name in ("norm1.weight", "norm1.bias", "attn.qkv.bias", "attn.proj.bias", "norm2.weight", "norm2.bias",
                 "mlp.fc1.bias", "mlp.fc2.bias")
}
DECAY = {"patch_embed.proj.weight", "head.weight"} | {
    f"blocks.{i}.{name}"
    for i in range(2)
    for name in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
}


def names(groups, decayed):
    return {n for g in groups if (g["weight_decay"] > 0) == decayed for n in g["param_names"]}


def test_no_decay_groups_hold_exactly_biases_norms_pos_embed_and_cls_token(vit):
    groups = param_groups(vit, weight_decay=0.05)
    assert len(groups) == 2
    assert names(groups, decayed=False) == NO_DECAY
    assert names(groups, decayed=True) == DECAY
    assert all(g["lr_scale"] == 1.0 for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(vit.parameters()))


def test_frozen_parameters_are_left_out(vit):
    vit.patch_embed.requires_grad_(False)
    groups = param_groups(vit, 0.05)
    assert not any(n.startswith("patch_embed") for g in groups for n in g["param_names"])


def test_layer_decay_scales_follow_the_formula(vit):
    decay, depth = 0.5, 2
    groups = param_groups(vit, 0.05, layer_decay=decay)
    for group in groups:
        layers = {vit_layer_id(n, depth) for n in group["param_names"]}
        assert len(layers) == 1
        assert group["lr_scale"] == pytest.approx(decay ** (depth + 1 - layers.pop()))
        assert len({n in NO_DECAY for n in group["param_names"]}) == 1  # decay and no-decay never share a group
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["cls_token"] == scale["pos_embed"] == scale["patch_embed.proj.weight"] == 0.125
    assert scale["blocks.0.attn.qkv.weight"] == 0.25 and scale["blocks.1.mlp.fc2.bias"] == 0.5
    assert scale["norm.weight"] == scale["head.weight"] == 1.0
    assert names(groups, decayed=False) == NO_DECAY


def test_layer_decay_needs_a_vit():
    with pytest.raises(VitlabError, match="blocks"):
        param_groups(nn.Linear(3, 2), 0.05, layer_decay=0.7)


def test_build_optimizer_sets_group_lrs_and_steps(vit):
    opt = build_optimizer(vit, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"]  # the CPU build has fused AdamW
    assert {g["lr"] for g in opt.param_groups} == {1e-3 * 0.5**k for k in range(4)}
    sgd = build_optimizer(vit, "sgd", lr=0.1, weight_decay=0.0)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    vit(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    with pytest.raises(VitlabError, match="adamw or sgd"):
        build_optimizer(vit, "lamb", lr=1e-3)


def test_lr_schedule_warmup_and_cosine():
    base, low, total, warm = 1e-3, 1e-5, 110, 10
    assert lr_at(0, total, warm, base, low) == pytest.approx(base / warm)  # warmup start: one step's worth
    assert lr_at(4, total, warm, base, low) == pytest.approx(base * 5 / warm)
    assert lr_at(warm - 1, total, warm, base, low) == pytest.approx(base)  # warmup end
    assert lr_at(warm, total, warm, base, low) == pytest.approx(base)  # cosine start
    assert lr_at(warm + 50, total, warm, base, low) == pytest.approx((base + low) / 2)  # half way
    assert lr_at(total, total, warm, base, low) == pytest.approx(low)  # cosine end
    assert lr_at(total + 5, total, warm, base, low) == pytest.approx(low)
    values = [lr_at(s, total, warm, base, low) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(0, 10, 0, 1.0, 0.0) == 1.0  # no warmup
    assert schedule_steps(3, 7, 0.5) == (21, 4)


def test_set_lr_applies_the_group_scales(vit):
    opt = build_optimizer(vit, lr=1.0, layer_decay=0.5)
    lr = set_lr(opt, 5, 100, 10, base_lr=2e-3)
    assert lr == pytest.approx(2e-3 * 6 / 10)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(lr * group["lr_scale"])
    assert math.isclose(set_lr(opt, 5, 100, 10, base_lr=2e-3), lr)  # a function of the step: no hidden state
