"""Run every benchmark module's ``main()`` in turn, or only those named on the command line."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from typing import cast

import bench


def available() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def run(argv: list[str]) -> int:
    names = available()
    chosen = argv or names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}")
        return 2
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            print(f"bench.{name}: no main(), skipped")
            continue
        started = time.perf_counter()
        cast(Callable[[], None], entry)()
        print(f"[bench.{name} took {time.perf_counter() - started:.1f} s]\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
