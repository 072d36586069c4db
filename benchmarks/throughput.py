"""Run the standard throughput suite and keep its JSON next to this file.

    python benchmarks/throughput.py [--compile]      # writes benchmarks/results/throughput[-compiled].json

The same as `vitlab bench --json`; see README.md here for the latest figures and what they mean.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from vitlab.benchmarking import default_suite, run_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true", help="torch.compile the vitlab model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    results = [run_case(case, args.rounds, args.seconds) for case in default_suite(compile=args.compile)]
    report = dict(
        when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        results=results,
    )
    out = Path(__file__).parent / "results" / f"throughput{'-compiled' if args.compile else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for row in results:
        print(f"{row['label']:<46} vitlab {row['vitlab']['img_per_s']:7.1f} img/s  HF {row['hf']['img_per_s']:7.1f}  x{row['ratio']:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
