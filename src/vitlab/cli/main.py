"""Entry point of the `vitlab` command."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

from vitlab import __version__
from vitlab.cli import bench, convert, demo, evaluate, features, fewshot, finetune, info, inspection, models, predict, train
from vitlab.errors import VitlabError

COMMANDS = (train, finetune, evaluate, features, fewshot, predict, inspection, demo, models, info, convert, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlab", description="The Vision Transformer, faithful to the paper.")
    parser.add_argument("--version", action="version", version=f"vitlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return args.run(args)
    except VitlabError as error:
        print(f"vitlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"vitlab {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(command: str) -> Callable[..., None]:
    """Warnings as `vitlab CMD: warning: ...`, one line, without the source line Python would show."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"vitlab {command}: warning: {message}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    raise SystemExit(main())
