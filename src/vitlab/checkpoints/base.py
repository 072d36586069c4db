"""What every format's reader hands to the loader: tensors under vitlab's names plus what the source records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor


@dataclass(frozen=True)
class Evidence:
    """A value known about a checkpoint and where it comes from, for error messages."""

    value: Any
    where: str  # e.g. "patch_embed.proj.weight (64, 3, 4, 4)" or "hf_vit/config.json hidden_size"
    tensor: str | None = None  # the tensor whose shape shows the value, if one does


def seen_in(tensors: dict[str, Tensor], name: str, value: Any) -> Evidence:
    """Evidence that the shape of tensor `name` shows `value`."""
    return Evidence(value, shape_of(tensors, name), name)


@dataclass
class Checkpoint:
    """A checkpoint read from disk, in vitlab's terms.

    `recorded` holds the ViTConfig fields that the source's metadata states (a config file, or a tensor layout
    that encodes them, as npz's per-head kernels). `defaults` are the format's conventions for what it does not
    state (Google's tanh GELU, Hugging Face's LayerNorm eps). `preprocessing` holds Preprocessing fields.
    """

    tensors: dict[str, Tensor]  # vitlab (= timm) names and layouts
    origin: str  # how to name the checkpoint in messages, e.g. "timm state dict /x/model.safetensors"
    recorded: dict[str, Evidence] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    model_name: str | None = None  # a registered name the source records (timm's hub config "architecture")


def shape_of(tensors: dict[str, Tensor], name: str) -> str:
    """`name (d0, d1, ...)`, the way messages show a tensor."""
    return f"{name} {tuple(tensors[name].shape)}"


FormatKind = Literal["vitlab", "hf", "timm", "npz"]
_KIND_NAMES = {"vitlab": "vitlab", "hf": "Hugging Face ViT", "timm": "timm ViT", "npz": "Google ViT .npz"}


@dataclass(frozen=True)
class Format:
    """A checkpoint's format as told by its structure (see `detect_format`)."""

    kind: FormatKind
    layout: str  # in words: "folder", "state dict", "hub folder", "vit_jax pre-linen", "big_vision", ...
    path: Path  # the folder or file that was given
    weights: tuple[Path, ...]  # the tensor file(s) to read

    def __str__(self) -> str:
        return f"{_KIND_NAMES[self.kind]} {self.layout} {self.path}"
