"""`stactools-ingest run items.ndjson` against `pypgstac load items --method upsert items.ndjson`.

    uv run python benchmarks/run_vs_pypgstac.py [--items 50000] [--rounds 1] [--profile]

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


def profile_run(path: Path, dsn: str, top: int = 25) -> None:
    """One more ``run`` under py-spy (through uvx): where its threads spend their time, by the
    innermost stactools-ingest function and what it was doing (waiting on PostgreSQL, or not)."""
    from collections import Counter

    with tempfile.TemporaryDirectory(prefix="bench-run-spy-") as tmp:
        raw = Path(tmp) / "run.raw"
        spy = ["uvx", "py-spy", "record", "--threads", "--idle", "-r", "200", "-f", "raw"]
        cmd = [*spy, "-o", str(raw), "--", str(BIN / "stactools-ingest"), "run", str(path)]
        subprocess.run([*cmd, "--dsn", dsn, "-q"], capture_output=True, env=_env(dsn), check=True)
        samples: Counter[tuple[str, str, str, str]] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            ours = [
                f
                for f in frames
                if ("stactools_ingest/" in f or "item_load/" in f) and "read_ahead.py" not in f
            ]
            where = ours[-1].split(" (")[0] if ours else "-"
            thread = frames[0].split(": ")[-1]
            # work done while a load waits on PostgreSQL (read_ahead): overlapped, not added
            ahead = "yes" if any("_working_while_waiting" in f for f in frames) else ""
            samples[(thread, where, frames[-1].split(" (")[0], ahead)] += int(count)
    rows = [
        (thread, where, leaf, ahead, f"{n / 200:.2f}")
        for (thread, where, leaf, ahead), n in samples.most_common()
        if not leaf.endswith("Condition.wait")  # idle threads
    ]
    headers = ("thread", "stactools-ingest function", "innermost frame", "in a wait", "seconds")
    print_table(rows[:top], headers)
    overlapped = sum(float(r[-1]) for r in rows if r[3])
    total = sum(float(r[-1]) for r in rows)
    print(f"{total:.2f} s sampled, {overlapped:.2f} s of it read ahead inside database waits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="then one run under py-spy: where its time goes"
    )
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
        if args.profile:
            dsn = fresh_db(srv, "bench_cli_profile")
            prepare(dsn)
            profile_run(path, dsn)
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
