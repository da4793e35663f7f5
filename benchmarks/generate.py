"""Generating: one ``uvx … stac create-item`` process per request vs the warm runner.

Run with ``uv run python benchmarks/generate.py`` (about two and a half minutes on 2 cores, nearly
all of it the one-shot path). It writes tiny GLAD GLCLU2020 tiles to a temporary directory, runs
the same item requests through ``item_gen.runner.run_once`` and through a fresh
``item_gen.warm.WarmRunner``, checks both produced identical items, and prints a table and a final
JSON line with the ratios. Targets (issue 5): warm steady state >= 20x faster per request; the
first warm request (which starts the worker) at most 1.2x the one-shot mean.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from item_gen.models import parse_request
from item_gen.runner import run_once
from item_gen.settings import GenSettings
from item_gen.warm import WarmRunner

ROOT = Path(__file__).resolve().parent.parent


def _geotiffs():
    """The test suite's GLAD tile helpers, imported by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("geotiffs", ROOT / "tests" / "geotiffs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    doc = fn(*args)
    return time.perf_counter() - start, doc


def main() -> None:
    """Time both paths on the same requests and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="item requests per path")
    args = parser.parse_args()
    geotiffs = _geotiffs()
    settings = GenSettings(request_timeout_seconds=120, warm_workers_per_env=1)

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        root = Path(tmp)
        corners = [(lon, lat) for lat in (50, 40) for lon in range(-120, 130, 10)]
        tifs = geotiffs.glad_tiles(root, corners=corners[: args.requests])
        requests = [parse_request(geotiffs.glad_item_request(t, root)) for t in tifs]

        # Untimed: makes sure uv's cache holds the environment, so neither path pays for installs.
        run_once(requests[0], settings)

        print(f"one-shot: {len(requests)} requests, one `uvx … stac` process each", file=sys.stderr)
        once = [_timed(run_once, r, settings) for r in requests]

        print(f"warm: {len(requests)} requests through a new WarmRunner", file=sys.stderr)
        runner = WarmRunner()
        try:
            warm = [_timed(runner, r, settings) for r in requests]
        finally:
            runner.close()

    if [doc for _, doc in once] != [doc for _, doc in warm]:
        raise SystemExit("the warm runner's items differ from the one-shot items")

    once_times = [t for t, _ in once]
    once_mean = statistics.mean(once_times)
    warm_first = warm[0][0]
    steady = [t for t, _ in warm[1:]]
    steady_mean = statistics.mean(steady)
    speedup = once_mean / steady_mean
    first_ratio = warm_first / once_mean

    rows = [
        ("one-shot uvx, mean s/request", once_mean, f"n={len(once_times)}"),
        ("one-shot uvx, median s/request", statistics.median(once_times), ""),
        ("warm, first request s (starts worker)", warm_first, f"{first_ratio:.2f}x one-shot"),
        ("warm, steady-state mean s/request", steady_mean, f"n={len(steady)}"),
        ("warm, steady-state median s/request", statistics.median(steady), ""),
        ("speed-up once warm (one-shot / warm)", speedup, "target >= 20"),
    ]
    print(f"{'measure':<40} {'value':>10}  note")
    print("-" * 70)
    for name, value, note in rows:
        print(f"{name:<40} {value:>10.4f}  {note}")
    print(
        json.dumps(
            {
                "requests": len(requests),
                "one_shot_mean_s": round(once_mean, 4),
                "warm_first_s": round(warm_first, 4),
                "warm_steady_mean_s": round(steady_mean, 5),
                "warm_speedup": round(speedup, 1),
                "first_request_ratio": round(first_ratio, 2),
                "identical_output": True,
            }
        )
    )


if __name__ == "__main__":
    main()
