"""Hugging Face transformers ViT (`ViTModel`, `ViTForImageClassification`) ↔ vitlab.

The tensors need renames only, plus q, k and v fused into timm's `qkv` (stacked on dim 0). Names are read in
both spellings: the classic on-disk ones (`encoder.layer.N.attention.attention.query`, what `save_pretrained`
writes) and those of transformers ≥ 5 modules in memory (`layers.N.attention.q_proj`, what
`torch.save(model.state_dict())` gives). `ViTModel` files have no `vit.` prefix; its tanh pooler is the paper's
pre-logits layer. What tensors can't tell (heads, eps, activation, image size, labels) comes from config.json.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitlab.checkpoints.base import Checkpoint, Evidence, Format, shape_of
from vitlab.checkpoints.files import json_writer, read_json, read_tensors, safetensors_writer, write_files
from vitlab.checkpoints.timm import timm_state_dict
from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer

# vitlab module → Hugging Face module (outside the blocks).
_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj": "embeddings.patch_embeddings.projection",
    "norm": "layernorm",
    "pre_logits.fc": "pooler.dense",
    "head": "classifier",
}
# vitlab module inside block N → (Hugging Face on disk, transformers ≥ 5 in memory). q/k/v are fused later.
_BLOCK = {
    "norm1": ("layernorm_before", "layernorm_before"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "attn.q": ("attention.attention.query", "attention.q_proj"),
    "attn.k": ("attention.attention.key", "attention.k_proj"),
    "attn.v": ("attention.attention.value", "attention.v_proj"),
    "attn.proj": ("attention.output.dense", "attention.o_proj"),
    "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
    "mlp.fc2": ("output.dense", "mlp.fc2"),
}
_HF_BLOCK = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)")
_VITLAB_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_SPLIT_QKV = re.compile(r"blocks\.(\d+)\.attn\.[qkv]\.\w+")  # renamed, not yet fused
_GELU = {"gelu": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}
_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL's Resampling codes, as preprocessor configs store them
# HF ViTConfig / ViTImageProcessor defaults, for what config files leave out.
_DEFAULTS = {"layer_norm_eps": 1e-12, "gelu": "exact"}
_PREPROCESSING = {"mean": 0.5, "std": 0.5, "interpolation": "bilinear", "crop_pct": 1.0}


def _rename(name: str, table: dict[str, str]) -> str | None:
    """`table` maps module (or parameter) names; the parameter suffix (.weight, .bias) is carried over."""
    if name in table:
        return table[name]
    module, _, param = name.rpartition(".")
    return f"{table[module]}.{param}" if module in table else None


def looks_like_hf_vit(names: list[str]) -> bool:
    return any(name.removeprefix("vit.") == "embeddings.patch_embeddings.projection.weight" for name in names)


def hf_weight_files(folder: Path) -> tuple[Path, ...]:
    """The tensor files of a Hugging Face folder: one file, or the shards an index names."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return (folder / name,)
        index = folder / f"{name}.index.json"
        if index.is_file():
            weight_map = read_json(index).get("weight_map") or {}
            return tuple(folder / shard for shard in sorted(set(weight_map.values())))
    return ()


# --- reading --------------------------------------------------------------------------------------------


def hf_to_vitlab(tensors: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """Rename Hugging Face ViT tensors to vitlab's and fuse q, k, v; a pooler next to a classifier is dropped
    (Hugging Face's classifier reads the class token, not the pooler)."""
    from_top = {hf: vitlab for vitlab, hf in _TOP.items()}
    from_block = {hf: vitlab for vitlab, names in _BLOCK.items() for hf in names}
    renamed: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        short = name.removeprefix("vit.")
        block = _HF_BLOCK.fullmatch(short)
        if block:
            inner = _rename(block.group(2), from_block)
            target = f"blocks.{block.group(1)}.{inner}" if inner else None
        else:
            target = _rename(short, from_top)
        if target is None:
            raise VitlabError(f"{origin}: tensor {name} has no counterpart in vitlab's ViT (is this a ViT variant?)")
        renamed[target] = tensor
    if "head.weight" in renamed:
        renamed = {name: t for name, t in renamed.items() if not name.startswith("pre_logits.")}
    return _fuse_qkv(renamed, origin)


def _fuse_qkv(tensors: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    split = {name: match.group(1) for name in tensors if (match := _SPLIT_QKV.fullmatch(name))}
    fused = {name: t for name, t in tensors.items() if name not in split}
    for i in sorted(set(split.values()), key=int):
        for param in ("weight", "bias"):
            parts = [f"blocks.{i}.attn.{p}.{param}" for p in "qkv"]
            present = [part in tensors for part in parts]
            if any(present) and not all(present):
                raise VitlabError(f"{origin}: block {i} has only some of the query/key/value {param}s")
            if all(present):
                fused[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([tensors[part] for part in parts])
    return fused


def read_hf(fmt: Format) -> Checkpoint:
    """A Hugging Face ViT folder (config.json + weights), or a bare file of Hugging Face tensor names."""
    tensors: dict[str, Tensor] = {}
    for path in fmt.weights:
        tensors.update(read_tensors(path))
    tensors = hf_to_vitlab(tensors, str(fmt))
    checkpoint = Checkpoint(tensors, str(fmt), defaults=dict(_DEFAULTS), preprocessing=dict(_PREPROCESSING))
    if fmt.path.is_dir():
        _read_config(fmt.path / "config.json", checkpoint)
        if (fmt.path / "preprocessor_config.json").is_file():
            checkpoint.preprocessing.update(_read_preprocessing(fmt.path / "preprocessor_config.json"))
    return checkpoint


def _read_config(path: Path, checkpoint: Checkpoint) -> None:
    config = read_json(path)

    def record(field: str, key: str, value: Any = None) -> None:
        if key in config:
            checkpoint.recorded[field] = Evidence(config[key] if value is None else value, f"{path} {key}")

    for field, key in [
        ("embed_dim", "hidden_size"),
        ("depth", "num_hidden_layers"),
        ("num_heads", "num_attention_heads"),
        ("mlp_dim", "intermediate_size"),
        ("in_chans", "num_channels"),
        ("qkv_bias", "qkv_bias"),
        ("layer_norm_eps", "layer_norm_eps"),
    ]:
        record(field, key)
    if "image_size" in config:
        record("img_size", "image_size", _pair(config["image_size"], path, "image_size"))
    if "patch_size" in config:
        height, width = _pair(config["patch_size"], path, "patch_size")
        if height != width:
            raise VitlabError(f"{path}: patch_size {config['patch_size']} is not square; vitlab's ViT uses square patches")
        record("patch_size", "patch_size", height)
    if "hidden_act" in config:
        if config["hidden_act"] not in _GELU:
            raise VitlabError(
                f"{path}: hidden_act {config['hidden_act']!r} is not supported: vitlab's ViT uses "
                f"{', '.join(repr(a) for a in _GELU)} (exact or tanh GELU)"
            )
        record("gelu", "hidden_act", _GELU[config["hidden_act"]])
    if "pre_logits.fc.weight" in checkpoint.tensors and config.get("pooler_act", "tanh") != "tanh":
        raise VitlabError(f"{path}: pooler_act {config['pooler_act']!r} is not supported; vitlab's pre-logits layer is tanh")
    checkpoint.labels = _labels(config, path, checkpoint.tensors)


def _pair(value: Any, path: Path, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    raise VitlabError(f"{path}: {key} should be an integer or [height, width], got {value!r}")


def _labels(config: dict[str, Any], path: Path, tensors: dict[str, Tensor]) -> list[str] | None:
    id2label = config.get("id2label")
    if "head.weight" not in tensors or not isinstance(id2label, dict):
        return None
    try:
        labels = [str(label) for _, label in sorted((int(k), v) for k, v in id2label.items())]
    except ValueError:
        raise VitlabError(f"{path}: id2label keys must be class indices, got {sorted(id2label)[:5]}") from None
    if len(labels) != tensors["head.weight"].shape[0]:
        classifier = shape_of(tensors, "head.weight")
        raise VitlabError(f"{path}: id2label has {len(labels)} labels but the classifier is {classifier}")
    if labels == [f"LABEL_{i}" for i in range(len(labels))]:  # transformers' placeholders: no names known
        return None
    return labels


def _read_preprocessing(path: Path) -> dict[str, Any]:
    config = read_json(path)
    found: dict[str, Any] = {}
    if config.get("do_normalize", True):
        found.update({field: config[key] for field, key in (("mean", "image_mean"), ("std", "image_std")) if key in config})
    else:
        found.update(mean=0.0, std=1.0)
    resample = config.get("resample")
    names = {code: name for name, code in _PIL_FILTERS.items()}
    if resample is not None:
        if resample not in names and resample not in _PIL_FILTERS:
            known = ", ".join(f"{code} ({name})" for name, code in _PIL_FILTERS.items())
            raise VitlabError(f"{path}: resample {resample!r} is not one of {known}: pass interpolation= to override")
        found["interpolation"] = names.get(resample, resample)
    return found


# --- writing --------------------------------------------------------------------------------------------


def vitlab_to_hf(tensors: dict[str, Tensor], classifier: bool) -> dict[str, Tensor]:
    """vitlab tensors under Hugging Face's on-disk names: `ViTForImageClassification`'s (`vit.` prefix) when
    there is a classifier, else `ViTModel`'s."""
    to_block = {vitlab: names[0] for vitlab, names in _BLOCK.items()}
    prefix = "vit." if classifier else ""
    renamed: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        block = _VITLAB_BLOCK.fullmatch(name)
        if block and block.group(2).startswith("attn.qkv."):
            param = block.group(2).rpartition(".")[2]
            for part, chunk in zip("qkv", tensor.chunk(3)):  # copies: views of one storage can't be saved apart
                renamed[f"{prefix}encoder.layer.{block.group(1)}.{to_block[f'attn.{part}']}.{param}"] = chunk.clone()
        elif block:
            renamed[f"{prefix}encoder.layer.{block.group(1)}.{_rename(block.group(2), to_block)}"] = tensor
        else:
            target = _rename(name, _TOP)
            renamed[target if target.startswith("classifier") else prefix + target] = tensor
    return renamed


def _check_representable(model: VisionTransformer) -> None:
    config = model.config
    problems = {
        "a hybrid ResNet stem": config.hybrid_layers is not None,
        "no class token": not config.class_token,
        "average pooling": config.global_pool != "token",
        "a LayerNorm after pooling (fc_norm)": config.fc_norm,
        "a pre-logits layer together with a classifier": bool(config.representation_size) and config.num_classes > 0,
    }
    for what, present in problems.items():
        if present:
            raise VitlabError(
                f"this model has {what}, which Hugging Face's ViT cannot express: convert it to vitlab or timm instead"
            )


def hf_config(model: VisionTransformer) -> dict[str, Any]:
    """A transformers `ViTConfig` dict for the model."""
    config = model.config
    height, width = config.img_size
    data: dict[str, Any] = {
        "architectures": ["ViTForImageClassification" if config.num_classes else "ViTModel"],
        "model_type": "vit",
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.mlp_dim,
        "hidden_act": "gelu" if config.gelu == "exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": config.layer_norm_eps,
        "image_size": height if height == width else [height, width],
        "patch_size": config.patch_size,
        "num_channels": config.in_chans,
        "qkv_bias": config.qkv_bias,
        "encoder_stride": config.patch_size,
        "pooler_output_size": config.representation_size or config.embed_dim,
        "pooler_act": "tanh",
    }
    if config.num_classes:
        labels = model.labels or [f"LABEL_{i}" for i in range(config.num_classes)]
        data["id2label"] = {str(i): label for i, label in enumerate(labels)}
        data["label2id"] = {label: i for i, label in enumerate(labels)}
    return data


def hf_preprocessor_config(model: VisionTransformer) -> dict[str, Any]:
    """A `ViTImageProcessor` config; it has no centre crop, so crop_pct is not carried over."""
    prep = model.preprocessing
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": prep.img_size[0], "width": prep.img_size[1]},
        "resample": _PIL_FILTERS[prep.interpolation],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(prep.mean),
        "image_std": list(prep.std),
    }


def save_hf(model: VisionTransformer, folder: Path) -> Path:
    """Write a folder that `transformers.ViTForImageClassification.from_pretrained` (or `ViTModel`) loads."""
    _check_representable(model)
    tensors = vitlab_to_hf(timm_state_dict(model), classifier=model.config.num_classes > 0)
    write_files(
        folder,
        {
            "model.safetensors": safetensors_writer(tensors),
            "preprocessor_config.json": json_writer(hf_preprocessor_config(model)),
            "config.json": json_writer(hf_config(model)),
        },
    )
    return folder
