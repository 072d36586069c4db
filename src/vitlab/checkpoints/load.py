"""`load_pretrained`: any supported checkpoint → a ready VisionTransformer; `convert`: between formats.

Where each architecture value comes from, strongest first:

1. the tensors (`timm.infer_config`): width, depth, patch size, channels, MLP size, qkv bias, class token,
   pre-logits, fc_norm, head size, learned or sin-cos positions, hybrid stages;
2. what the source records (`Checkpoint.recorded`): Hugging Face / vitlab config files, npz head count;
3. keyword overrides: may only agree with 1-2, except `num_classes` (a new zero-initialised head), `img_size`
   (position embeddings resampled) and behaviour that leaves shapes alone (`gelu`, `layer_norm_eps`,
   `global_pool`, dropout ...);
4. `model=NAME`: a registered config, for what 1-3 leave open (a bare timm state dict's `num_heads`);
5. the format's conventions (`Checkpoint.defaults`), then ViTConfig's defaults.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitlab.checkpoints.base import Checkpoint, Evidence, Format, FormatKind
from vitlab.checkpoints.detect import detect_format
from vitlab.checkpoints.hf import read_hf, save_hf
from vitlab.checkpoints.hub import PREFIX as HUB_PREFIX
from vitlab.checkpoints.hub import fetch, hub_repo_id
from vitlab.checkpoints.io import read_vitlab, save_pretrained
from vitlab.checkpoints.npz import read_npz
from vitlab.checkpoints.timm import check_timm_path, infer_config, patch_positions, read_timm, save_timm
from vitlab.data.preprocessing import Preprocessing
from vitlab.errors import VitlabError
from vitlab.models.position import RESAMPLE_MODES, resample_pos_embed
from vitlab.models.registry import MODELS, get_entry, model_config
from vitlab.models.vit import ViTConfig, VisionTransformer

READERS: dict[FormatKind, Callable[[Format], Checkpoint]] = {
    "vitlab": read_vitlab,
    "hf": read_hf,
    "timm": read_timm,
    "npz": read_npz,
}
WRITERS: dict[str, Callable[[VisionTransformer, Path], Path]] = {"vitlab": save_pretrained, "hf": save_hf, "timm": save_timm}

# Fields that shape the tensors: an override or model name may only agree with the checkpoint on these.
STRUCTURAL = (
    "embed_dim", "depth", "patch_size", "in_chans", "mlp_dim", "num_heads", "qkv_bias",
    "class_token", "fc_norm", "pos_embed", "representation_size", "hybrid_layers",
)  # fmt: skip
_CONFIG_FIELDS = tuple(f.name for f in fields(ViTConfig))
_PREPROCESSING_OPTIONS = ("mean", "std", "interpolation", "crop_pct")
_OTHER_OPTIONS = ("mlp_ratio", "pos_embed_resample")


def load_pretrained(source: str | Path, model: str | None = None, **overrides: Any) -> VisionTransformer:
    """Load a vitlab, Hugging Face, timm or Google npz checkpoint (a folder, a file or a Hub id such as
    `hf-hub:google/vit-base-patch16-224` or `timm/vit_small_patch16_224.augreg_in21k`) as a VisionTransformer.

    `model` names a registered config that supplies what the checkpoint does not record (a bare timm state
    dict has no head count). Overrides are ViTConfig fields or timm keywords (`img_size`, `num_heads`,
    `num_classes`, `mlp_ratio`, `global_pool`, `gelu`, ...), plus `pos_embed_resample` ('bicubic', timm's
    method and the default, or 'bilinear', Google's) and preprocessing fields (`mean`, `std`,
    `interpolation`, `crop_pct`). `img_size` other than the checkpoint's resamples the position embeddings;
    `num_classes` other than the checkpoint's replaces the head with a zero-initialised one.

    The model comes back in eval mode, with `model.preprocessing` (what inputs the weights expect) and
    `model.labels` (class names, or None) set.
    """
    fmt = detect_source(source)
    return build_model(READERS[fmt.kind](fmt), model, overrides)


def detect_source(source: str | Path) -> Format:
    """The format of `source`: a local file or folder, or a Hub id (`hf-hub:OWNER/NAME`, or an `OWNER/NAME`
    that is no local path) fetched first (see `hub.fetch`)."""
    repo_id = hub_repo_id(source)
    if repo_id is None:
        return detect_format(source)
    try:
        folder = fetch(repo_id)
    except VitlabError as error:
        bare = not str(source).startswith(HUB_PREFIX)
        raise VitlabError(f"{error}{f' (and there is no local file or folder {source})' if bare else ''}") from None
    try:
        return detect_format(folder)
    except VitlabError as error:
        raise VitlabError(f"{source}: not a ViT checkpoint vitlab reads ({error})") from None


def convert(source: str | Path, out: str | Path, to: str = "vitlab", model: str | None = None, **overrides: Any) -> Path:
    """Load `source` as `load_pretrained` does and write it as `to`: 'vitlab' (a folder), 'hf' (a folder that
    transformers' `from_pretrained` loads) or 'timm' (one `.safetensors` file of timm names). Returns `out`."""
    if to not in WRITERS:
        raise VitlabError(f"unknown target format {to!r}: use one of {', '.join(WRITERS)}")
    out = Path(out)
    if to == "timm":
        check_timm_path(out)
    return WRITERS[to](load_pretrained(source, model, **overrides), out)


def build_model(checkpoint: Checkpoint, model: str | None, overrides: dict[str, Any]) -> VisionTransformer:
    """A VisionTransformer holding the checkpoint's tensors, configured as the module docstring describes."""
    origin = checkpoint.origin
    arch, preprocessing, resample = _split_overrides(overrides)
    known = _known(infer_config(checkpoint.tensors, origin), checkpoint)
    if "mlp_ratio" in arch:
        ratio = arch.pop("mlp_ratio")
        if not _is_number(ratio) or ratio <= 0:
            raise VitlabError(f"mlp_ratio must be a positive number, got {ratio!r}")
        arch.setdefault("mlp_dim", int(arch.get("embed_dim", known["embed_dim"].value) * ratio))
    name = model or checkpoint.model_name
    entry = get_entry(name).config if name else {}
    _check_agreement(checkpoint.tensors, arch, entry, known, name, origin)
    values = {
        "global_pool": "avg" if known["fc_norm"].value or not known["class_token"].value else "token",
        **checkpoint.defaults,
        **{field: evidence.value for field, evidence in known.items()},
        **arch,
    }
    if "num_heads" not in values and "num_heads" not in entry:
        raise VitlabError(_missing_heads(origin, known))
    tensors = dict(checkpoint.tensors)
    img_size = _image_size(tensors, values, known, arch, entry, resample, origin)
    if img_size is not None:
        values["img_size"] = img_size
    new_head = _drop_head_or_warn(tensors, values["num_classes"], known["num_classes"].value, origin)
    vit = VisionTransformer(model_config(name, **values))
    if new_head:  # keep the model's fresh (zero-initialised) head
        tensors.update({k: t for k, t in vit.state_dict().items() if k.startswith("head.")})
    _load_tensors(vit, tensors, origin)
    vit.eval()
    vit.preprocessing = _preprocessing({**checkpoint.preprocessing, **preprocessing}, vit.config, origin)
    vit.labels = None if new_head else checkpoint.labels
    if vit.labels is not None and len(vit.labels) != vit.config.num_classes:
        raise VitlabError(f"{origin}: {len(vit.labels)} class names for {vit.config.num_classes} classes")
    return vit


def _drop_head_or_warn(tensors: dict[str, Tensor], num_classes: int, stored: int, origin: str) -> bool:
    """Remove the stored head when another class count is asked for (True); warn when it is all zeros."""
    if num_classes != stored:
        for name in [n for n in tensors if n.startswith("head.")]:
            del tensors[name]
        return True
    if "head.weight" in tensors and not tensors["head.weight"].any():
        warnings.warn(
            f"{origin}: the classifier head.weight is all zeros (as in ImageNet-21k releases), so every image gets "
            "the same, uniform logits. Pass num_classes=N to fine-tune with a new head, or num_classes=0 to use "
            "the model as a feature extractor.",
            stacklevel=4,
        )
    return False


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(architecture values, preprocessing values, position-embedding resample mode)."""
    accepted = (*_CONFIG_FIELDS, *_PREPROCESSING_OPTIONS, *_OTHER_OPTIONS)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise VitlabError(f"unknown option(s) {', '.join(unknown)} for load_pretrained; accepted: {', '.join(accepted)}")
    arch = {k: _tupled(v) for k, v in overrides.items() if k in _CONFIG_FIELDS or k == "mlp_ratio"}
    if "img_size" in arch:
        arch["img_size"] = _size(arch["img_size"])
    preprocessing = {k: v for k, v in overrides.items() if k in _PREPROCESSING_OPTIONS}
    resample = overrides.get("pos_embed_resample", "bicubic")
    if resample not in RESAMPLE_MODES:
        raise VitlabError(f"pos_embed_resample={resample!r} is not one of {', '.join(RESAMPLE_MODES)}")
    return arch, preprocessing, resample


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _size(value: Any) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else value
    if isinstance(size, tuple) and len(size) == 2 and all(type(v) is int and v > 0 for v in size):
        return size
    raise VitlabError(f"img_size should be a positive integer or (height, width), got {value!r}")


def _known(facts: dict[str, Evidence], checkpoint: Checkpoint) -> dict[str, Evidence]:
    """The tensors' facts plus what the source records, which must agree with each other."""
    for field, recorded in checkpoint.recorded.items():
        fact = facts.get(field)
        if fact is not None and fact.value != recorded.value:
            raise VitlabError(
                f"{checkpoint.origin} contradicts itself: {recorded.where} says {field}={recorded.value!r}, but "
                f"{fact.where} means {field}={fact.value!r}"
            )
    return {**facts, **checkpoint.recorded}


def _check_agreement(
    tensors: dict[str, Tensor],
    arch: dict[str, Any],
    entry: dict[str, Any],
    known: dict[str, Evidence],
    name: str | None,
    origin: str,
) -> None:
    for field in STRUCTURAL:
        if field not in known:
            continue
        have = known[field]
        if field in arch and arch[field] != have.value:
            raise VitlabError(
                f"{field}={arch[field]!r} contradicts {origin}: {_clash(tensors, known, field, arch[field])}. Likely "
                f"cause: the override describes another model than these weights; leave {field} out to take "
                f"{field}={have.value!r} from the checkpoint"
            )
        if field not in arch and field in entry and _tupled(entry[field]) != have.value:
            raise VitlabError(
                f"{origin} is not a {name}, which has {field}={entry[field]!r}: "
                f"{_clash(tensors, known, field, entry[field])}. Pick the model name that matches, or none and pass "
                "what the checkpoint lacks as keywords (e.g. num_heads=N)"
            )


def _clash(tensors: dict[str, Tensor], known: dict[str, Evidence], field: str, value: Any) -> str:
    """In words, the first tensor whose shape differs in a model with `field=value` (else the evidence)."""
    values = {**{f: e.value for f, e in known.items()}, field: _tupled(value), "num_heads": 1}
    values["img_size"] = (2 * values["patch_size"],) * 2  # any valid size: pos_embed is not compared
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            expected = VisionTransformer(ViTConfig.from_dict(values)).state_dict()
    except VitlabError:
        expected = {}
    first = known[field].tensor
    for name in sorted(tensors, key=lambda n: n != first):  # the tensor that shows the value, then the rest
        tensor = tensors[name]
        if name in expected and name != "pos_embed" and expected[name].shape != tensor.shape:
            wanted = tuple(expected[name].shape)
            return f"{name} is {tuple(tensor.shape)} in the checkpoint but {wanted} in a model with {field}={value!r}"
    return f"{known[field].where} means {field}={known[field].value!r}"


def _image_size(
    tensors: dict[str, Tensor],
    values: dict[str, Any],
    known: dict[str, Evidence],
    arch: dict[str, Any],
    entry: dict[str, Any],
    resample: str,
    origin: str,
) -> tuple[int, int] | None:
    """The model's image size; resamples `tensors["pos_embed"]` in place when it differs from the checkpoint's.

    The checkpoint's grid is what its source records, else the override or model name's size if its grid has
    as many positions as pos_embed, else a square grid if the position count is a perfect square.
    """
    patch = values["patch_size"]
    wanted = arch.get("img_size")
    if wanted and (wanted[0] % patch or wanted[1] % patch):
        raise VitlabError(
            f"img_size {wanted[0]}x{wanted[1]} is not a multiple of the patch size {patch}: use a multiple of {patch}"
        )
    positions = patch_positions(tensors, values["class_token"])
    stored = _checkpoint_size(positions, patch, known.get("img_size"), [wanted, entry.get("img_size")], origin)
    target = wanted or stored or (_size(entry["img_size"]) if "img_size" in entry else None)
    if positions is not None and target != stored:
        grid = (target[0] // patch, target[1] // patch)
        tensors["pos_embed"] = resample_pos_embed(
            tensors["pos_embed"], grid, (stored[0] // patch, stored[1] // patch), int(values["class_token"]), resample
        )
    return target


def _checkpoint_size(
    positions: int | None, patch: int, recorded: Evidence | None, candidates: list[Any], origin: str
) -> tuple[int, int] | None:
    if recorded is not None:
        height, width = recorded.value
        if positions is not None and (height // patch) * (width // patch) != positions:
            raise VitlabError(
                f"{origin} contradicts itself: {recorded.where} says {height}x{width} pixels, a "
                f"{height // patch}x{width // patch} grid of {patch}-pixel patches, but pos_embed has {positions} "
                "patch positions"
            )
        return (height, width)
    if positions is None:  # fixed sin-cos positions fit any size
        return None
    for candidate in candidates:
        if candidate is not None:
            height, width = _size(_tupled(candidate))
            if (height // patch) * (width // patch) == positions:
                return (height, width)
    side = math.isqrt(positions)
    if side * side != positions:
        raise VitlabError(
            f"{origin}: pos_embed has {positions} patch positions, not a square grid, and nothing records the image "
            f"size: pass img_size=(height, width), the size it was trained at, with "
            f"(height/{patch})·(width/{patch}) = {positions}"
        )
    return (side * patch, side * patch)


def _missing_heads(origin: str, known: dict[str, Evidence]) -> str:
    dim, depth = known["embed_dim"].value, known["depth"].value
    matches = [n for n, e in MODELS.items() if e.config.get("embed_dim") == dim and e.config.get("depth") == depth]
    hint = (
        f"model={matches[0]!r} fits its width and depth"
        if matches
        else f"e.g. num_heads={max(dim // 64, 1)} for the usual 64-dim heads (it must divide embed_dim {dim})"
    )
    return (
        f"{origin} does not record the number of attention heads (a bare state dict has no config): "
        f"pass num_heads=N or model=NAME; {hint}"
    )


def _load_tensors(model: VisionTransformer, tensors: dict[str, Tensor], origin: str) -> None:
    """`load_state_dict(strict=True)`, failing first with a message that names the tensors that don't fit."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in tensors.items()}
    extra = sorted(set(given) - set(expected))
    missing = sorted(set(expected) - set(given))
    mismatched = [n for n in sorted(set(given) & set(expected)) if given[n] != expected[n]]
    problems = (
        [f"{n} is {given[n]} in the checkpoint but {expected[n]} in the model" for n in mismatched]
        + [f"{n} {given[n]} has no place in the model" for n in extra]
        + [f"{n} {expected[n]} is missing from the checkpoint" for n in missing]
    )
    if problems:
        cause = (
            "an override or model name that disagrees with the weights, or blocks of different sizes"
            if mismatched
            else "a ViT variant with parts vitlab's ViT does not have"
            if extra
            else "an incomplete checkpoint"
        )
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise VitlabError(
            f"{origin} does not fit the model built for it: {'; '.join(problems[:3])}{more}. Likely cause: {cause}"
        )
    model.load_state_dict(tensors, strict=True)


def _preprocessing(values: dict[str, Any], config: ViTConfig, origin: str) -> Preprocessing:
    """The checkpoint's preprocessing at the model's image size; a scalar mean/std applies to every channel."""
    channels = config.in_chans
    for key in ("mean", "std"):
        value = values.get(key, 0.5)
        if _is_number(value):
            value = (value,) * channels
        if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
            raise VitlabError(f"{origin}: preprocessing {key} should be a number or a list of {channels}, got {value!r}")
        values[key] = tuple(float(v) for v in value)
        if len(values[key]) != channels:
            raise VitlabError(
                f"{origin}: preprocessing {key} {values[key]} has {len(values[key])} channels but the model takes "
                f"{channels}: pass mean= and std= with {channels} values"
            )
    return Preprocessing.from_dict({**values, "img_size": config.img_size})
