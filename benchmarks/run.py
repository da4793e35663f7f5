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

``run``'s wall time includes the CLI start-up. Prebuilt items load straight from the input
once their collection is loaded; before that (the collection is the file's first line) they go
through the durable local queue (a table in the target database). To say where the wall time
goes, the same run is also made in-process, in another database, with the wall time inside its
main calls summed (``Stopwatches``). Checks that every item landed and nothing failed. Prints a
table and a final JSON line.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from _common import REPO, Timer, fresh_db, print_json, server
from factories import collection
from geotiffs import glad_collection_request, glad_item_request, loc_name, write_tile
from load import COLL, count, make_items, prepare
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from item_gen.models import parse_request
from item_gen.runner import run_once
from item_gen.settings import GenSettings
from item_load.core import BatchLoader
from stactools_ingest import pipeline as pipeline_module
from stactools_ingest.inputs import read_inputs
from stactools_ingest.pipeline import LocalPipeline
from stactools_ingest.queue import LocalQueues

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


class Stopwatches:
    """Wall time spent inside some functions, patched in place for one in-process run.

    Calls made by the load worker's thread are timed too, so pieces may overlap the reading
    thread's: the sums say where time goes, not a sequence.
    """

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets = targets
        self.seconds = dict.fromkeys(targets, 0.0)
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> Stopwatches:
        for label, (owner, name) in self.targets.items():
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._timed(label, original))
        return self

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        return timed

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


PIECES = (
    ("  read + parse NDJSON (a pass of its own)", "read_s"),
    ("  classify inputs", "classify_s"),
    ("  content ids (sha256 of each line)", "ids_s"),
    ("  claim loaded items as done (queue table)", "claim_s"),
    ("  BatchLoader.load (validate, COPY, upsert, newest wins)", "load_s"),
    ("  queue: send", "send_s"),
    ("  queue: lease (load worker)", "receive_s"),
    ("  queue: ack (load worker)", "ack_s"),
)


def phase_breakdown(path: Path, dsn: str) -> dict[str, float]:
    """``run``'s work in-process (``LocalPipeline.run``, no CLI start-up), piece by piece.

    Prebuilt items load straight from the input while no collection is pending (claimed as
    done in the queue table, then ``BatchLoader.load``); the rest goes through the queue (send,
    lease, ack) to the load worker. Reading and parsing the file is timed in a pass of its own.
    As ``run`` does, the next records are read while a load waits on the database
    (``read_ahead``): what is done then counts in both the waiting piece and its own.
    """
    with Timer() as read:
        for _ in read_inputs([str(path)]):
            pass
    watches = Stopwatches(
        {
            "classify": (pipeline_module, "classify"),
            "ids": (pipeline_module, "record_id"),
            "claim": (LocalQueues, "claim_done"),
            "load": (BatchLoader, "load"),
            "send": (LocalQueues, "send_many"),
            "receive": (LocalQueues, "receive"),
            "ack": (LocalQueues, "ack"),
        }
    )
    with watches, Timer() as wall:
        pipeline = LocalPipeline(dsn, gen_workers=0)
        summary = pipeline.run(records=read_inputs([str(path)]), read_ahead=True)
    assert summary.failed == 0 and summary.items_loaded == count(dsn), summary
    return {"read_s": read.seconds, "inproc_wall_s": wall.seconds} | {
        f"{k}_s": v for k, v in watches.seconds.items()
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
        del items, ref_items  # the CLI's process does not hold them: neither should the timing
        gc.collect()
        print(f"reference: {n / ref.seconds:,.0f} items/s", file=sys.stderr)

        # Where `run`'s time goes, measured in-process in another database.
        breakdown = phase_breakdown(path, fresh_db(srv, "bench_run_phases"))

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
    inproc = load["inproc_wall_s"]
    cli_enqueue = load_wall - startup - load_proc

    def of_wall(x: float) -> str:
        return f"{100 * x / load_wall:.0f}% of run wall"

    def of_inproc(x: float) -> str:
        return f"{100 * x / inproc:.0f}% of in-process wall"

    rows = [
        ("generation: one-shot uvx per request (reference, est.)", nr, oneshot_total, ""),
        ("generation: `run` wall (CLI start, enqueue, process)", nr, gen_wall, ""),
        ("generation: `run` processing phase (summary seconds)", nr, gen_proc, ""),
        ("loading: pypgstac Loader, one call (reference)", ni, load["ref_s"], ""),
        ("loading: `run` wall (CLI start, enqueue, process)", ni, load_wall, ""),
        ("  CLI start-up (`run --help`, best of 3)", ni, startup, of_wall(startup)),
        ("  enqueue phase (wall - start-up - processing)", ni, cli_enqueue, of_wall(cli_enqueue)),
        ("  processing phase (summary seconds)", ni, load_proc, of_wall(load_proc)),
        ("loading: `run` in-process (LocalPipeline.run)", ni, inproc, ""),
        *((label, ni, load[key], of_inproc(load[key])) for label, key in PIECES),
        ("overall: both `run`s", nr + ni, gen_wall + load_wall, ""),
    ]
    print()
    print(
        f"one-shot reference: mean of {len(gen['once'])} `uvx` requests after a warm-up, "
        f"{once_s:.2f} s each, times {nr}; `run --workers {args.workers}`; "
        f"loading input {load['mb']:.1f} MB; the in-process pieces are wall time inside those "
        "calls during one in-process run into another database (the load worker's thread "
        "overlaps the reading thread)"
    )
    table = [
        (name, n, f"{s:.2f}", "" if name.startswith(" ") else f"{n / s:,.1f}", note)
        for name, n, s, note in rows
    ]
    headers = ("measure", "items", "seconds", "items/s", "note")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table, strict=True)]
    line = "  ".join(f"{{:{'<' if i in (0, 4) else '>'}{w}}}" for i, w in enumerate(widths))
    for row in (headers, *table):
        print(line.format(*row).rstrip())
    result = {
        "requests": nr,
        "gen_wall_s": round(gen_wall, 2),
        "gen_processing_s": gen_proc,
        "gen_requests_per_s": round(gen_rate, 2),
        "gen_requests_per_s_processing": round(nr / gen_proc, 2),
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
        "load_enqueue_s": round(cli_enqueue, 2),
        "inproc_wall_s": round(inproc, 2),
        **{
            f"inproc_{k}": round(load[k], 2)
            for k in ("read_s", "classify_s", "ids_s", "claim_s", "load_s", "send_s")
        },
        "inproc_queue_worker_s": round(load["receive_s"] + load["ack_s"], 2),
        "overall_items_per_s": round(overall_rate, 1),
    }
    print_json(result)


if __name__ == "__main__":
    main()
