"""`make bench`: run every benchmark in turn."""

from __future__ import annotations

import importlib

BENCHMARKS = ("scoring", "ingest")  # ingest at its default 1M rows; --rows 10000000 by hand


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n== benchmarks.{name} ==")
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main()
