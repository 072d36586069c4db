"""Classification metrics of a model on an in-memory dataset."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vitlab.data.datasets import ImageDataset
from vitlab.data.preprocessing import Preprocessing, normalize_batch
from vitlab.errors import VitlabError
from vitlab.precision import autocast


@dataclass
class Evaluation:
    top1: float  # fractions in [0, 1]
    top5: float
    loss: float
    num_images: int
    per_class_accuracy: list[float]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_model_inputs(images: Tensor, preprocessing: Preprocessing) -> Tensor:
    """uint8 (B, C, H, W) → float, resized to the model's size (bilinear, antialiased), normalised."""
    x = images.float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(preprocessing.img_size):
        x = F.interpolate(x, size=preprocessing.img_size, mode="bilinear", align_corners=False, antialias=True)
    return normalize_batch(x, preprocessing)


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    preprocessing: Preprocessing,
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    progress: bool = False,
) -> Evaluation:
    """Top-1, top-5, mean cross-entropy, per-class accuracy and the confusion matrix over `dataset`."""
    num_classes = len(dataset.classes)
    head = getattr(model, "num_classes", num_classes)
    if head != num_classes:
        raise VitlabError(
            f"the model has {head} classes but dataset {dataset.name} ({dataset.split}) has {num_classes}: "
            "evaluate on the dataset it was trained on, or fine-tune it for this one"
        )
    dataset = dataset.with_channels(preprocessing.channels)  # grey images for a colour model; colour for grey: an error
    device = next(model.parameters()).device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    top5_hits, loss_sum = 0, 0.0
    was_training = model.training
    model.eval()
    batches = range(0, len(dataset), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc=f"eval {dataset.split}", disable=not progress, leave=False):
            labels = dataset.labels[start : start + batch_size].to(device)
            inputs = to_model_inputs(dataset.images[start : start + batch_size].to(device), preprocessing)
            with autocast(precision, device.type):
                logits = model(inputs).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            top = logits.topk(min(5, num_classes), dim=-1).indices
            top5_hits += (top == labels[:, None]).any(dim=1).sum().item()
            confusion += torch.bincount(labels.cpu() * num_classes + top[:, 0].cpu(), minlength=num_classes**2).view(
                num_classes, num_classes
            )
    model.train(was_training)
    count = len(dataset)
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp(min=1).float()
    return Evaluation(
        top1=confusion.diag().sum().item() / count,
        top5=top5_hits / count,
        loss=loss_sum / count,
        num_images=count,
        per_class_accuracy=per_class.tolist(),
        confusion_matrix=confusion.tolist(),
        classes=list(dataset.classes),
    )
