"""The one place that tells checkpoint formats apart, by structure rather than by file name.

A folder is told by its config.json (vitlab's `format`, Hugging Face's `model_type`, timm's hub
`architecture`); a file by its container (see `files.sniff`) and the names of its tensors. When nothing fits,
the error says what was found and what vitlab accepts.
"""

from __future__ import annotations

from pathlib import Path

from vitlab.checkpoints.base import Format, FormatKind
from vitlab.checkpoints.files import ACCEPTED, listing, read_json, read_names, sniff
from vitlab.checkpoints.hf import hf_weight_files, looks_like_hf_vit
from vitlab.checkpoints.io import WEIGHTS as VITLAB_WEIGHTS
from vitlab.checkpoints.npz import npz_layout
from vitlab.checkpoints.timm import looks_like_timm_vit
from vitlab.errors import VitlabError

# Other model families, recognised by pieces of their tensor names, so an error can say what a file is.
_FAMILIES = {
    "a ResNet": ("conv1.weight", "layer1."),
    "a Swin Transformer": ("relative_position_bias_table",),
    "a CLIP model": ("visual.", "transformer.resblocks."),
    "a text transformer (BERT-style)": ("word_embeddings",),
}


def detect_format(path: str | Path) -> Format:
    """Which format the checkpoint at `path` (a folder or a file) is in; a VitlabError if none fits."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _detect_folder(path)
    if not path.exists():
        raise VitlabError(f"{path}: no such file or folder")
    return _detect_file(path)


def _detect_folder(folder: Path) -> Format:
    config = folder / "config.json"
    if not config.is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise VitlabError(
            f"{folder}: a folder without config.json (it holds: {found}); to read a weights file, pass the file itself. "
            + ACCEPTED
        )
    fmt = _folder_format(folder, read_json(config))
    if isinstance(fmt, str):
        raise VitlabError(f"{config}: {fmt}; to read a weights file in the folder, pass the file itself. {ACCEPTED}")
    return fmt


def _folder_format(folder: Path, config: dict) -> Format | str:
    """The folder's format, or in words why it is none."""
    if config.get("format") == "vitlab":
        weights = folder / VITLAB_WEIGHTS
        return Format("vitlab", "folder", folder, (weights,)) if weights.is_file() else f"a vitlab config, no {weights.name}"
    if config.get("model_type") == "vit":
        files = hf_weight_files(folder)
        return Format("hf", "folder", folder, files) if files else "a Hugging Face ViT config, no model.safetensors or .bin"
    if "model_type" in config:
        return f"a Hugging Face config of model_type {config['model_type']!r}; vitlab reads model_type 'vit'"
    if "architecture" in config and "pretrained_cfg" in config:
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        if weights is None:
            return f"a timm config ({config['architecture']}) without model.safetensors or pytorch_model.bin beside it"
        if not looks_like_timm_vit(read_names(weights)):
            return f"a timm {config['architecture']} folder whose weights are not a ViT"
        return Format("timm", "hub folder", folder, (weights,))
    return "a config.json that is neither vitlab's (with format), Hugging Face's (model_type) nor timm's (architecture)"


def _detect_file(path: Path) -> Format:
    container = sniff(path)
    names = read_names(path)
    if container == "npz":
        layout = npz_layout(names)
        if layout is None:
            raise VitlabError(
                f"{path}: a numpy .npz archive with {len(names)} arrays ({listing(names)}), none in a Google ViT layout. "
                + ACCEPTED
            )
        return Format("npz", layout.name, path, (path,))
    kind: FormatKind
    if looks_like_hf_vit(names):
        kind = "hf"
    elif looks_like_timm_vit(names):
        kind = "timm"
    else:
        family = next((what for what, pieces in _FAMILIES.items() if all(any(p in n for n in names) for p in pieces)), None)
        looks = f"whose names look like {family}" if family else "whose names match no ViT layout"
        raise VitlabError(f"{path}: a {container} file with {len(names)} tensors {looks} ({listing(names)}). {ACCEPTED}")
    return _folder_of(path, kind) or Format(kind, "state dict", path, (path,))


def _folder_of(path: Path, kind: FormatKind) -> Format | None:
    """The folder format `path` is the weights file of (its config.json then applies), if any."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        fmt = _folder_format(path.parent, read_json(config))
    except VitlabError:  # an unrelated or broken config.json beside a weights file: read the file alone
        return None
    fits = isinstance(fmt, Format) and (fmt.kind == kind or (kind, fmt.kind) == ("timm", "vitlab"))
    return fmt if fits and path.resolve() in {w.resolve() for w in fmt.weights} else None
