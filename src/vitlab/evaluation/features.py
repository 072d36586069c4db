"""Frozen features of a model over a dataset: pooled pre-logits (B, D') or every token (B, T, D).

`save_features` writes them with their labels: `.safetensors` (tensors `features`, `labels`; class names and
what was extracted in the metadata), `.npz` (arrays `features`, `labels`, `classes`) or `.npy` (the features in
FILE.npy, the labels beside it in FILE.labels.npy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vitlab.checkpoints.files import Writer, npy_writer, npz_writer, safetensors_writer, write_files
from vitlab.data.datasets import ImageDataset
from vitlab.errors import VitlabError
from vitlab.evaluation.classification import to_model_inputs
from vitlab.models.vit import VisionTransformer
from vitlab.precision import autocast

Pool = Literal["pre_logits", "tokens"]
POOLS: tuple[Pool, ...] = ("pre_logits", "tokens")
FORMATS = (".npy", ".npz", ".safetensors")


def fit_dataset(model: VisionTransformer, dataset: ImageDataset) -> ImageDataset:
    """`dataset` as `model` takes it (grey images as RGB for a colour model); a VitlabError when its images are
    smaller than one of the model's patches, which would see less than the whole image at once."""
    dataset = dataset.with_channels(model.preprocessing.channels)
    height, width = dataset.image_size
    size = model.config.img_size
    patch = (size[0] // model.grid_size[0], size[1] // model.grid_size[1])
    if height < patch[0] or width < patch[1]:
        raise VitlabError(
            f"dataset {dataset.name} has {height}×{width} images but the model's patches are {patch[0]}×{patch[1]} "
            f"pixels: a whole image is smaller than one patch. Use a model with patches of at most {height}×{width}, "
            f"or upsample the images to at least {max(patch)} px first (features and fewshot: --resize N)"
        )
    return dataset


def extract_features(
    model: VisionTransformer,
    dataset: ImageDataset,
    *,
    pool: Pool = "pre_logits",
    batch_size: int = 256,
    precision: str = "fp32",
    progress: bool = True,
) -> Tensor:
    """Features of every image of `dataset`, float32 on the CPU: the pooled pre-logits (N, D') with
    `pool="pre_logits"`, or every token after the final norm (N, T, D) with `pool="tokens"`.

    Images are resized to the model's size and normalised as it expects; the model runs in eval mode (and is
    put back as it was), under `precision` autocast. `progress` shows a bar on a terminal.
    """
    if pool not in POOLS:
        raise VitlabError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VitlabError(f"--batch-size must be a positive integer, got {batch_size!r}")
    dataset = fit_dataset(model, dataset)
    if len(dataset) == 0:
        raise VitlabError(f"dataset {dataset.name} ({dataset.split}) has no images")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: Tensor | None = None
    try:
        starts = range(0, len(dataset), batch_size)
        for start in tqdm(starts, desc=f"features {dataset.split}", disable=None if progress else True, leave=False):
            images = dataset.images[start : start + batch_size].to(device)
            with torch.inference_mode(), autocast(precision, device.type):
                tokens = model.forward_features(to_model_inputs(images, model.preprocessing))
                batch = model.forward_head(tokens, pre_logits=True) if pool == "pre_logits" else tokens
            if out is None:  # the whole result at once: no list of batches to concatenate (and double) later
                out = torch.empty((len(dataset), *batch.shape[1:]), dtype=torch.float32)
            out[start : start + len(batch)] = batch.float().cpu()
    finally:
        model.train(was_training)
    assert out is not None
    return out


def check_output_path(path: str | Path) -> Path:
    """`path` if its suffix names a format `save_features` writes; a VitlabError otherwise."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise VitlabError(f"--out {path}: write features to a {', '.join(FORMATS)} file")
    if path.is_dir():
        raise VitlabError(f"--out {path}: is a folder; give a file name ending in {', '.join(FORMATS)}")
    return path


def save_features(
    path: str | Path, features: Tensor, labels: Tensor, classes: list[str], metadata: dict[str, str] | None = None
) -> list[Path]:
    """Write `features` and `labels` to `path` (the format from its suffix, see the module docstring), atomically;
    returns the files written."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    writers: dict[str, Writer]
    if suffix == ".safetensors":
        info = {"classes": json.dumps(classes), **(metadata or {})}
        writers = {path.name: safetensors_writer({"features": features, "labels": labels}, info)}
    elif suffix == ".npz":
        writers = {path.name: npz_writer({"features": features.numpy(), "labels": labels.numpy(),
                                          "classes": np.array(classes, dtype=str)})}
    else:
        labels_name = path.name[: -len(path.suffix)] + ".labels.npy"
        writers = {labels_name: npy_writer(labels.numpy()), path.name: npy_writer(features.numpy())}
    write_files(path.parent, writers)
    return [path, *(path.parent / name for name in writers if name != path.name)]
