"""Google .npz layouts, written in the test from a vitlab model's tensors by the inverse transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.checkpoints import detect_format, load_pretrained
from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer

BLOCKS = {
    "vit_jax pre-linen": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "vit_jax linen": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
    "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}


def to_flax(model: VisionTransformer, layout: str) -> dict[str, np.ndarray]:
    """The model's parameters as Google's code stores them (Dense (in, out), per-head attention, HWIO conv)."""
    sd = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    dim, heads = model.config.embed_dim, model.config.num_heads
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
    }
    if "cls_token" in sd:
        out["cls"] = sd["cls_token"]
    if layout == "big_vision":  # no position for the class token
        out["pos_embedding"] = sd["pos_embed"][:, model.num_prefix_tokens :]
    else:
        out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    for i in range(model.config.depth):
        ln1, attn, ln2, mlp = (f"Transformer/encoderblock_{i}/{name}" for name in BLOCKS[layout])
        b = f"blocks.{i}."
        out.update({f"{ln1}/scale": sd[b + "norm1.weight"], f"{ln1}/bias": sd[b + "norm1.bias"]})
        out.update({f"{ln2}/scale": sd[b + "norm2.weight"], f"{ln2}/bias": sd[b + "norm2.bias"]})
        q, k, v = np.split(sd[b + "attn.qkv.weight"], 3)
        for name, weight in zip(("query", "key", "value"), (q, k, v)):
            out[f"{attn}/{name}/kernel"] = weight.T.reshape(dim, heads, dim // heads)
        if b + "attn.qkv.bias" in sd:
            for name, bias in zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.bias"], 3)):
                out[f"{attn}/{name}/bias"] = bias.reshape(heads, dim // heads)
        out[f"{attn}/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(heads, dim // heads, dim)
        out[f"{attn}/out/bias"] = sd[b + "attn.proj.bias"]
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{mlp}/{dense}/kernel"] = sd[f"{b}mlp.{fc}.weight"].T
            out[f"{mlp}/{dense}/bias"] = sd[f"{b}mlp.{fc}.bias"]
    out.update({"Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"]})
    for module, prefix in (("pre_logits", "pre_logits.fc"), ("head", "head")):
        if f"{prefix}.weight" in sd:
            out.update({f"{module}/kernel": sd[f"{prefix}.weight"].T, f"{module}/bias": sd[f"{prefix}.bias"]})
    return {("params/" if layout == "big_vision" else "") + name: a for name, a in out.items()}


def check(model: VisionTransformer, path: Path, inputs: Callable) -> VisionTransformer:
    loaded = load_pretrained(path)
    x = inputs(model)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() <= 1e-5
    assert loaded.config.num_heads == model.config.num_heads and loaded.config.gelu == "tanh"
    return loaded


@pytest.mark.parametrize("layout", list(BLOCKS))
def test_layouts(layout: str, tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(gelu="tanh", num_heads=2, representation_size=24)
    if layout == "big_vision":
        with torch.no_grad():
            model.pos_embed[:, 0] = 0  # big_vision adds no position embedding to the class token
    np.savez(tmp_path / "model.npz", **to_flax(model, layout))
    assert detect_format(tmp_path / "model.npz").layout == layout
    loaded = check(model, tmp_path / "model.npz", inputs)
    assert loaded.preprocessing.interpolation == "bilinear" and loaded.preprocessing.crop_pct == 1.0


def test_big_vision_gap_without_class_token(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    model = make_vit(gelu="tanh", class_token=False, global_pool="avg", qkv_bias=False, img_size=(16, 16))
    np.savez(tmp_path / "gap.npz", **to_flax(model, "big_vision"))
    loaded = check(model, tmp_path / "gap.npz", inputs)
    assert not loaded.config.class_token and loaded.config.global_pool == "avg" and not loaded.config.qkv_bias


def test_gelu_override(tmp_path: Path, make_vit: Callable) -> None:
    np.savez(tmp_path / "model.npz", **to_flax(make_vit(gelu="tanh"), "vit_jax linen"))
    assert load_pretrained(tmp_path / "model.npz", gelu="exact").config.gelu == "exact"


def test_heads_override_must_agree(tmp_path: Path, make_vit: Callable) -> None:
    np.savez(tmp_path / "model.npz", **to_flax(make_vit(num_heads=4), "vit_jax pre-linen"))
    with pytest.raises(VitlabError, match=r"num_heads=8 contradicts .*query/kernel \(32, 4, 8\).* means num_heads=4"):
        load_pretrained(tmp_path / "model.npz", num_heads=8)


def test_extra_arrays_are_reported(tmp_path: Path, make_vit: Callable) -> None:
    arrays = to_flax(make_vit(), "big_vision")
    arrays["params/MAPHead_0/probe"] = np.zeros((1, 1, 32), np.float32)
    np.savez(tmp_path / "map.npz", **arrays)
    with pytest.raises(VitlabError, match="1 arrays have no place in vitlab's ViT \\(params/MAPHead_0/probe\\)"):
        load_pretrained(tmp_path / "map.npz")


def test_object_arrays_are_not_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "objects.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(VitlabError, match="objects.npz"):
        load_pretrained(tmp_path / "objects.npz")


def test_old_optimizer_prefix(tmp_path: Path, make_vit: Callable, inputs: Callable) -> None:
    """Old flax checkpoints keep the parameters under opt/target/, next to optimizer state."""
    model = make_vit(gelu="tanh")
    arrays = {f"opt/target/{name}": a for name, a in to_flax(model, "vit_jax pre-linen").items()}
    arrays["opt/state/step"] = np.array(10)
    np.savez(tmp_path / "old.npz", **arrays)
    check(model, tmp_path / "old.npz", inputs)
