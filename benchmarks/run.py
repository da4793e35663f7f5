"""End to end: ``stactools-ingest run`` on generated and on prebuilt inputs, next to the references.

    uv run python benchmarks/run.py [--requests 300] [--items 20000] [--workers 2]

Generation: ``--requests`` tiny GLAD GLCLU2020 GeoTIFFs (8x8, distinct tiles and years) and an
NDJSON of one collection request plus one item request per tile, run through
``stactools-ingest run --json`` (a subprocess, as a user runs it) into a fresh database. Reference:
the one-shot path, one ``uvx … stac gladglclu2020 create-item`` process per request
(``item_gen.runner.run_once``), timed on a few of the same requests after an untimed warm-up and
extrapolated to all of them.

Loading: ``--items`` prebuilt items (``benchmarks/load.py``'s ``make_items``) and their collection
in one NDJSON, run through ``stactools-ingest run --json`` into a fresh database. Reference:
pypgstac's ``Loader.load_items(items, insert_mode=upsert)`` on the same items in one call, into
another fresh database on the same server, in the same run.

``run``'s wall time includes the CLI start-up and enqueuing every input into the durable local
queue (a table in the target database) before any processing; the summary's ``seconds`` covers
only the processing phase. The enqueue phase is also timed in-process on its own, so the table
says where the wall time goes. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from _common import REPO, Timer, fresh_db, print_json, print_table, server
from geotiffs import glad_collection_request, glad_item_request, loc_name, write_tile
from load import COLL, count, make_items, prepare
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from item_gen.models import parse_request
from item_gen.runner import run_once
from item_gen.settings import GenSettings
from stactools_ingest.inputs import classify, message_id, read_inputs
from stactools_ingest.pipeline import LocalPipeline

CLI = str(REPO / ".venv" / "bin" / "stactools-ingest")
YEARS = (2000, 2005, 2010, 2015, 2020)
TILES = [(lon, lat) for lat in range(80, -60, -10) for lon in range(-180, 180, 10)]
ONE_SHOT_SAMPLES = 5


def write_requests(root: Path, n: int) -> Path:
    """``n`` tiles spread over years and places, and an NDJSON of their requests."""
    if n > len(TILES) * len(YEARS):
        raise SystemExit(f"at most {len(TILES) * len(YEARS)} requests")
    lines = [glad_collection_request(request_id="collection")]
    for i in range(n):
        year = YEARS[i % len(YEARS)]
        lon, lat = TILES[i // len(YEARS)]
        tif = write_tile(root / str(year) / f"{loc_name(lon, lat)}.tif", lon, lat, size=8)
        lines.append(glad_item_request(tif, root, request_id=f"{year}-{loc_name(lon, lat)}"))
    path = root / "requests.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_items(path: Path, items: list[dict], collection: dict) -> Path:
    with path.open("wb") as f:
        f.write(orjson.dumps(collection) + b"\n")
        for doc in items:
            f.write(orjson.dumps(doc) + b"\n")
    return path


def run_cli(path: Path, dsn: str, workers: int) -> tuple[float, dict]:
    """``stactools-ingest run FILE --json``: wall seconds and the summary."""
    cmd = [CLI, "run", str(path), "--dsn", dsn, "--json", "--workers", str(workers), "-q"]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"`{' '.join(cmd)}` printed no summary (exit {proc.returncode})")
    return t.seconds, json.loads(lines[-1])


def cli_startup_seconds() -> float:
    """Interpreter start and imports of the CLI: the best of three ``--help``."""
    times = []
    for _ in range(3):
        with Timer() as t:
            subprocess.run([CLI, "run", "--help"], capture_output=True, check=True)
        times.append(t.seconds)
    return min(times)


def enqueue_breakdown(path: Path, dsn: str) -> dict[str, float]:
    """The enqueue phase of ``run`` in-process: read+parse, classify+ids, then the INSERTs."""
    with Timer() as read:
        records = list(read_inputs([str(path)]))
    with Timer() as ids:
        for record in records:
            classify(record)
            message_id(record.obj)
    with Timer() as total:
        out = LocalPipeline(dsn).enqueue(records)
    assert not out.problems and out.new == len(records), (out.problems[:3], out.new)
    return {
        "read_s": read.seconds,
        "classify_ids_s": ids.seconds,
        "enqueue_s": total.seconds,  # classify + ids + INSERTs
        "insert_s": max(total.seconds - ids.seconds, 0.0),
    }


def generation(srv, n: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-run-gen-") as tmp:
        root = Path(tmp)
        path = write_requests(root, n)
        print(f"generation: 1 collection + {n} item requests in {path}", file=sys.stderr)
        item_reqs = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]
        settings = GenSettings(request_timeout_seconds=300)
        sample = [parse_request(r) for r in item_reqs[: ONE_SHOT_SAMPLES + 1]]
        run_once(sample[0], settings)  # untimed: uv's cache holds the environment afterwards
        once = []
        for request in sample[1:]:
            with Timer() as t:
                run_once(request, settings)
            once.append(t.seconds)
        print(f"one-shot: {statistics.mean(once):.2f} s/request", file=sys.stderr)

        dsn = fresh_db(srv, "bench_run_gen")
        wall, summary = run_cli(path, dsn, workers)
        landed = count(dsn)
    assert summary["failed"] == 0, summary
    assert landed == n and summary["items_loaded"] == n, (landed, summary)
    return {"once": once, "wall": wall, "summary": summary}


def loading(srv, n: int, workers: int) -> dict:
    items = make_items(n)
    from factories import collection

    with tempfile.TemporaryDirectory(prefix="bench-run-load-") as tmp:
        path = write_items(Path(tmp) / "items.ndjson", items, collection(COLL))
        mb = path.stat().st_size / 1e6
        print(f"loading: {n} items + 1 collection, {mb:.1f} MB NDJSON", file=sys.stderr)

        # Reference: pypgstac's Loader, all items in one call (after a warm-up load, as load.py).
        warm = fresh_db(srv, "bench_run_warmup")
        prepare(warm)
        with PgstacDB(dsn=warm) as db:
            Loader(db).load_items(iter(copy.deepcopy(items[:1000])), insert_mode=Methods.upsert)
        ref_dsn = fresh_db(srv, "bench_run_reference")
        prepare(ref_dsn)
        ref_items = copy.deepcopy(items)  # the Loader mutates what it is given
        with PgstacDB(dsn=ref_dsn) as db, Timer() as ref:
            Loader(db).load_items(iter(ref_items), insert_mode=Methods.upsert)
        assert count(ref_dsn) == n
        print(f"reference: {n / ref.seconds:,.0f} items/s", file=sys.stderr)

        # Where the enqueue phase goes, measured on its own in another database.
        breakdown = enqueue_breakdown(path, fresh_db(srv, "bench_run_enqueue"))

        dsn = fresh_db(srv, "bench_run_load")
        wall, summary = run_cli(path, dsn, workers)
        landed = count(dsn)
    assert summary["failed"] == 0, summary
    assert landed == n and summary["items_loaded"] == n, (landed, summary)
    return {"ref_s": ref.seconds, "wall": wall, "summary": summary, **breakdown, "mb": mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="GLAD item requests")
    parser.add_argument("--items", type=int, default=20_000, help="prebuilt items")
    parser.add_argument("--workers", type=int, default=2, help="`run --workers`")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

    startup = cli_startup_seconds()
    with server() as srv:
        gen = generation(srv, args.requests, args.workers)
        load = loading(srv, args.items, args.workers)

    nr, ni = args.requests, args.items
    once_s = statistics.mean(gen["once"])
    gen_wall, gen_proc = gen["wall"], gen["summary"]["seconds"]
    oneshot_total = once_s * nr  # one process at a time, as the one-shot path runs
    gen_rate = nr / gen_wall
    load_wall, load_proc = load["wall"], load["summary"]["seconds"]
    ref_rate = ni / load["ref_s"]
    load_rate = ni / load_wall
    overall_rate = (nr + ni) / (gen_wall + load_wall)
    load_other = load_wall - load_proc - load["enqueue_s"] - load["read_s"] - startup

    rows = [
        ("generation: one-shot uvx per request (reference)", nr, once_s * nr, nr / oneshot_total),
        ("generation: `run` wall (CLI start, enqueue, process)", nr, gen_wall, gen_rate),
        ("generation: `run` processing phase (summary seconds)", nr, gen_proc, nr / gen_proc),
        ("loading: pypgstac Loader, one call (reference)", ni, load["ref_s"], ref_rate),
        ("loading: `run` wall (CLI start, enqueue, process)", ni, load_wall, load_rate),
        ("loading: `run` processing phase (summary seconds)", ni, load_proc, ni / load_proc),
        ("  of the wall: CLI start-up (`run --help`)", ni, startup, None),
        ("  of the wall: read + parse NDJSON (in-process)", ni, load["read_s"], None),
        ("  of the wall: classify + content ids (in-process)", ni, load["classify_ids_s"], None),
        ("  of the wall: INSERT into the local queue (in-process)", ni, load["insert_s"], None),
        ("  of the wall: unaccounted (wall - the above - processing)", ni, load_other, None),
        ("overall: both `run`s, items per wall second", nr + ni, gen_wall + load_wall, None),
    ]
    print()
    print(
        f"one-shot reference: mean of {len(gen['once'])} `uvx` requests after a warm-up, "
        f"{once_s:.2f} s each, extrapolated to {nr}; `run --workers {args.workers}`; "
        f"loading input {load['mb']:.1f} MB"
    )
    print_table(
        [
            (
                name,
                n,
                f"{s:.2f}",
                f"{r:,.1f}" if r is not None else (f"{n / s:,.1f}" if "overall" in name else ""),
            )
            for name, n, s, r in rows
        ],
        ("measure", "items", "seconds", "items/s"),
    )
    result = {
        "requests": nr,
        "gen_wall_s": round(gen_wall, 2),
        "gen_processing_s": gen_proc,
        "gen_requests_per_s": round(gen_rate, 2),
        "gen_items_per_s_processing": round(nr / gen_proc, 2),
        "oneshot_s_per_request": round(once_s, 3),
        "oneshot_est_s": round(oneshot_total, 1),
        "gen_vs_oneshot": round(oneshot_total / gen_wall, 2),
        "items": ni,
        "load_wall_s": round(load_wall, 2),
        "load_processing_s": load_proc,
        "load_items_per_s": round(load_rate),
        "load_items_per_s_processing": round(ni / load_proc),
        "loader_items_per_s": round(ref_rate),
        "load_vs_loader": round(load_rate / ref_rate, 3),
        "load_processing_vs_loader": round((ni / load_proc) / ref_rate, 3),
        "cli_startup_s": round(startup, 2),
        "enqueue_read_s": round(load["read_s"], 2),
        "enqueue_s": round(load["enqueue_s"], 2),
        "enqueue_insert_s": round(load["insert_s"], 2),
        "overall_items_per_s": round(overall_rate, 1),
    }
    print_json(result)


if __name__ == "__main__":
    main()
