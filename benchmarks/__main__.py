"""`make bench`: the quick benchmarks in turn (the others: `python -m benchmarks.<name>`)."""

from __future__ import annotations

import importlib

# ingest at its default 1M rows (--rows 10000000 by hand); cmapss needs the public data
BENCHMARKS = ("scoring", "ingest", "train_parallel")


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n== benchmarks.{name} ==")
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main()
