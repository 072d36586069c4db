"""`vitlab info`: what a checkpoint is, what architecture it holds and what inputs it expects."""

from __future__ import annotations

import argparse

from vitlab.checkpoints import detect_source, load_pretrained
from vitlab.cli.common import add_model_override_flags, emit, model_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a checkpoint: format, architecture, preprocessing")
    parser.add_argument("source", help="a vitlab or Hugging Face folder, a timm .safetensors/.pth/.bin, a Google .npz, or a Hub id (hf-hub:OWNER/NAME)")
    add_model_override_flags(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = detect_source(args.source)
    model = load_pretrained(args.source, **model_overrides(args))
    result = dict(
        source=str(args.source),
        format=fmt.kind,
        params=sum(p.numel() for p in model.parameters()),
        architecture=model.config.to_dict(),
        preprocessing=model.preprocessing.to_dict(),
        labels=model.labels,
    )
    emit(result, args.json, _render)
    return 0


def _render(result: dict) -> str:
    arch = result["architecture"]
    lines = [
        f"{result['source']}: {result['format']} checkpoint, {result['params']:,} parameters",
        f"  {arch['depth']} blocks, width {arch['embed_dim']}, {arch['num_heads']} heads, MLP {arch['mlp_dim']}, "
        f"patch {arch['patch_size']}, image {arch['img_size'][0]}x{arch['img_size'][1]}, {arch['num_classes']} classes",
        f"  pooling {arch['global_pool']}, position embedding {arch['pos_embed']}, GELU {arch['gelu']}, "
        f"LayerNorm eps {arch['layer_norm_eps']:g}",
        f"  preprocessing: {result['preprocessing']}",
    ]
    if result["labels"]:
        shown = ", ".join(result["labels"][:10]) + (" ..." if len(result["labels"]) > 10 else "")
        lines.append(f"  labels: {shown}")
    return "\n".join(lines)
