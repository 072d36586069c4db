"""timm ViT state dicts ↔ vitlab, and what a ViT state dict's tensors say about its architecture.

vitlab's state-dict names are timm's, so reading a timm file is reading its tensors; the work is inference.
`infer_config` reads the architecture off the tensors (under vitlab names) for every format, since the
Hugging Face and npz readers rename into these names first. What tensors cannot tell is the head count: a
bare timm state dict does not record it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import Tensor

from vitlab.checkpoints.base import Checkpoint, Evidence, Format, seen_in, shape_of
from vitlab.checkpoints.files import listing, read_json, read_tensors, safetensors_writer, write_files
from vitlab.errors import VitlabError
from vitlab.models.registry import MODELS
from vitlab.models.vit import VisionTransformer

_BLOCK = re.compile(r"blocks\.(\d+)\.")
_QKV = re.compile(r"blocks\.\d+\.attn\.qkv\.weight")
_STAGE_BLOCK = re.compile(r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")
# Parts of timm ViT variants that vitlab's ViT does not have, found by a piece of their tensor names.
_UNSUPPORTED = {
    "dist_token": "a DeiT distillation token",
    "head_dist.": "a DeiT distillation head",
    "reg_token": "register tokens",
    "norm_pre.": "a LayerNorm before the blocks (CLIP-style)",
    "attn_pool.": "an attention-pool (MAP) head",
    ".ls1.": "LayerScale",
    ".q_norm.": "query-key normalisation",
}
# What a bare timm file does not record; timm's default ViT preprocessing, with Google's mean/std.
_PREPROCESSING = {"interpolation": "bicubic", "crop_pct": 0.9}


def looks_like_timm_vit(names: list[str]) -> bool:
    return "patch_embed.proj.weight" in names and any(_QKV.fullmatch(name) for name in names)


def infer_config(tensors: dict[str, Tensor], origin: str) -> dict[str, Evidence]:
    """The ViTConfig fields a ViT state dict (vitlab names) determines, each with the tensor that shows it."""
    for piece, what in _UNSUPPORTED.items():
        found = next((name for name in tensors if piece in name), None)
        if found:
            raise VitlabError(f"{origin}: {found} belongs to {what}, a ViT variant vitlab does not implement")
    for name in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.attn.qkv.weight"):
        if name not in tensors:
            raise VitlabError(f"{origin}: no tensor {name}, so this is not a complete ViT state dict")
    proj = tensors["patch_embed.proj.weight"]
    facts = {"embed_dim": seen_in(tensors, "patch_embed.proj.weight", proj.shape[0])}
    facts.update(_patch_embedding_facts(tensors, origin))
    facts["depth"] = Evidence(_depth(tensors, origin), "the blocks.N tensors")
    facts["mlp_dim"] = seen_in(tensors, "blocks.0.mlp.fc1.weight", tensors["blocks.0.mlp.fc1.weight"].shape[0])
    facts.update(_presence(tensors, qkv_bias="blocks.0.attn.qkv.bias", class_token="cls_token", fc_norm="fc_norm.weight"))
    facts["representation_size"] = _rows(tensors, "pre_logits.fc.weight", None)
    facts["num_classes"] = _rows(tensors, "head.weight", 0)
    if "pos_embed" in tensors:
        _check_pos_embed(tensors, proj.shape[0], origin)
        facts["pos_embed"] = seen_in(tensors, "pos_embed", "learned")
    else:
        facts["pos_embed"] = Evidence("sincos2d", "no pos_embed tensor (a fixed sin-cos table)")
    return facts


def _patch_embedding_facts(tensors: dict[str, Tensor], origin: str) -> dict[str, Evidence]:
    proj = tensors["patch_embed.proj.weight"]
    stages: dict[int, set[int]] = {}
    for name in tensors:
        if match := _STAGE_BLOCK.match(name):
            stages.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not any(name.startswith("patch_embed.backbone.") for name in tensors):
        if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
            where = shape_of(tensors, "patch_embed.proj.weight")
            raise VitlabError(f"{origin}: {where} is not a square-patch convolution (D, C, P, P)")
        return {
            "patch_size": seen_in(tensors, "patch_embed.proj.weight", proj.shape[2]),
            "in_chans": seen_in(tensors, "patch_embed.proj.weight", proj.shape[1]),
            "hybrid_layers": Evidence(None, "no patch_embed.backbone.* tensors"),
        }
    from vitlab.models.resnet import backbone_stride  # only hybrids need the CNN stem

    if sorted(stages) != list(range(len(stages))) or any(sorted(b) != list(range(len(b))) for b in stages.values()):
        raise VitlabError(f"{origin}: the hybrid's patch_embed.backbone.stages.S.blocks.B tensors skip a stage or block")
    layers = tuple(len(stages[s]) for s in sorted(stages))
    where = f"the patch_embed.backbone.stages.S.blocks.B tensors ({len(layers)} stages)"
    stem = "patch_embed.backbone.stem.conv.weight"
    if stem not in tensors:
        raise VitlabError(f"{origin}: hybrid ViT without {stem}, so its ResNet stem is incomplete")
    return {
        "hybrid_layers": Evidence(layers, where),
        "patch_size": Evidence(backbone_stride(layers) * proj.shape[2], where),
        "in_chans": seen_in(tensors, stem, tensors[stem].shape[1]),
    }


def _depth(tensors: dict[str, Tensor], origin: str) -> int:
    indices = sorted({int(m.group(1)) for name in tensors if (m := _BLOCK.match(name))})
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        found = f"{indices[0]}..{indices[-1]}"
        raise VitlabError(f"{origin}: block(s) {listing([str(i) for i in missing])} missing (found blocks {found})")
    return len(indices)


def _presence(tensors: dict[str, Tensor], **names: str) -> dict[str, Evidence]:
    found = {field: name in tensors for field, name in names.items()}
    return {field: Evidence(found[field], f"{names[field]} {'present' if found[field] else 'absent'}") for field in names}


def _rows(tensors: dict[str, Tensor], name: str, absent: Any) -> Evidence:
    return seen_in(tensors, name, tensors[name].shape[0]) if name in tensors else Evidence(absent, f"no {name}")


def _check_pos_embed(tensors: dict[str, Tensor], dim: int, origin: str) -> None:
    shape = tuple(tensors["pos_embed"].shape)
    if len(shape) != 3 or shape[0] != 1 or shape[2] != dim:
        raise VitlabError(f"{origin}: pos_embed is {shape}, expected (1, tokens, {dim})")


def patch_positions(tensors: dict[str, Tensor], class_token: bool) -> int | None:
    """How many patch positions the learned position embedding covers (None without one)."""
    if "pos_embed" not in tensors:
        return None
    return tensors["pos_embed"].shape[1] - int(class_token)


# --- reading --------------------------------------------------------------------------------------------


def read_timm(fmt: Format) -> Checkpoint:
    """A bare timm state dict file, or a timm hub folder (config.json with `architecture` + weights)."""
    checkpoint = Checkpoint(read_tensors(fmt.weights[0]), str(fmt), preprocessing=dict(_PREPROCESSING))
    if fmt.path.is_dir():
        _read_hub_config(fmt.path / "config.json", checkpoint)
    return checkpoint


def _read_hub_config(path: Path, checkpoint: Checkpoint) -> None:
    """timm's hub config.json: the model name, the pretrained input size, preprocessing and class names."""
    config = read_json(path)
    if config.get("model_args"):
        raise VitlabError(
            f"{path}: model_args {config['model_args']} are not read by vitlab: pass them as keyword overrides "
            "to load_pretrained (e.g. num_heads=6)"
        )
    if config.get("architecture") in MODELS:
        checkpoint.model_name = config["architecture"]
    if "global_pool" in config:
        checkpoint.defaults["global_pool"] = config["global_pool"]
    pretrained = config.get("pretrained_cfg") or {}
    if isinstance(pretrained.get("input_size"), list) and len(pretrained["input_size"]) == 3:
        chans, height, width = pretrained["input_size"]
        checkpoint.recorded["img_size"] = Evidence((height, width), f"{path} pretrained_cfg.input_size")
        checkpoint.recorded["in_chans"] = Evidence(chans, f"{path} pretrained_cfg.input_size")
    for key in ("mean", "std", "crop_pct", "interpolation"):
        if key in pretrained:
            checkpoint.preprocessing[key] = pretrained[key]
    if isinstance(config.get("label_names"), list):
        checkpoint.labels = [str(label) for label in config["label_names"]]


# --- writing --------------------------------------------------------------------------------------------


def timm_state_dict(model: VisionTransformer) -> dict[str, Tensor]:
    """The model's tensors under timm's names; a fixed sin-cos table is written as a (learned) pos_embed."""
    tensors = dict(model.state_dict())
    tensors.setdefault("pos_embed", model.pos_embed)
    return tensors


def check_timm_path(path: Path) -> None:
    if path.suffix != ".safetensors":
        raise VitlabError(f"{path}: a timm checkpoint is one .safetensors file; give a path ending in .safetensors")


def save_timm(model: VisionTransformer, path: Path) -> Path:
    """Write the model as one timm-named `.safetensors` file (no config: timm users pass the architecture)."""
    check_timm_path(path)
    write_files(path.parent, {path.name: safetensors_writer(timm_state_dict(model))})
    return path
