"""`make bench`: run every benchmark in turn."""

from __future__ import annotations

import importlib

BENCHMARKS = ("scoring",)


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n== benchmarks.{name} ==")
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main()
