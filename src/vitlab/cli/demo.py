"""`vitlab demo`: build a paper model, check it, round-trip its weights, classify an image. No data needed."""

from __future__ import annotations

import argparse

from vitlab.cli.common import emit
from vitlab.demo import run_demo
from vitlab.models.registry import get_entry


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="a first look: build, check and convert a paper model (no data needed)")
    parser.add_argument("--model", default="vit_small_patch16_224", help="a registered model name")
    parser.add_argument("--image", help="an image to classify (default: a built-in test pattern)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    get_entry(args.model)  # an unknown name fails here, with suggestions
    emit(run_demo(args.model, args.image), args.json, _render)
    return 0


def _render(r: dict) -> str:
    table = f" (paper/timm table: {r['params_in_table']:,})" if r["params_in_table"] else ""
    trips = ", ".join(f"{fmt} {diff:.1e}" for fmt, diff in r["round_trip_max_abs_diff"].items())
    top = ", ".join(f"class {t['index']} {t['probability']:.3f}" for t in r["top"])
    return "\n".join(
        [
            f"built {r['model']}: {r['params']:,} parameters{table}",
            f"exact attention path vs fused SDPA: max |diff| {r['exact_vs_fused_max_abs_diff']:.1e}",
            f"saved as vitlab, converted to Hugging Face and timm, reloaded: max |diff| {trips}",
            f"reloaded at {r['resampled']['img_size'][0]} px: position embeddings resampled to a "
            f"{r['resampled']['grid'][0]}x{r['resampled']['grid'][1]} grid",
            f"{r['image']}: top-{len(r['top'])} {top}",
            "(random weights: load real ones with vitlab.load_pretrained or `vitlab predict --checkpoint ...`)",
        ]
    )
