"""`vitlab train`: train a ViT on a dataset into a run folder (no arguments: the default model on digits)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vitlab.cli.common import emit, parse_settings
from vitlab.errors import VitlabError
from vitlab.training.loop import DataOptions, resume_config, train
from vitlab.training.recipe import TrainConfig

# flag → TrainConfig field, for the flags every run is likely to set
FLAGS = ("data", "data_dir", "model", "epochs", "batch_size", "lr", "img_size", "seed", "out", "precision",
         "ema_decay", "val_fraction", "train_per_class", "compile")  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a ViT from scratch (default: the small digits model)",
        description="Values come from the dataclass defaults, then the dataset's preset, then --config, then flags.",
    )
    add_run_flags(parser, model_help="a registered model name (default: the dataset preset's)")
    parser.set_defaults(run=run, flags=FLAGS)


def add_run_flags(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The flags `train` and `finetune` share."""
    parser.add_argument("--config", help="a YAML or JSON file of TrainConfig values; flags override it")
    parser.add_argument("--data", help="digits (default), mnist, fashion-mnist, cifar10, cifar100, imagefolder")
    parser.add_argument("--data-dir", help="where the dataset's files are (digits needs none)")
    parser.add_argument("--model", help=model_help)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="the global batch (split over torchrun processes)")
    parser.add_argument("--lr", type=float, help="peak learning rate after warmup")
    parser.add_argument("--img-size", type=int, help="train and evaluate at this size (images are resized)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="the run folder (default: a new folder under runs/)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="bf16: autocast; fp16: GPU only")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--ema-decay", type=float, help="keep an EMA of the weights (e.g. 0.999)")
    parser.add_argument("--val-fraction", type=float, help="hold-out share of train when there is no val split")
    parser.add_argument("--train-per-class", type=int, metavar="N", help="train on N images per class only (seeded)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig field, e.g. --set mixup_alpha=0 --set warmup_epochs=2")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder exactly where it stopped")
    parser.add_argument("--download", action="store_true", help="fetch the official dataset files when missing")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted) instead of failing")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags: dict[str, Any] = {name: getattr(args, name) for name in args.flags if getattr(args, name) is not None}
    flags.update(parse_settings(args.settings))
    if not args.resume:
        return TrainConfig.resolve(args.config, **flags)
    changed = sorted(set(flags) - {"data_dir"}) + (["--config"] if args.config else [])
    if changed:
        raise VitlabError(
            f"--resume continues the run with the options it was started with; drop {', '.join(changed)} "
            "(only --data-dir, --download, --skip-bad-images and --device may change)"
        )
    config = resume_config(args.resume)
    return TrainConfig.from_dict({**config.to_dict(), "out": args.resume, **flags})


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = train(
        config,
        resume=bool(args.resume),
        data=DataOptions(download=args.download, skip_bad_images=args.skip_bad_images),
        progress=not args.json and sys.stderr.isatty(),
        device=args.device,
    )
    if not result.is_main:
        return 0
    last = result.epochs[-1] if result.epochs else {}
    test = result.test
    summary = dict(
        run_dir=str(result.run_dir),
        data=config.data,
        model=config.model,
        pretrained=config.pretrained,
        epochs=len(result.epochs),
        seconds=round(result.seconds, 1),
        val_top1=last.get("val_top1"),
        split=result.test_split,
        top1=test.top1 if test else None,
        top5=test.top5 if test else None,
        loss=test.loss if test else None,
    )
    emit(summary, args.json, _render)
    return 0


def _render(r: dict) -> str:
    return (
        f"{r['data']} / {r['pretrained'] or r['model']}: {r['split']} top-1 {r['top1']:.4f}, top-5 {r['top5']:.4f} "
        f"after {r['epochs']} epochs in {r['seconds']:.0f} s\nrun folder: {r['run_dir']}"
    )
