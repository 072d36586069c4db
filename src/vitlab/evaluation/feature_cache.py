"""Features of a checkpoint over a dataset split, computed once and kept on disk.

The cache folder is `cache_dir` (`--cache-dir`), else `$VITLAB_CACHE/features`, else
`$XDG_CACHE_HOME/vitlab/features` (`~/.cache/vitlab/features`). An entry is `KEY.safetensors` (tensors
`features` and `labels`) beside `KEY.json` (the key itself, the class names), written atomically, the JSON last.
KEY is a hash of everything the features depend on:

- the checkpoint: its Hub id if it came from the Hub, and the resolved path, size and modification time of its
  weight and config files (so saving new weights over a checkpoint invalidates its entries);
- the model overrides (`img_size`, ...), the pooling and the precision;
- the dataset: its name, resolved folder (with the names, sizes and modification times of the folder's top two
  levels: files replaced, images added to an image-folder class), split, val fraction, seed, resize, and
  whether unreadable images are skipped.

An entry that cannot be read back, or does not match its key, is ignored with a warning and rewritten; a cache
folder that cannot be written is a warning too. The cache never stops the computation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from vitlab.checkpoints.base import Format
from vitlab.checkpoints.files import json_writer, safetensors_writer, write_files
from vitlab.checkpoints.hub import hub_repo_id
from vitlab.checkpoints.load import READERS, build_model, detect_source
from vitlab.data.datasets import ImageDataset, load_dataset
from vitlab.errors import VitlabError
from vitlab.evaluation.features import Pool, extract_features
from vitlab.models.vit import VisionTransformer

CACHE_VERSION = 1
_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_FINGERPRINT_DEPTH = 2
_FINGERPRINT_LIMIT = 100_000  # entries; a data folder holding far more in its top levels is fingerprinted in part


def default_cache_dir() -> Path:
    """`$VITLAB_CACHE/features`, else `$XDG_CACHE_HOME/vitlab/features`, else `~/.cache/vitlab/features`."""
    root = os.environ.get("VITLAB_CACHE")
    if root:
        return Path(root).expanduser() / "features"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vitlab" / "features"


@dataclass(frozen=True)
class DatasetSpec:
    """The arguments of one `load_dataset` call: to load the split, or to name it in a cache key unloaded."""

    name: str
    data_dir: str | None = None
    split: str = "train"
    val_fraction: float = 0.1
    seed: int = 0
    image_size: int | None = None  # resize every image to this size on loading; None: native size
    skip_bad_images: bool = False
    download: bool = False

    def load(self) -> ImageDataset:
        return load_dataset(self.name, self.data_dir, self.split, val_fraction=self.val_fraction, seed=self.seed,
                            download=self.download, image_size=self.image_size, skip_bad_images=self.skip_bad_images)

    def identity(self) -> dict[str, Any]:
        folder = Path(self.data_dir).expanduser().resolve() if self.data_dir else None
        return {
            "name": self.name.strip().lower(),
            "data_dir": str(folder) if folder else None,
            "files": folder_fingerprint(folder) if folder else None,
            "split": self.split,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "image_size": self.image_size,
            "skip_bad_images": self.skip_bad_images,
        }


def folder_fingerprint(folder: Path) -> str:
    """A hash of the names, sizes and modification times of the entries in `folder`'s top two levels."""
    digest = hashlib.sha256()
    for line in itertools.islice(_entries(folder, folder, 1), _FINGERPRINT_LIMIT):
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _entries(root: Path, folder: Path, level: int) -> Iterator[str]:
    try:
        found = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in found:
        try:
            stat = entry.stat()
            is_dir = entry.is_dir()
        except OSError:
            continue
        yield f"{Path(entry.path).relative_to(root)}\t{0 if is_dir else stat.st_size}\t{stat.st_mtime_ns}"
        if is_dir and level < _FINGERPRINT_DEPTH:
            yield from _entries(root, Path(entry.path), level + 1)


def checkpoint_identity(fmt: Format, source: str | Path) -> dict[str, Any]:
    """The Hub id (if any) and the resolved path, size and modification time of the checkpoint's files."""
    files = list(fmt.weights)
    if fmt.path.is_dir():
        files += [fmt.path / name for name in _CONFIG_FILES if (fmt.path / name).is_file()]
    stats = []
    for path in files:
        resolved = path.resolve()
        stat = resolved.stat()
        stats.append([str(resolved), stat.st_size, stat.st_mtime_ns])
    return {"hub": hub_repo_id(source), "format": fmt.kind, "files": stats}


@dataclass
class Features:
    """Features of one dataset split, with its labels and class names."""

    features: Tensor  # float32, (N, D') pooled or (N, T, D) tokens
    labels: Tensor  # int64 (N,)
    classes: list[str]
    dataset: str
    split: str
    cached: bool  # read back from the cache rather than computed


LabelCheck = Callable[[Tensor, list[str]], None]


class FeatureExtractor:
    """One checkpoint's features over dataset splits, each computed at most once (with `cache`): the checkpoint
    is found (and a missing one reported) at once, but its weights are read only when something is computed."""

    def __init__(
        self,
        source: str | Path,
        overrides: dict[str, Any] | None = None,
        *,
        pool: Pool = "pre_logits",
        batch_size: int = 256,
        precision: str = "fp32",
        device: str | torch.device | None = None,
        progress: bool = True,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.source = source
        self.overrides = dict(overrides or {})
        self.format = detect_source(source)
        self.pool, self.batch_size, self.precision, self.progress = pool, batch_size, precision, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.cache = cache
        self._model: VisionTransformer | None = None

    @property
    def model(self) -> VisionTransformer:
        """The model, loaded (as `load_pretrained(source, **overrides)` would, without its head) on first use."""
        if self._model is None:
            overrides = dict(self.overrides)
            name = overrides.pop("model", None)
            overrides.setdefault("num_classes", 0)  # the head is never used (nor an all-zero one worth a warning)
            self._model = build_model(READERS[self.format.kind](self.format), name, overrides).to(self.device)
        return self._model

    def key(self, data: DatasetSpec) -> dict[str, Any]:
        """Everything the features of `data` depend on (see the module docstring), as plain JSON values."""
        key = {
            "version": CACHE_VERSION,
            "checkpoint": checkpoint_identity(self.format, self.source),
            "overrides": self.overrides,
            "data": data.identity(),
            "pool": self.pool,
            "precision": self.precision,
        }
        return json.loads(json.dumps(key, sort_keys=True, default=str))

    def features(self, data: DatasetSpec, check: LabelCheck | None = None) -> Features:
        """The features of `data`, from the cache or computed (then cached). `check(labels, classes)` runs
        before any computation, to refuse a request the labels cannot satisfy."""
        if self.cache:
            found = read_entry(self.cache_dir, self.key(data))
            if found is not None:
                if check:
                    check(found.labels, found.classes)
                return found
        dataset = data.load()
        if check:
            check(dataset.labels, dataset.classes)
        values = extract_features(self.model, dataset, pool=self.pool, batch_size=self.batch_size,
                                  precision=self.precision, progress=self.progress)
        result = Features(values, dataset.labels, list(dataset.classes), dataset.name, dataset.split, cached=False)
        if self.cache:
            write_entry(self.cache_dir, self.key(data), result)  # the key again: --download may have added files
        return result


def entry_name(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def read_entry(folder: Path, key: dict[str, Any]) -> Features | None:
    """The cached features for `key`, or None when there are none or they are damaged (with a warning)."""
    name = entry_name(key)
    tensors_path, sidecar_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not tensors_path.exists() and not sidecar_path.exists():
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if sidecar.get("key") != key:
            raise ValueError("its description does not match the checkpoint and dataset asked for")
        tensors = load_file(tensors_path)
        features, labels, classes = tensors["features"], tensors["labels"], sidecar["classes"]
        if features.dtype != torch.float32 or list(features.shape) != sidecar["shape"]:
            raise ValueError(f"features are {features.dtype} {tuple(features.shape)}, not float32 {sidecar['shape']}")
        if labels.dtype != torch.int64 or labels.shape != features.shape[:1]:
            raise ValueError(f"labels are {labels.dtype} {tuple(labels.shape)}, not int64 ({len(features)},)")
        if not isinstance(classes, list) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
            raise ValueError("labels and class names do not agree")
        return Features(features, labels, [str(c) for c in classes], str(sidecar["dataset"]), str(sidecar["split"]), True)
    except Exception as error:  # noqa: BLE001 (any damage at all: the entry is recomputed, never fatal)
        warnings.warn(f"{tensors_path}: ignoring a damaged feature cache entry ({type(error).__name__}: {error}); "
                      "computing the features again", stacklevel=2)
        return None


def write_entry(folder: Path, key: dict[str, Any], result: Features) -> None:
    """Store `result` under `key`; a folder that cannot be written is a warning, not an error."""
    name = entry_name(key)
    sidecar = {"key": key, "dataset": result.dataset, "split": result.split, "classes": result.classes,
               "shape": list(result.features.shape)}
    tensors = {"features": result.features, "labels": result.labels}
    try:
        write_files(folder, {f"{name}.safetensors": safetensors_writer(tensors), f"{name}.json": json_writer(sidecar)})
    except (VitlabError, OSError) as error:
        warnings.warn(f"cannot write the feature cache in {folder} ({error}); continuing without it", stacklevel=2)
