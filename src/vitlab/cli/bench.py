"""`vitlab bench`: throughput of vitlab vs the Hugging Face ViT with the same weights, in the same run."""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from vitlab.benchmarking.throughput import BenchCase, default_suite, run_case
from vitlab.cli.common import emit
from vitlab.errors import VitlabError
from vitlab.models.registry import create_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="inference and training throughput vs Hugging Face",
        description="Without --model: the standard suite (ViT-S/16 inference at batch 16, the tiny 32 px ViT's "
        "training step at batch 128, each in fp32 and bf16 autocast).",
    )
    parser.add_argument("--model", help="one registry model instead of the standard suite")
    parser.add_argument("--mode", choices=("inference", "train"), default="inference")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the vitlab model")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per model (median counts)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing round")
    parser.add_argument("--pipeline", action="store_true",
                        help="instead: end-to-end training steps (data + augmentation) vs model-only steps")
    parser.add_argument("--data", help="with --pipeline: the dataset, default digits (its training preset is used)")
    parser.add_argument("--data-dir", help="with --pipeline: where the dataset's files are")
    parser.add_argument("--config", help="with --pipeline: a training config file (YAML or JSON) over the preset")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.pipeline:
        return _run_pipeline(args)
    for flag, value in (("--batch-size", args.batch_size), ("--rounds", args.rounds), ("--seconds", args.seconds)):
        if value <= 0:
            raise VitlabError(f"{flag} must be positive, got {value}")
    if args.model:  # a wrong name or size fails here, before any timing or progress bar
        with torch.device("meta"):
            create_model(args.model, **({"img_size": args.img_size} if args.img_size else {}))
        precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
        cases = [BenchCase(args.model, args.mode, args.batch_size, p, args.img_size, args.compile) for p in precisions]
    else:
        cases = default_suite(compile=args.compile)
    results = [run_case(case, args.rounds, args.seconds) for case in tqdm(cases, desc="bench", disable=args.json)]
    emit({"results": results}, args.json, _render)
    return 0


def _render(result: dict) -> str:
    lines = [
        f"{'case':<46} {'vitlab img/s':>12} {'HF img/s':>9} {'ratio':>6} {'GFLOP/s':>8} {'% peak':>7} {'HF % peak':>9}"
    ]
    for row in result["results"]:
        ours, theirs = row["vitlab"], row["hf"]
        lines.append(
            f"{row['label']:<46} {ours['img_per_s']:>12.1f} {theirs['img_per_s']:>9.1f} {row['ratio']:>5.2f}x "
            f"{ours['gflops']:>8.1f} {ours['peak_pct']:>6.1f}% {theirs['peak_pct']:>8.1f}%"
        )
    peaks = {row["case"]["precision"]: row["matmul_peak_gflops"] for row in result["results"]}
    lines.append("matmul peak (2048², GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    return "\n".join(lines)


def _run_pipeline(args: argparse.Namespace) -> int:
    from vitlab.benchmarking.pipeline import pipeline_rates
    from vitlab.training.recipe import TrainConfig

    flags = {name: value for name, value in (("data", args.data), ("data_dir", args.data_dir)) if value is not None}
    if args.precision != "both":
        flags["precision"] = args.precision
    result = pipeline_rates(TrainConfig.resolve(args.config, **flags), args.rounds, args.seconds)
    emit(result, args.json, lambda r: (
        f"{r['data']} / {r['model']} batch {r['batch_size']} {r['precision']}: end to end {r['end_to_end_img_per_s']:.0f} "
        f"img/s, model only {r['model_only_img_per_s']:.0f} img/s, ratio {r['ratio']:.2f}"))
    return 0
