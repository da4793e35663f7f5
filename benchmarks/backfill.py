"""A local backfill at scale: ``stactools-ingest inventory`` (no ``--stack``), SIGKILLed, resumed.

    uv run python benchmarks/backfill.py [--rows 100000] [--kill-at 0.33] [--workers 2]

``--rows`` synthetic inventory rows become item requests for a tiny real stactools plugin
(``tests/fake_package.py``, run through uv by the warm runner; each row's href becomes the item's
id), generated and loaded into a fresh pgstac by the command a user runs. It is killed with
SIGKILL once ``--kill-at`` of the items are in pgstac, and the same command is run again. Then it
checks what the test checks at 1,000 rows (tests/cli/test_backfill.py): every row's item is in
pgstac once, the queues hold one request per row and one hand-over per request, all done, and only
what was being generated at the kill was generated twice. Reference: the same backfill run once
without a kill, into another fresh database, in the same run (what the kill cost). Prints a table
and a final JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Timer, fresh_db, print_json, print_table, server
from fake_package import COLLECTION, GROUP, build_wheel

CLI = str(Path(sys.executable).parent / "stactools-ingest")


def loaded(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--kill-at", type=float, default=0.33)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stactools-ingest-backfill-"))
    wheel = build_wheel(work)
    (work / "collection.json").write_text(json.dumps(COLLECTION))
    ids = [f"tile-{n:07d}" for n in range(args.rows)]
    (work / "rows.txt").write_text("\n".join(ids) + "\n")

    def command(dsn: str) -> list[str]:
        return [
            CLI, "inventory", str(work / "rows.txt"), "--package", str(wheel), "--group", GROUP,
            "--arg-template", "id:{href}", "--workers", str(args.workers), "--dsn", dsn, "--json",
        ]  # fmt: skip

    def prepare(dsn: str) -> None:
        done = subprocess.run([CLI, "run", str(work / "collection.json"), "--dsn", dsn, "-q"])
        assert done.returncode == 0

    with server() as srv:
        # the reference: one uninterrupted backfill
        ref_dsn = fresh_db(srv, "bench_backfill_ref")
        prepare(ref_dsn)
        with Timer() as ref:
            whole = subprocess.run(command(ref_dsn), capture_output=True, text=True, cwd=REPO)
        assert whole.returncode == 0, whole.stderr[-2000:]
        assert loaded(ref_dsn) == args.rows

        dsn = fresh_db(srv, "bench_backfill")
        prepare(dsn)
        made = work / "made.log"
        env = {**os.environ, "FAKEGEN_LOG": str(made)}
        with Timer() as first:
            proc = subprocess.Popen(
                command(dsn), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            while loaded(dsn) < args.rows * args.kill_at:
                if proc.poll() is not None:
                    raise SystemExit(f"the backfill ended before the kill: {proc.stderr.read()}")
                time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        at_kill = loaded(dsn)
        with Timer() as second:
            resumed = subprocess.run(
                command(dsn), capture_output=True, text=True, cwd=REPO, env=env
            )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        s = summary_of(resumed.stdout)

        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            stored = conn.execute(
                "SELECT count(*), count(DISTINCT id) FROM pgstac.items"
            ).fetchone()
            queued = conn.execute(
                "SELECT queue, count(*), count(DISTINCT id), "
                "count(*) FILTER (WHERE state <> 'done') FROM stactools_ingest.messages "
                "GROUP BY queue ORDER BY queue"
            ).fetchall()
    counts = collections.Counter(made.read_text().split())
    twice = sorted(i for i, n in counts.items() if n > 1)
    ok = (
        stored == (args.rows, args.rows)
        and queued == [("gen", args.rows, args.rows, 0), ("load", args.rows + 1, args.rows + 1, 0)]
        and set(counts) == set(ids)
        and len(twice) <= args.workers
        and s["failed"] == 0
    )
    total = first.seconds + second.seconds

    def row(name: str, items: int, seconds: float, twice: object) -> tuple:
        return (name, items, f"{seconds:.1f}", f"{items / seconds:,.0f}", twice)

    print_table(
        [
            row("uninterrupted (reference)", args.rows, ref.seconds, "-"),
            row("killed at", at_kill, first.seconds, "-"),
            row("resumed", args.rows - at_kill, second.seconds, len(twice)),
            row("killed + resumed", args.rows, total, len(twice)),
        ],
        ("run", "items", "seconds", "items/s", "made twice"),
    )
    verdict = "pass" if ok else "FAIL"
    print(f"stored {stored[0]} items ({stored[1]} distinct); queues {queued}; checks {verdict}")
    print_json(
        {
            "rows": args.rows,
            "reference_seconds": round(ref.seconds, 1),
            "killed_at_items": at_kill,
            "killed_plus_resumed_seconds": round(total, 1),
            "kill_cost_ratio": round(total / ref.seconds, 3),
            "made_twice": len(twice),
            "checks_pass": ok,
        }
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
