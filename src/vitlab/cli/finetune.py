"""`vitlab finetune`: fine-tune pretrained weights on a dataset, the paper's way, into a run folder."""

from __future__ import annotations

import argparse

from vitlab.cli import train
from vitlab.errors import VitlabError

FLAGS = train.FLAGS + ("pretrained", "optimizer", "weight_decay", "layer_decay", "freeze_backbone", "freeze_blocks")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune pretrained weights (a file, folder or Hub id) on a dataset",
        description="A new zero-initialised head for the dataset's classes, position embeddings resampled when "
        "--img-size differs from pre-training, the checkpoint's own normalisation, and the paper's recipe "
        "(SGD momentum 0.9, no weight decay, clipping at 1, warmup then cosine). Values come from the "
        "dataclass defaults, the dataset's preset, the fine-tuning recipe, --config, then flags.",
    )
    parser.add_argument("--pretrained", help="anything load_pretrained reads, or a Hub id: hf-hub:google/vit-base-patch16-224, "
                        "timm/vit_small_patch16_224.augreg_in21k_ft_in1k")
    train.add_run_flags(parser, model_help="a registered model name for what the checkpoint does not record (a bare timm "
                        "state dict's head count)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (momentum 0.9, the paper's; default) or adamw")
    parser.add_argument("--weight-decay", type=float, help="default 0 (the paper's fine-tuning)")
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay: block i of L gets lr × decay^(L + 1 − i)")
    parser.add_argument("--freeze-backbone", action="store_true", default=None, help="train the head only (linear probe)")
    parser.add_argument("--freeze-blocks", type=int, metavar="N", help="freeze the embeddings and the first N blocks")
    parser.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    if not args.resume and not args.pretrained:
        raise VitlabError("finetune needs --pretrained SOURCE (a checkpoint file or folder, or a Hub id such as "
                          "hf-hub:google/vit-base-patch16-224)")
    return train.run(args)
