"""`vitlab features`: a checkpoint's pooled or per-token features of a dataset split, written to a file.

`--out FILE.safetensors` holds tensors `features` and `labels` (class names in the metadata); `FILE.npz` arrays
`features`, `labels` and `classes`; `FILE.npy` the features, with the labels beside it in `FILE.labels.npy`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vitlab.cli.common import add_data_flags, add_model_override_flags, emit, model_overrides
from vitlab.evaluation.feature_cache import DatasetSpec, FeatureExtractor
from vitlab.evaluation.features import POOLS, Pool, check_output_path, save_features


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="write a checkpoint's features of a dataset split to a file")
    add_extraction_flags(parser)
    add_data_flags(parser, split_default="train")
    parser.add_argument("--pool", choices=POOLS, default="pre_logits",
                        help="pre_logits: one pooled vector per image (N, D); tokens: every token (N, T, D)")
    parser.add_argument("--out", required=True, help="FILE.npy (labels in FILE.labels.npy), FILE.npz or FILE.safetensors")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def add_extraction_flags(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, how to load it and how to run it: what `features` and `fewshot` share."""
    parser.add_argument("--checkpoint", "--pretrained", dest="checkpoint", required=True, metavar="SOURCE",
                        help="a run folder, any checkpoint file vitlab reads, or a Hub id (hf-hub:OWNER/NAME)")
    add_model_override_flags(parser)
    parser.add_argument("--resize", type=int, metavar="N", help="resize the dataset's images to N×N (bicubic) on loading")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")


def feature_extractor(args: argparse.Namespace, pool: Pool, **cache: Any) -> FeatureExtractor:
    return FeatureExtractor(args.checkpoint, model_overrides(args), pool=pool, batch_size=args.batch_size,
                            precision=args.precision, device=args.device,
                            progress=not args.json and sys.stderr.isatty(), **cache)


def dataset_spec(args: argparse.Namespace, split: str) -> DatasetSpec:
    return DatasetSpec(args.data, args.data_dir, split, val_fraction=args.val_fraction, seed=args.seed,
                       image_size=args.resize, skip_bad_images=args.skip_bad_images, download=args.download)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.out)  # before anything is computed
    extractor = feature_extractor(args, args.pool, cache=False)
    result = extractor.features(dataset_spec(args, args.split))
    metadata = {"checkpoint": str(args.checkpoint), "data": result.dataset, "split": result.split, "pool": args.pool}
    files = save_features(args.out, result.features, result.labels, result.classes, metadata)
    report = {**metadata, "num_images": len(result.labels), "shape": list(result.features.shape),
              "classes": result.classes, "files": [str(f) for f in files]}
    emit(report, args.json, _render)
    return 0


def _render(r: dict[str, Any]) -> str:
    shape = "×".join(str(s) for s in r["shape"])
    return f"{r['data']} {r['split']}: {r['pool']} features {shape} and {r['num_images']} labels → {', '.join(r['files'])}"
