"""Optimiser parameter groups, the optimiser, and the warmup + cosine learning-rate schedule.

The schedule is a plain function of the step: nothing in it carries state, so a resumed run that knows its
step sets exactly the learning rate the uninterrupted run had. Each parameter group carries `lr_scale`
(1.0 unless layer-wise decay is on); `set_lr` writes `lr_at(step) * lr_scale` into every group.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vitlab.errors import VitlabError


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            getattr(model, "module", None) if isinstance(model, nn.parallel.DistributedDataParallel) else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Trainable parameters that get no weight decay: biases, norms (every tensor with ndim <= 1) and
    whatever `model.no_weight_decay()` names (a ViT's position embeddings and class token)."""
    model = unwrap_model(model)
    named = getattr(model, "no_weight_decay", None)
    skip = set(named()) if callable(named) else set()
    return {name for name, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or name in skip)}


def vit_layer_id(name: str, depth: int) -> int:
    """The layer a ViT parameter belongs to for layer-wise lr decay: the embeddings (patch_embed, cls_token,
    pos_embed) are layer 0, `blocks.i` is layer i + 1, everything after the blocks (norm, head) depth + 1."""
    if name.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimiser parameter groups: decayed and not decayed (see `no_weight_decay_names`), split further by
    layer when `layer_decay` is given, each with `lr_scale` and the `param_names` it holds.

    Layer-wise decay (BEiT, MAE fine-tuning): a parameter of layer id `i` (see `vit_layer_id`) gets
    lr_scale = layer_decay ** (depth + 1 - i), so the head keeps the full lr and the patch embedding the
    smallest. It needs a model with `blocks` (a ViT). Frozen parameters (requires_grad False) are left out.
    """
    model = unwrap_model(model)
    skip = no_weight_decay_names(model)
    depth = None
    if layer_decay is not None:
        if not 0.0 < layer_decay <= 1.0:
            raise VitlabError(f"layer_decay must be in (0, 1], got {layer_decay}")
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            raise VitlabError(f"layer-wise lr decay needs a ViT (a model with .blocks); {type(model).__name__} has none")
        depth = len(blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = name not in skip
        layer = vit_layer_id(name, depth) if depth is not None else 0
        key = (layer, decayed)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer) if depth is not None and layer_decay is not None else 1.0
            groups[key] = {"params": [], "param_names": [], "weight_decay": weight_decay if decayed else 0.0,
                           "lr_scale": scale}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    *,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW (DeiT's) or SGD with momentum 0.9 (the paper's fine-tuning) over `param_groups(model, ...)`.

    Each group starts at lr * lr_scale. `fused=None` uses PyTorch's fused kernels (one kernel for all
    parameters; CPU and CUDA) when this build has them for the parameters' device, else the foreach path.
    """
    groups = param_groups(model, weight_decay, layer_decay)
    if not groups:
        raise VitlabError("the model has no trainable parameters")
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    name = name.lower()
    if name not in ("adamw", "sgd"):
        raise VitlabError(f"unknown optimizer {name!r}; choose adamw or sgd")

    def make(use_fused: bool | None) -> torch.optim.Optimizer:
        extra = {"fused": True} if use_fused else {}
        fresh = [dict(group) for group in groups]  # the constructor fills the dicts in; a retry needs clean ones
        if name == "adamw":
            return torch.optim.AdamW(fresh, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
        return torch.optim.SGD(fresh, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)

    if fused is False:
        return make(False)
    try:
        return make(True)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device/dtype in this build
        if fused:
            raise
        return make(False)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """The learning rate for optimiser step `step` (0-based): linear warmup, then cosine decay to `min_lr`.

    Warmup: steps 0 .. warmup_steps - 1 get base_lr * (step + 1) / warmup_steps, so the first step already
    moves and the last warmup step reaches base_lr. Cosine: from base_lr at step `warmup_steps` down to
    min_lr at step `total_steps` (and after it).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(
    optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """Set every group's lr to lr_at(step, ...) * group['lr_scale'] (1 when absent); return lr_at(step, ...)."""
    lr = lr_at(step, total_steps, warmup_steps, base_lr, min_lr)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def schedule_steps(epochs: int, steps_per_epoch: int, warmup_epochs: float) -> tuple[int, int]:
    """(total_steps, warmup_steps) for a run; warmup is rounded to whole steps and capped at the total."""
    total = epochs * steps_per_epoch
    return total, min(round(warmup_epochs * steps_per_epoch), total)

