"""The preprocessing a checkpoint expects, and Pillow-based image loading that applies it.

Every model carries one `Preprocessing`: the size it was trained at, its normalisation (Google-derived
weights expect mean = std = 0.5, i.e. inputs in [-1, 1]; DeiT-style weights use ImageNet's statistics),
the resize filter and the centre-crop fraction (1.0 = plain resize, as the paper evaluates).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitlab.data.imagefolder import read_image
from vitlab.errors import VitlabError

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass
class Preprocessing:
    img_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = INCEPTION_MEAN
    std: tuple[float, ...] = INCEPTION_STD
    interpolation: str = "bicubic"
    crop_pct: float = 1.0  # resize to img_size / crop_pct, then centre-crop img_size

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        self.mean, self.std = _floats("mean", self.mean), _floats("std", self.std)
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float)):
            raise VitlabError(f"preprocessing crop_pct should be a number in (0, 1], got {self.crop_pct!r}")
        if not all(s > 0 for s in self.std):
            raise VitlabError(f"preprocessing std {self.std} should be positive: inputs are divided by it")
        if self.interpolation not in _FILTERS:
            raise VitlabError(f"preprocessing interpolation {self.interpolation!r} is not one of {', '.join(_FILTERS)}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise VitlabError(f"preprocessing crop_pct must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != len(self.std):
            raise VitlabError(f"preprocessing mean {self.mean} and std {self.std} have different channel counts")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(img_size=list(self.img_size), mean=list(self.mean), std=list(self.std))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def with_size(self, img_size: tuple[int, int]) -> "Preprocessing":
        return Preprocessing(img_size, self.mean, self.std, self.interpolation, self.crop_pct)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """A Pillow image → normalised (C, H, W) float tensor."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        height, width = self.img_size
        scaled = (round(height / self.crop_pct), round(width / self.crop_pct))
        image = image.resize((scaled[1], scaled[0]), _FILTERS[self.interpolation])
        top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
        image = image.crop((left, top, left + width, top + height))
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.reshape(height, width, -1)).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (tensor - mean) / std


def _floats(name: str, values: Any) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise VitlabError(f"preprocessing {name} should be a list of numbers, one per channel, got {values!r}") from None


def normalize_batch(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """(B, C, H, W) floats in [0, 1] → (x - mean) / std with the checkpoint's statistics."""
    mean = torch.tensor(preprocessing.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def load_image(path: str | Path, preprocessing: Preprocessing) -> torch.Tensor:
    """Read one image file and preprocess it, decoded as datasets are (`imagefolder.read_image`: EXIF orientation,
    transparency on white, 16-bit grey scaled, bombs refused); a file that can't be read names itself."""
    return preprocessing(Image.fromarray(read_image(path)))


def load_images(paths: list[str | Path], preprocessing: Preprocessing) -> torch.Tensor:
    return torch.stack([load_image(p, preprocessing) for p in paths])
