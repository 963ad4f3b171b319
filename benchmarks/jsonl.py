"""JSONL trace import speed: lines per second for one rank's file of N calls.

    python benchmarks/jsonl.py [--lines 40000] [--repeats 5]

Prints the median of the repeats. The figure belongs here rather than in a timed unit test: on a shared
machine a wall-clock bound in the suite fails for reasons that are not hangdoc's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from hangdoc.importers import jsonl


def write_trace(path: Path, n: int) -> None:
    with path.open("w") as fh:
        fh.write(json.dumps({"hangdoc_trace": 1, "rank": 3, "host": "h", "groups": {"tp:0": [0, 1, 2, 3]}}) + "\n")
        for i in range(1, n + 1):
            fh.write(json.dumps({"group": "tp:0", "seq": i, "op": "all_reduce", "reduce_op": "SUM",
                                 "dtype": "bfloat16", "shape": [i % 977, 3072], "state": "completed",
                                 "t": 1767225600 + i / 100}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "rank3.jsonl"
        write_trace(f, args.lines)
        rates = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            b = jsonl.read([f])
            rates.append(args.lines / (time.perf_counter() - t0))
            assert b.rows("collectives") == args.lines
    print(f"jsonl import: {statistics.median(rates):,.0f} lines/s (median of {args.repeats}, {args.lines:,} lines)")


if __name__ == "__main__":
    main()
