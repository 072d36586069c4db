"""What every subcommand shares: JSON or human output, and model overrides from flags."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from vitlab.errors import VitlabError


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print one JSON object (with --json) or the human rendering of `result`."""
    if as_json:
        json.dump(result, sys.stdout, indent=None, sort_keys=False)
        sys.stdout.write("\n")
    else:
        print(render(result))


def add_model_override_flags(parser: Any) -> None:
    """Flags for what a checkpoint may not record (head count, ...) and what the user may change."""
    parser.add_argument("--model", help="registry name whose config fills in what the file does not record")
    parser.add_argument("--num-heads", type=int, help="attention heads (a bare timm state dict does not record them)")
    parser.add_argument("--img-size", type=int, help="input size; position embeddings are resampled to it")
    parser.add_argument("--num-classes", type=int, help="replace the head with a zero-initialised one of this size")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other ViTConfig field or timm keyword, e.g. --set gelu=tanh --set global_pool=avg",
    )


def model_overrides(args: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag in ("model", "num_heads", "img_size", "num_classes"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    overrides.update(parse_settings(args.settings))
    return overrides


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as a dict, values parsed as JSON where they parse."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise VitlabError(f"--set {item!r} is not KEY=VALUE (for example --set gelu=tanh)")
        settings[key.strip()] = _parse_value(raw.strip())
    return settings


def _parse_value(raw: str) -> Any:
    """JSON where it parses (numbers, true/false, null, lists), the plain string otherwise."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def add_data_flags(parser: Any, split_choices: tuple[str, ...] = ("train", "val", "test"), split_default: str | None = "test",
                   split_help: str | None = None) -> None:
    """--data, --data-dir, --split, --val-fraction, --seed, --download, --skip-bad-images, as `vitlab eval` has them."""
    parser.add_argument("--data", required=True, help="digits, mnist, fashion-mnist, cifar10, cifar100, imagefolder")
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default=split_default, choices=split_choices, help=split_help)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as in training, to get the same val split")
    parser.add_argument("--seed", type=int, default=0, help="as in training, to get the same val split")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--skip-bad-images", action="store_true")
