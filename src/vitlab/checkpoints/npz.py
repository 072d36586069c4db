"""Google's ViT `.npz` checkpoints → vitlab: vit_jax (pre-linen and linen names) and big_vision.

Flax layouts differ from PyTorch's: Dense kernels are (in, out); attention keeps heads apart, q/k/v kernels
(D, heads, D_h) and biases (heads, D_h), the output kernel (heads, D_h, D); the patch embedding is an HWIO
conv kernel (P, P, C, D). Three name layouts exist:

    vit_jax pre-linen   encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}
                        (the published gs://vit_models files); position embedding at
                        Transformer/posembed_input/pos_embedding, covering the class slot
    vit_jax linen       encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}
                        (what the repo's current code saves); position embedding as above
    big_vision          linen names under `params/`; `pos_embedding` at the root, without a class slot
                        (big_vision adds it before prepending the class token), absent for sin-cos models

Google's MLP uses the tanh GELU (`flax.linen.gelu`), so npz checkpoints default to gelu="tanh".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vitlab.checkpoints.base import Checkpoint, Evidence, Format
from vitlab.checkpoints.files import listing, read_tensors
from vitlab.errors import VitlabError

_BLOCK_NAMES = {
    "pre-linen": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "linen": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
_VIT_JAX_POS = "Transformer/posembed_input/pos_embedding"
_BIG_VISION_POS = "pos_embedding"
_PREFIXES = ("params/", "opt/target/", "")  # big_vision's tree; old flax optimizer checkpoints; plain
Take = Callable[[str], Tensor]  # pops one array by name, failing clearly when it is missing
_PREPROCESSING = {"mean": 0.5, "std": 0.5, "interpolation": "bilinear", "crop_pct": 1.0}


@dataclass(frozen=True)
class NpzLayout:
    name: str  # "vit_jax pre-linen", "vit_jax linen" or "big_vision"
    prefix: str
    blocks: tuple[str, str, str, str]  # norm1, attention, norm2, MLP module names inside encoderblock_i

    @property
    def pos_key(self) -> str:
        return _BIG_VISION_POS if self.name == "big_vision" else _VIT_JAX_POS


def npz_layout(names: list[str]) -> NpzLayout | None:
    """Which Google layout these array names form, or None."""
    present = set(names)
    for prefix in _PREFIXES:
        if f"{prefix}embedding/kernel" not in present:
            continue
        for naming, blocks in _BLOCK_NAMES.items():
            if f"{prefix}Transformer/encoderblock_0/{blocks[1]}/query/kernel" in present:
                vit_jax = f"{prefix}{_VIT_JAX_POS}" in present
                return NpzLayout(f"vit_jax {naming}" if vit_jax else "big_vision", prefix, blocks)
    return None


def npz_to_vitlab(arrays: dict[str, Tensor], layout: NpzLayout, origin: str) -> tuple[dict[str, Tensor], Evidence]:
    """vitlab tensors from Google's arrays, and the head count their attention kernels show."""
    left = {name[len(layout.prefix) :]: a for name, a in arrays.items() if name.startswith(layout.prefix)}

    def take(key: str) -> Tensor:
        if key not in left:
            raise VitlabError(f"{origin}: no array {layout.prefix}{key}, so this is not a complete {layout.name} ViT")
        return left.pop(key)

    out = {
        "patch_embed.proj.weight": take("embedding/kernel").permute(3, 2, 0, 1),  # HWIO → OIHW
        "patch_embed.proj.bias": take("embedding/bias"),
    }
    if "cls" in left:
        out["cls_token"] = take("cls")
    if layout.pos_key in left:
        pos = take(layout.pos_key)
        if layout.name == "big_vision" and "cls_token" in out:  # the class token gets no position embedding
            pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
        out["pos_embed"] = pos
    query = f"Transformer/encoderblock_0/{layout.blocks[1]}/query/kernel"
    heads = Evidence(left[query].shape[1], f"{layout.prefix}{query} {tuple(left[query].shape)} (D, heads, head_dim)")
    depth = len({m.group(1) for key in left if (m := re.match(r"Transformer/encoderblock_(\d+)/", key))})
    for i in range(depth):
        norm1, attention, norm2, mlp = (f"Transformer/encoderblock_{i}/{name}" for name in layout.blocks)
        out.update(_layer_norm(take, norm1, f"blocks.{i}.norm1"))
        out.update(_attention(take, left, attention, f"blocks.{i}.attn"))
        out.update(_layer_norm(take, norm2, f"blocks.{i}.norm2"))
        out.update(_dense(take, f"{mlp}/Dense_0", f"blocks.{i}.mlp.fc1"))
        out.update(_dense(take, f"{mlp}/Dense_1", f"blocks.{i}.mlp.fc2"))
    out.update(_layer_norm(take, "Transformer/encoder_norm", "norm"))
    for module, target in (("pre_logits", "pre_logits.fc"), ("head", "head")):
        if f"{module}/kernel" in left:
            out.update(_dense(take, module, target))
    if left:
        shown = listing([layout.prefix + key for key in sorted(left)])
        raise VitlabError(
            f"{origin}: {len(left)} arrays have no place in vitlab's ViT ({shown}); is this a hybrid or a MAP-head model?"
        )
    return out, heads


def _layer_norm(take: Take, module: str, target: str) -> dict[str, Tensor]:
    return {f"{target}.weight": take(f"{module}/scale"), f"{target}.bias": take(f"{module}/bias")}


def _dense(take: Take, module: str, target: str) -> dict[str, Tensor]:
    return {f"{target}.weight": take(f"{module}/kernel").T, f"{target}.bias": take(f"{module}/bias")}


def _attention(take: Take, left: dict[str, Tensor], module: str, target: str) -> dict[str, Tensor]:
    """Per-head q/k/v kernels (D, H, D_h) → one (3·D, D) qkv weight; out kernel (H, D_h, D) → (D, D)."""
    parts = ("query", "key", "value")
    out = {f"{target}.qkv.weight": torch.cat([take(f"{module}/{p}/kernel").flatten(1).T for p in parts])}
    if f"{module}/query/bias" in left:
        out[f"{target}.qkv.bias"] = torch.cat([take(f"{module}/{p}/bias").flatten() for p in parts])
    out[f"{target}.proj.weight"] = take(f"{module}/out/kernel").flatten(0, 1).T
    out[f"{target}.proj.bias"] = take(f"{module}/out/bias")
    return out


def read_npz(fmt: Format) -> Checkpoint:
    arrays = read_tensors(fmt.weights[0])
    layout = npz_layout(list(arrays))
    if layout is None:
        raise VitlabError(f"{fmt.path}: no Google ViT layout found in the file")
    tensors, heads = npz_to_vitlab(arrays, layout, str(fmt))
    return Checkpoint(
        tensors,
        str(fmt),
        recorded={"num_heads": heads},
        defaults={"gelu": "tanh"},
        preprocessing=dict(_PREPROCESSING),
    )
