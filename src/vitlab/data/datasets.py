"""Datasets behind one call: `load_dataset(name, data_dir, split)` → an in-memory `ImageDataset`.

| name | files in `data_dir` | splits |
|---|---|---|
| `digits` | none: ships inside vitlab (`data/assets/digits.npz`) | train / val / test (fixed 20 % test) |
| `mnist`, `fashion-mnist` | official idx files, `.gz` or not: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-…` | train / val / test |
| `cifar10` | official python batches: `cifar-10-batches-py/` (or its files directly in `data_dir`) | train / val / test |
| `cifar100` | official python batches: `cifar-100-python/` (or its files directly in `data_dir`) | train / val / test |
| `imagefolder` | `train/<class>/*`, optional `val/<class>/*`, `test/<class>/*` (see `vitlab.data.imagefolder`) | train / val / test if present |

Every image is decoded once into a uint8 (N, C, H, W) tensor; all of these datasets fit in memory (CIFAR-10's
50,000 training images are 150 MiB). `val` is a seeded, stratified hold-out of `val_fraction` of the training
split wherever the dataset has no val split of its own, and `train` then leaves those images out: the same seed
always gives the same split (on any machine and numpy version, see `vitlab.data.splits`), another seed another.

`digits` is scikit-learn's bundled copy of the test part of the UCI ML "Optical Recognition of Handwritten Digits"
data set (E. Alpaydin and C. Kaynak, 1998; https://archive.ics.uci.edu/dataset/80, licensed CC BY 4.0): 1,797
8×8 images with values 0–16, stored here as uint8 scaled ×255/16 and rounded (0 → 0, 16 → 255), extracted once
from `sklearn.datasets.load_digits()` (scikit-learn 1.9.1). It has no official test split, so a fixed stratified
20 % (independent of the user's seed, so the test set never changes) is the test split and val comes from the rest.
"""

from __future__ import annotations

import difflib
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from vitlab.data import download as _download
from vitlab.data import imagefolder
from vitlab.data.formats import load_cifar_pickle, read_idx
from vitlab.data.splits import check_fraction, stratified_split
from vitlab.errors import VitlabError

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "val", "test")
_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100",
            "image-folder": "imagefolder", "folder": "imagefolder"}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 1797  # fixed: the digits test split must not move with the user's --seed
_DIGITS_TEST_SALT = 0x7E57


@dataclass(repr=False)
class ImageDataset:
    """One split of a dataset, decoded: uint8 images (N, C, H, W), int64 labels (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    skipped: int = 0  # images left out as unreadable (imagefolder with skip_bad_images)
    skipped_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageDataset images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(f"ImageDataset labels must be int64 ({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}")

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageDataset:
        """These images only (e.g. `splits.per_class_sample` for a few-shot or low-data set)."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return ImageDataset(self.images[index], self.labels[index], self.classes, self.name, self.split)

    def with_channels(self, channels: int) -> ImageDataset:
        """Grey images as RGB (the value copied into R, G and B, as Pillow's L → RGB) for a colour model; a view,
        no copy. Colour images cannot become grey here: that would discard information a model may rely on."""
        if channels == self.channels:
            return self
        if self.channels != 1 or channels != 3:
            raise VitlabError(f"dataset {self.name} has {self.channels}-channel images and the model takes {channels}-channel "
                              "ones; only grey images can be given to a colour model")
        return ImageDataset(self.images.expand(-1, 3, -1, -1), self.labels, self.classes, self.name, self.split,
                            self.skipped, self.skipped_files)

    def __repr__(self) -> str:
        height, width = self.image_size
        extra = f", skipped={self.skipped}" if self.skipped else ""
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, images={len(self)}×{self.channels}×{height}×{width}, "
                f"classes={len(self.classes)}{extra})")


def load_dataset(name: str, data_dir: str | Path | None = None, split: str = "train", *, val_fraction: float = 0.1,
                 seed: int = 0, download: bool = False, image_size: int | tuple[int, int] | None = None,
                 skip_bad_images: bool = False) -> ImageDataset:
    """Load one split of a dataset into memory; every user mistake is a one-line `VitlabError`.

    `image_size` resizes every image (bicubic) to that size; None keeps the native size (and for imagefolder
    requires all images to share one). `download` fetches missing official files into `data_dir` (not for
    digits, which ships with vitlab, nor imagefolder).
    """
    key = _dataset_name(name)
    if split not in SPLITS:
        close = difflib.get_close_matches(str(split), SPLITS, n=1, cutoff=0.4)
        raise VitlabError(f"unknown split {split!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                          f"choose one of {', '.join(SPLITS)}")
    fraction = check_fraction(val_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise VitlabError(f"--seed must be an integer, got {seed!r}")
    size = _image_size(image_size)
    if key == "digits":
        images, labels, classes = _digits(split, fraction, int(seed))
        return _dataset(images, labels, classes, key, split, size)
    if data_dir is None:
        raise VitlabError(f"{key} reads its files from a folder: pass --data-dir DIR"
                          f"{' (add --download to fetch them into it)' if key != 'imagefolder' else ''}")
    root = Path(data_dir).expanduser()
    if key == "imagefolder":
        if download:
            raise VitlabError("--download does not apply to imagefolder (your own images); drop it")
        return _imagefolder(root, split, fraction, int(seed), size, skip_bad_images)
    if key in ("mnist", "fashion-mnist"):
        def read(part: str) -> tuple[np.ndarray, np.ndarray]:
            return _idx_split(key, root, part, download)
        classes = FASHION_MNIST_CLASSES if key == "fashion-mnist" else [str(d) for d in range(10)]
    else:
        _, _, train_files, test_files, meta, _, _ = _CIFAR[key]
        folder = _cifar_folder(key, root, [meta, *(test_files if split == "test" else train_files)], download)
        classes = _cifar_classes(key, folder)

        def read(part: str) -> tuple[np.ndarray, np.ndarray]:
            return _cifar_split(key, folder, part)
    images, labels = _official_split(read, split, fraction, int(seed), key, root, len(classes))
    return _dataset(images, labels, classes, key, split, size)


def has_test_split(name: str, data_dir: str | Path | None) -> bool:
    """Whether `load_dataset(name, data_dir, "test")` finds its files here, without loading them."""
    key = _dataset_name(name)
    if key == "digits":
        return True
    if data_dir is None:
        return False
    root = Path(data_dir).expanduser()
    if key == "imagefolder":
        return (root / "test").is_dir()
    if key in ("mnist", "fashion-mnist"):
        return all(_idx_file(root, stem) is not None for stem in _idx_stems("test"))
    _, _, _, test_files, meta, _, _ = _CIFAR[key]
    return not _find_cifar(key, root, [meta, *test_files])[1]


def _dataset_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS + tuple(_ALIASES), n=3, cutoff=0.5)
        close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise VitlabError(f"unknown dataset {name!r}; {hint}choose one of {', '.join(DATASETS)}")
    return key


def _image_size(image_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    values = (image_size, image_size) if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool) else image_size
    try:
        height, width = (int(v) for v in values)  # type: ignore[union-attr]
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values) and height > 0 and width > 0  # type: ignore[union-attr]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise VitlabError(f"--img-size must be a positive integer (or height, width), got {image_size!r}")
    return height, width


def _dataset(images: np.ndarray, labels: np.ndarray, classes: list[str], name: str, split: str,
             size: tuple[int, int] | None, skipped: list[str] | None = None) -> ImageDataset:
    if size is not None and images.shape[2:] != size:
        images = _resize(images, size)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                        torch.from_numpy(np.asarray(labels, dtype=np.int64)), list(classes), name, split,
                        len(skipped or []), list(skipped or []))


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a uint8 (N, C, H, W) array, image by image with Pillow."""
    out = np.empty((len(images), images.shape[1], *size), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        resized = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BICUBIC))
        out[i] = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return out


def _hold_out(labels: np.ndarray, split: str, fraction: float, seed: int, what: str) -> np.ndarray:
    """Indices into a training set for `split` ('train' or 'val') after the seeded stratified hold-out."""
    if split == "val" and fraction == 0:
        raise VitlabError(f"{what} has no val split of its own and --val-fraction is 0; set --val-fraction (e.g. 0.1)")
    kept, held = stratified_split(labels, fraction, seed)
    if split == "val" and held.size == 0:
        raise VitlabError(f"{what}: --val-fraction {fraction} holds out no images (every class is too small); "
                          "raise it, or give the dataset a val split of its own")
    return kept if split == "train" else held


def _official_split(read: Callable[[str], tuple[np.ndarray, np.ndarray]], split: str, fraction: float, seed: int,
                    what: str, root: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read("test" if split == "test" else "train")
    if labels.size and int(labels.max()) >= num_classes:
        raise VitlabError(f"{root}: {what} labels go up to {int(labels.max())} but there are {num_classes} classes; "
                          "the files are not the official ones")
    if split == "test":
        return images, labels
    index = _hold_out(labels, split, fraction, seed, what)
    return images[index], labels[index]


# ---- digits -------------------------------------------------------------------------------------------------------

def _digits(split: str, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with importlib.resources.files("vitlab.data").joinpath("assets", "digits.npz").open("rb") as stream:
        with np.load(stream, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"].astype(np.int64)
    rest, test = stratified_split(labels, DIGITS_TEST_FRACTION, _DIGITS_TEST_SEED, salt=_DIGITS_TEST_SALT)
    if split == "test":
        index = test
    else:
        index = rest[_hold_out(labels[rest], split, fraction, seed, "digits")]
    return images[index], labels[index], [str(d) for d in range(10)]


# ---- MNIST / Fashion-MNIST ----------------------------------------------------------------------------------------

def _idx_file(root: Path, stem: str) -> Path | None:
    """`stem`, or the common "train-images.idx3-ubyte" spelling, plain or gzipped (plain wins: faster)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, dotted, stem + ".gz", dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _idx_stems(part: str) -> tuple[str, str]:
    """The official (images, labels) file names of MNIST's and Fashion-MNIST's train or test part, less .gz."""
    prefix = "train" if part == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_split(name: str, root: Path, part: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    stems = _idx_stems(part)
    found = [_idx_file(root, stem) for stem in stems]
    if None in found and download:
        _download.download(name, root, [stem + ".gz" for stem, path in zip(stems, found) if path is None])
        found = [_idx_file(root, stem) for stem in stems]
    missing = [stem for stem, path in zip(stems, found) if path is None]
    if missing:
        what = "official test split" if part == "test" else "training split"
        raise VitlabError(f"{root}: {name}'s {what} needs {' and '.join(s + '[.gz]' for s in missing)}, not found; "
                          f"put the official files in {root}, or add --download to fetch them")
    image_path, label_path = found
    assert image_path is not None and label_path is not None
    images, labels = read_idx(image_path, ndim=3), read_idx(label_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise VitlabError(f"{image_path if images.dtype != np.uint8 else label_path}: idx type {images.dtype}/{labels.dtype}, "
                          f"expected unsigned bytes; use the official {name} files")
    if len(images) != len(labels):
        raise VitlabError(f"{label_path}: {len(labels):,} labels for {len(images):,} images in {image_path.name}; "
                          "the two files do not belong together")
    return images[:, None], labels.astype(np.int64)


# ---- CIFAR-10 / CIFAR-100 -----------------------------------------------------------------------------------------

_CIFAR = {
    # name: (folder, archive, train files, test files, meta file, label key, class-name key)
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def _find_cifar(name: str, root: Path, files: list[str]) -> tuple[Path, list[str]]:
    """The folder holding all `files` (the archive's folder under `root`, else `root` itself) and no missing
    files; when neither holds them all, the archive's folder and the files missing from it."""
    folder_name = _CIFAR[name][0]
    for folder in (root / folder_name, root):
        if all((folder / f).is_file() for f in files):
            return folder, []
    return root / folder_name, [f for f in files if not (root / folder_name / f).is_file()]


def _cifar_folder(name: str, root: Path, files: list[str], download: bool) -> Path:
    archive = _CIFAR[name][1]
    folder, missing = _find_cifar(name, root, files)
    if missing and download:
        _download.download(name, root)
        folder, missing = _find_cifar(name, root, files)
    if missing:
        unpack = (f"unpack {root / archive} there (tar xzf), or add --download" if (root / archive).is_file()
                  else f"put the official python version there ({archive} from https://www.cs.toronto.edu/~kriz/cifar.html, "
                       "unpacked), or add --download to fetch it")
        raise VitlabError(f"{folder}: {name} needs {', '.join(missing)}, not found; {unpack}")
    return folder


def _cifar_classes(name: str, folder: Path) -> list[str]:
    meta, key = _CIFAR[name][4], _CIFAR[name][6]
    path = folder / meta
    names = load_cifar_pickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise VitlabError(f"{path}: no {key.decode()} list of class names in it; use the official {name} files")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _cifar_split(name: str, folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    files = _CIFAR[name][2] if part == "train" else _CIFAR[name][3]
    label_key = _CIFAR[name][5]
    images, labels = [], []
    for file in files:
        path = folder / file
        batch = load_cifar_pickle(path)
        data, batch_labels = batch.get(b"data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            shape = getattr(data, "shape", None)
            raise VitlabError(f"{path}: its data entry is {type(data).__name__} {shape}, not uint8 (N, 3072); "
                              f"use the official {name} python files")
        if not isinstance(batch_labels, (list, np.ndarray)) or len(batch_labels) != len(data):
            raise VitlabError(f"{path}: {label_key.decode()} missing or not one per image; use the official {name} python files")
        try:
            label_array = np.asarray(batch_labels, dtype=np.int64)
        except (TypeError, ValueError):
            raise VitlabError(f"{path}: {label_key.decode()} are not integers; use the official {name} python files") from None
        if label_array.size and label_array.min() < 0:
            raise VitlabError(f"{path}: negative labels; use the official {name} python files")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(label_array)
    return np.concatenate(images), np.concatenate(labels)


# ---- imagefolder --------------------------------------------------------------------------------------------------

def _imagefolder(root: Path, split: str, fraction: float, seed: int, size: tuple[int, int] | None,
                 skip_bad_images: bool) -> ImageDataset:
    layout = imagefolder.scan(root)
    if split == "test" and "test" not in layout.files:
        raise VitlabError(f"{root}: no test/ folder, so there is no test split; add {root}/test/<class>/… "
                          "or evaluate on --split val")
    if split == "train" or (split == "val" and "val" not in layout.files):
        labels = layout.labels["train"]
        index = _hold_out(labels, split, fraction, seed, str(root)) if "val" not in layout.files else np.arange(len(labels))
        files, labels = [layout.files["train"][i] for i in index], labels[index]
    else:
        files, labels = layout.files[split], layout.labels[split]
    decoded = imagefolder.load(layout, files, labels, image_size=size, skip_bad_images=skip_bad_images,
                               desc=f"decoding {split}")
    return _dataset(decoded.images, decoded.labels, layout.classes, "imagefolder", split, None, decoded.skipped)
