"""`vitlab predict`: top-k classes for image files with any checkpoint vitlab reads."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vitlab.checkpoints import load_pretrained
from vitlab.cli.common import add_model_override_flags, emit, model_overrides
from vitlab.data.preprocessing import load_images
from vitlab.errors import VitlabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="classify images with a checkpoint")
    parser.add_argument("--checkpoint", required=True, help="any checkpoint vitlab reads (a run folder too)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    add_model_override_flags(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--topk", args.topk), ("--batch-size", args.batch_size)):
        if value < 1:
            raise VitlabError(f"{flag} must be at least 1, got {value}")
    model = load_pretrained(args.checkpoint, **model_overrides(args))
    paths = image_paths(args.images)
    predictions = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        predictions += classify(model, load_images(chunk, model.preprocessing), chunk, args.topk)
    emit({"checkpoint": str(args.checkpoint), "predictions": predictions}, args.json, _render)
    return 0


def classify(model: torch.nn.Module, images: torch.Tensor, paths: list[Path], topk: int) -> list[dict]:
    if model.num_classes <= 0:
        raise VitlabError("this checkpoint has no classifier head (num_classes=0): pass --num-classes after fine-tuning")
    with torch.inference_mode():
        probabilities = model(images).float().softmax(dim=-1)
    top = probabilities.topk(min(topk, probabilities.shape[-1]), dim=-1)
    labels = model.labels or [str(i) for i in range(model.num_classes)]
    return [
        dict(image=str(path), top=[dict(label=labels[i], index=int(i), probability=float(p)) for p, i in zip(ps, ids)])
        for path, ps, ids in zip(paths, top.values.tolist(), top.indices.tolist())
    ]


def image_paths(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to the images they hold (sorted); nothing found is an error."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise VitlabError(f"{path}: a folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise VitlabError(f"{path}: no such image file or folder")
    return paths


def _render(result: dict) -> str:
    lines = []
    for row in result["predictions"]:
        best = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row["top"])
        lines.append(f"{row['image']}: {best}")
    return "\n".join(lines)
