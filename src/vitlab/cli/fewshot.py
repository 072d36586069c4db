"""`vitlab fewshot`: the paper's few-shot linear evaluation (Section 4.1) of a checkpoint on a dataset.

The few-shot images come from the training split; top-1 is measured on the test split, or on the val split
where the dataset has no test split here (`--split` chooses). Features are computed once per checkpoint and
split and cached (see `vitlab.evaluation.feature_cache`).
"""

from __future__ import annotations

import argparse
from typing import Any

from vitlab.cli.common import add_data_flags, emit
from vitlab.cli.features import add_extraction_flags, dataset_spec, feature_extractor
from vitlab.evaluation.fewshot import L2, eval_split, evaluate_fewshot, parse_shots


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fewshot", help="few-shot linear evaluation: a ridge probe on frozen features")
    add_extraction_flags(parser)
    add_data_flags(parser, ("test", "val"), None, "where top-1 is measured (default: test if the dataset has one, else val)")
    parser.add_argument("--shots", default="1,5,10,25", help="images per class, comma-separated (default 1,5,10,25)")
    parser.add_argument("--seeds", type=int, default=3, help="few-shot samples per shot count (seeds 0..N-1)")
    parser.add_argument("--l2", type=float, default=L2, help="ridge regularisation (default 2^10, as big_vision)")
    parser.add_argument("--cache-dir", help="feature cache (default $VITLAB_CACHE/features or ~/.cache/vitlab/features)")
    parser.add_argument("--no-cache", action="store_true", help="compute the features without reading or writing the cache")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    shots = parse_shots(args.shots)
    extractor = feature_extractor(args, "pre_logits", cache=not args.no_cache, cache_dir=args.cache_dir)
    train = dataset_spec(args, "train")
    evaluation = dataset_spec(args, args.split or eval_split(train))
    result = evaluate_fewshot(extractor, train, evaluation, shots=shots, seeds=args.seeds, l2=args.l2)
    report = {"checkpoint": str(args.checkpoint), "data": args.data, **result.to_dict(),
              "cache_dir": None if args.no_cache else str(extractor.cache_dir)}
    emit(report, args.json, _render)
    return 0


def _render(r: dict[str, Any]) -> str:
    lines = [
        f"few-shot linear probe of {r['checkpoint']} on {r['data']}: {r['feature_dim']}-d pre-logits, "
        f"{r['num_classes']} classes, ridge l2 {r['l2']:g}, {r['seeds']} seed{'s' if r['seeds'] > 1 else ''}",
        f"few-shot images from {r['train_split']} ({r['num_train_images']}), top-1 on {r['eval_split']} "
        f"({r['num_eval_images']} images)",
        f"{'shots':>5}  {'top-1':>6}  {'± std':>6}  {'min':>6}  {'max':>6}",
    ]
    lines += [f"{s['shots']:>5}  {s['mean']:>6.4f}  {s['std']:>6.4f}  {s['min']:>6.4f}  {s['max']:>6.4f}" for s in r["results"]]
    where = r["cache_dir"]
    lines.append("features: " + ("not cached (--no-cache)" if where is None else
                                 f"{'read from' if r['from_cache'] else 'computed, cached in'} {where}"))
    return "\n".join(lines)
