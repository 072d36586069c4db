"""PNG plots people would rather look at than read: training curves and confusion matrices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def _save(figure: Any, path: Path) -> Path:
    """Write atomically: a half-written PNG never replaces a good one."""
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
    os.replace(temporary, path)
    return path


def plot_training_curves(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and val, from metrics.jsonl records."""
    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in records], label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in records], label="val")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.plot(epochs, [r["train_top1"] for r in records], label="train (augmented)")
    accuracy_axis.plot(epochs, [r["val_top1"] for r in records], label="val")
    accuracy_axis.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, Path(path))


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class), counts written in the cells when there are few classes."""
    counts = [[int(c) for c in row] for row in matrix]
    totals = [max(sum(row), 1) for row in counts]
    fractions = [[c / t for c in row] for row, t in zip(counts, totals)]
    size = max(4.0, min(0.45 * len(classes) + 2, 24.0))
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    show_labels = len(classes) <= 40
    axis.set_xticks(ticks if show_labels else [], labels=classes if show_labels else [], rotation=90)
    axis.set_yticks(ticks if show_labels else [], labels=classes if show_labels else [])
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 20:
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                if count:
                    colour = "white" if fractions[i][j] > 0.5 else "black"
                    axis.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    return _save(figure, Path(path))
