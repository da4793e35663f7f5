"""`stactools-ingest run items.ndjson` against `pypgstac load items --method upsert items.ndjson`.

    uv run python benchmarks/run_vs_pypgstac.py [--items 50000] [--rounds 1]

Both are the command a user would run, as a subprocess, on the same NDJSON of prebuilt items
(``benchmarks/load.py``'s ``make_items``: 12 assets each), each into a fresh database of the same
server whose collection is already loaded, in the same run. Wall time includes each CLI's
start-up; rounds alternate the order. Each command first runs once, untimed, on 100 items, and
Python may cache compiled bytecode (``PYTHONDONTWRITEBYTECODE`` is dropped), as on a user's
machine. Prints a table and a final JSON line; the ratio is pypgstac's wall time over run's
(>= 1.0: run is at least as fast).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from _common import REPO, Timer, fresh_db, print_json, print_table, server
from load import count, make_items, prepare

BIN = REPO / ".venv" / "bin"


def _env(dsn: str) -> dict[str, str]:
    env = {**os.environ, "PGSTAC_DSN": dsn, "POWERTOOLS_METRICS_DISABLED": "true"}
    # As on a user's machine, where Python caches compiled bytecode: without that cache every
    # start compiles each imported module again (3 s of a run's 14 on the 2-core machine this
    # was written on), which a user pays once, not at every command.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_cli(path: Path, dsn: str) -> float:
    """``stactools-ingest run FILE``: wall seconds; every item must land."""
    cmd = [str(BIN / "stactools-ingest"), "run", str(path), "--dsn", dsn, "--json", "-q"]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(dsn))
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return t.seconds


def pypgstac_cli(path: Path, dsn: str) -> float:
    """``pypgstac load items --method upsert FILE``: wall seconds."""
    cmd = [str(BIN / "pypgstac"), "load", "items", str(path), "--dsn", dsn, "--method", "upsert"]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(dsn))
    if proc.returncode != 0:
        raise SystemExit(f"pypgstac failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory(prefix="bench-run-cli-") as tmp, server() as srv:
        path = Path(tmp) / "items.ndjson"
        with path.open("wb") as f:
            for doc in make_items(n):
                f.write(orjson.dumps(doc) + b"\n")
        mb = path.stat().st_size / 1e6
        print(f"{n} items, {mb:.1f} MB NDJSON", file=sys.stderr)
        warmup = Path(tmp) / "warmup.ndjson"
        with warmup.open("wb") as f:
            for doc in make_items(100):
                f.write(orjson.dumps(doc) + b"\n")
        for name, fn in (("pypgstac", pypgstac_cli), ("run", run_cli)):
            dsn = fresh_db(srv, f"bench_cli_{name}")
            prepare(dsn)
            fn(warmup, dsn)  # untimed: compiles and caches each command's bytecode
        times: dict[str, list[float]] = {"pypgstac": [], "run": []}
        for r in range(args.rounds):
            order = [("pypgstac", pypgstac_cli), ("run", run_cli)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                dsn = fresh_db(srv, f"bench_cli_{name}")
                prepare(dsn)
                times[name].append(fn(path, dsn))
                landed = count(dsn)
                assert landed == n, (name, landed)
                print(f"round {r + 1}: {name} {times[name][-1]:.2f} s", file=sys.stderr)
    ref, ours = statistics.median(times["pypgstac"]), statistics.median(times["run"])
    print_table(
        [
            ("pypgstac load items --method upsert", n, f"{ref:.2f}", f"{n / ref:,.0f}"),
            ("stactools-ingest run", n, f"{ours:.2f}", f"{n / ours:,.0f}"),
        ],
        ("command", "items", "seconds (median)", "items/s"),
    )
    print_json(
        {
            "items": n,
            "pypgstac_s": round(ref, 2),
            "run_s": round(ours, 2),
            "run_vs_pypgstac": round(ref / ours, 3),
            "rounds": args.rounds,
        }
    )


if __name__ == "__main__":
    main()
