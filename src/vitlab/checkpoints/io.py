"""vitlab's own checkpoint format: a folder with `model.safetensors` and `config.json`.

config.json holds {"format": "vitlab", "version": 1, "architecture": ViTConfig.to_dict(),
"preprocessing": Preprocessing.to_dict(), "labels": [class names] or null, "save_id": "..."}. The same
`save_id` is written into the safetensors header, so a folder whose two files come from different saves
(a save interrupted between replacing them) is detected instead of loading mismatched weights.
"""

from __future__ import annotations

import uuid
from dataclasses import fields
from pathlib import Path

from vitlab.checkpoints.base import Checkpoint, Evidence, Format
from vitlab.checkpoints.files import (
    json_writer,
    read_json,
    read_safetensors_metadata,
    read_tensors,
    safetensors_writer,
    write_files,
)
from vitlab.errors import VitlabError
from vitlab.models.vit import ViTConfig, VisionTransformer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_SAVE_ID = "vitlab_save_id"


def save_pretrained(model: VisionTransformer, folder: str | Path) -> Path:
    """Save `model` (architecture, weights, preprocessing, `model.labels`) to `folder`, atomically.

    Both files are written in full under temporary names first, so an interrupted save leaves the previous
    checkpoint in the folder intact. Other files in the folder are kept. Returns the folder.
    """
    folder = Path(folder)
    labels = model.labels
    if labels is not None and len(labels) != model.config.num_classes:
        raise VitlabError(
            f"model.labels has {len(labels)} names but the model has {model.config.num_classes} classes; "
            "fix or clear model.labels"
        )
    save_id = uuid.uuid4().hex
    config = {
        "format": "vitlab",
        "version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "preprocessing": model.preprocessing.to_dict(),
        "labels": list(labels) if labels is not None else None,
        "save_id": save_id,
    }
    write_files(folder, {WEIGHTS: safetensors_writer(model.state_dict(), {_SAVE_ID: save_id}), CONFIG: json_writer(config)})
    return folder


def read_vitlab(fmt: Format) -> Checkpoint:
    """A folder written by `save_pretrained`: its config records every architecture field."""
    path, weights = fmt.path / CONFIG, fmt.weights[0]
    data = read_json(path)
    if not isinstance(data.get("version"), int) or data["version"] > FORMAT_VERSION:
        raise VitlabError(
            f"{path}: format version {data.get('version')!r} is not one this vitlab reads "
            f"(≤ {FORMAT_VERSION}); upgrade vitlab"
        )
    if not isinstance(data.get("architecture"), dict):
        raise VitlabError(f"{path}: no 'architecture' object; the file is damaged or not written by vitlab")
    try:
        config = ViTConfig.from_dict(data["architecture"])
    except (VitlabError, TypeError) as error:
        raise VitlabError(f"{path}: architecture: {error}") from None
    if data.get("save_id") and read_safetensors_metadata(weights).get(_SAVE_ID) != data["save_id"]:
        raise VitlabError(
            f"{fmt.path}: {WEIGHTS} and {CONFIG} come from different saves (an interrupted save_pretrained?); "
            "save the model again"
        )
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != config.num_classes):
        raise VitlabError(f"{path}: labels should be a list of {config.num_classes} class names, got {labels!r:.80}")
    return Checkpoint(
        read_tensors(weights),
        str(fmt),
        recorded={f.name: Evidence(getattr(config, f.name), f"{path} architecture.{f.name}") for f in fields(ViTConfig)},
        preprocessing=data.get("preprocessing") or {},
        labels=[str(label) for label in labels] if labels is not None else None,
    )
