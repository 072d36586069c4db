"""`vitlab eval`: top-1, top-5, loss, per-class accuracy and a confusion matrix (PNG and JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vitlab.checkpoints import load_pretrained
from vitlab.checkpoints.files import json_writer, write_files
from vitlab.cli.common import add_data_flags, emit
from vitlab.data.datasets import load_dataset
from vitlab.evaluation.classification import evaluate
from vitlab.evaluation.plots import plot_confusion_matrix


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    parser.add_argument("--checkpoint", required=True, help="a run folder or any checkpoint vitlab reads")
    add_data_flags(parser)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--out", help="folder for confusion_matrix.png/.json (default: <checkpoint>/eval-<data>-<split>)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = load_pretrained(args.checkpoint)
    dataset = load_dataset(args.data, args.data_dir, args.split, val_fraction=args.val_fraction, seed=args.seed,
                           download=args.download, skip_bad_images=args.skip_bad_images)
    result = evaluate(model, dataset, model.preprocessing, batch_size=args.batch_size, precision=args.precision,
                      progress=not args.json and sys.stderr.isatty())
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else (checkpoint if checkpoint.is_dir() else Path(".")) / f"eval-{args.data}-{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "data": args.data, "split": args.split, **result.to_dict()}
    write_files(out, {"confusion_matrix.json": json_writer(report)})
    plot_confusion_matrix(result.confusion_matrix, result.classes, out / "confusion_matrix.png",
                          f"{args.data} {args.split}: top-1 {result.top1:.4f}")
    emit({**report, "out": str(out)}, args.json, _render)
    return 0


def _render(r: dict) -> str:
    worst = sorted(zip(r["per_class_accuracy"], r["classes"]))[:3]
    return "\n".join([
        f"{r['data']} {r['split']} ({r['num_images']} images): top-1 {r['top1']:.4f}, top-5 {r['top5']:.4f}, loss {r['loss']:.4f}",
        "weakest classes: " + ", ".join(f"{name} {acc:.3f}" for acc, name in worst),
        f"confusion matrix: {r['out']}/confusion_matrix.png (.json)",
    ])
