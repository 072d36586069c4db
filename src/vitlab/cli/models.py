"""`vitlab models`: the registered architectures with their parameter counts."""

from __future__ import annotations

import argparse

import torch

from vitlab.cli.common import emit
from vitlab.errors import VitlabError
from vitlab.models.registry import MODELS, create_model, list_models


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model names create_model knows")
    parser.add_argument("pattern", nargs="?", default="", help="only names containing this")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise VitlabError(f"no model name contains {args.pattern!r}; `vitlab models` lists all {len(MODELS)}")
    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        config = model.config
        rows.append(
            dict(
                name=name,
                params=sum(p.numel() for p in model.parameters()),
                img_size=list(config.img_size),
                patch_size=config.patch_size,
                depth=config.depth,
                embed_dim=config.embed_dim,
                num_heads=config.num_heads,
                mlp_dim=config.mlp_dim,
                about=MODELS[name].about,
            )
        )
    emit({"models": rows}, args.json, _render)
    return 0


def _render(result: dict) -> str:
    lines = [f"{'name':<24} {'params':>13} {'size':>5} {'patch':>5} {'L':>3} {'D':>5} {'heads':>5}  about"]
    for row in result["models"]:
        lines.append(
            f"{row['name']:<24} {row['params']:>13,} {row['img_size'][0]:>5} {row['patch_size']:>5} {row['depth']:>3} "
            f"{row['embed_dim']:>5} {row['num_heads']:>5}  {row['about']}"
        )
    return "\n".join(lines)
