"""`vitlab convert`: rewrite a checkpoint as vitlab, Hugging Face or timm, so weights round-trip."""

from __future__ import annotations

import argparse

from vitlab.checkpoints import convert
from vitlab.cli.common import add_model_override_flags, emit, model_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="write a checkpoint in another format (vitlab, hf, timm)")
    parser.add_argument("source", help="any checkpoint vitlab reads")
    parser.add_argument("out", help="a folder (vitlab, hf) or a .safetensors file (timm)")
    parser.add_argument("--to", choices=("vitlab", "hf", "timm"), default="vitlab", help="target format")
    add_model_override_flags(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = convert(args.source, args.out, to=args.to, **model_overrides(args))
    emit({"source": str(args.source), "out": str(out), "format": args.to}, args.json, lambda r: f"wrote {r['out']} ({r['format']})")
    return 0
