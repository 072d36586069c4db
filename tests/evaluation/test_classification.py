"""Metrics checked against hand-computed values, with a model whose predictions are fixed."""

import pytest
import torch
from torch import nn

from vitlab import VitlabError
from vitlab.data.datasets import ImageDataset
from vitlab.data.preprocessing import Preprocessing
from vitlab.evaluation.classification import evaluate
from vitlab.evaluation.plots import plot_confusion_matrix, plot_training_curves


class FixedLogits(nn.Module):
    """Returns row i of `logits` for an image whose first pixel is i."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)
        self.num_classes = logits.shape[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].round().long()]


def dataset(labels: list[int], classes: int) -> ImageDataset:
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.uint8)
    return ImageDataset(images, torch.tensor(labels), [str(c) for c in range(classes)], "fixed", "test")


# raw pixel values pass through unchanged: mean 0, std 1/255 undoes the /255 scaling
IDENTITY = Preprocessing((2, 2), (0.0,), (1 / 255,), "bilinear", 1.0)


def test_top1_top5_loss_and_confusion_are_exact():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5.0, 1, 0, 0, 0], [1, 5.0, 0, 0, 0, 0], [0, 0, -1.0, 0, 0, 5.0]])
    labels = [0, 1, 0, 2]
    result = evaluate(FixedLogits(logits), dataset(labels, 6), IDENTITY, batch_size=3)
    assert result.top1 == pytest.approx(2 / 4)
    assert result.top5 == pytest.approx(3 / 4)  # image 3's class 2 has its lowest logit: outside its top 5
    expected_loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels)).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert result.confusion_matrix[0][:3] == [1, 1, 0] and result.confusion_matrix[1][:3] == [0, 1, 0]
    assert result.confusion_matrix[2][5] == 1
    assert result.per_class_accuracy[:3] == pytest.approx([0.5, 1.0, 0.0])


def test_class_count_mismatch_is_explained():
    with pytest.raises(VitlabError, match="the model has 6 classes but dataset fixed"):
        evaluate(FixedLogits(torch.zeros(3, 6)), dataset([0, 1, 2], 3), IDENTITY)


def test_grey_images_reach_a_colour_model_as_rgb_and_not_the_reverse():
    logits = torch.eye(3) * 5
    colour = Preprocessing((2, 2), (0.0,) * 3, (1 / 255,) * 3, "bilinear", 1.0)
    assert evaluate(FixedLogits(logits), dataset([0, 1, 2], 3), colour).top1 == 1.0
    rgb = dataset([0, 1, 2], 3).with_channels(3)
    with pytest.raises(VitlabError, match="only grey images can be given to a colour model"):
        evaluate(FixedLogits(logits), rgb, IDENTITY)


def test_plots_are_png_files(tmp_path):
    records = [dict(epoch=e, train_loss=1 / e, val_loss=1.2 / e, train_top1=0.5 + e / 10, val_top1=0.4 + e / 10) for e in (1, 2, 3)]
    for path in (plot_training_curves(records, tmp_path / "curves.png"),
                 plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png", "title")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
