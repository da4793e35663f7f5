"""ItemLoad throughput against pypgstac's own Loader, on the same items, in the same run.

    uv run python benchmarks/load.py [--items 20000] [--profile]

Reference: ``Loader.load_items(items, insert_mode=upsert)`` given all items in one call. Ours:
``item_load.handler.handler`` fed SQS events of 1000 SNS-wrapped records, as AWS delivers them:
into an empty collection, again over the existing items (re-ingest), and with 1% invalid items.
Prints a table and a final JSON line with the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random

import psycopg
from _common import Timer, fresh_db, print_json, print_table, server
from factories import (
    SITE_RULE,
    LambdaContext,
    collection,
    item,
    sns_envelope,
    sqs_event,
    sqs_record,
)
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

COLL = "bench"
BATCH = 1000


def make_items(n: int) -> list[dict]:
    """Realistic items: 12 assets, ~2 KB each, spread over two years."""
    rng = random.Random(42)
    out = []
    for i in range(n):
        doc = item(
            f"item-{i:07d}",
            COLL,
            f"20{20 + i % 2}-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z",
            n_assets=12,
            x=rng.uniform(-170, 169),
        )
        doc["properties"].update({"eo:cloud_cover": rng.uniform(0, 100), "gsd": 10})
        out.append(doc)
    return out


def poison(items: list[dict], rate: float) -> tuple[list[dict], int]:
    """Replace ``rate`` of the items with the invalid kinds users send."""
    rng = random.Random(7)
    items = copy.deepcopy(items)
    bad = 0
    for i in range(0, len(items), int(1 / rate)):
        kind = bad % 5
        doc = (
            items[i + rng.randrange(int(1 / rate))] if i + int(1 / rate) <= len(items) else items[i]
        )
        if kind == 0:
            doc["collection"] = "no-such-collection"
        elif kind == 1:
            doc["properties"].pop("datetime")
        elif kind == 2:
            doc["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}
        elif kind == 3:
            doc["properties"]["datetime"] = "2020-06-01T00:00:00+20:00"  # PostgreSQL refuses it
        else:
            doc["properties"]["note"] = "nul\u0000"
        bad += 1
    return items, bad


def rejected_by_postgres(items: list[dict], every: int) -> tuple[list[dict], int]:
    """Rename one item in ``every`` so only a database trigger rejects it.

    Nothing before the COPY can see this, so it measures the bisection that isolates such rows.
    """
    items = copy.deepcopy(items)
    picked = items[every // 2 :: every]
    for doc in picked:
        doc["id"] = "reject-" + doc["id"]
    return items, len(picked)


def events_for(items: list[dict]) -> list[dict]:
    """SQS events of up to 1000 SNS-wrapped records."""
    records = [sqs_record(sns_envelope(doc)) for doc in items]
    return [sqs_event(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]


def prepare(dsn: str) -> None:
    with PgstacDB(dsn=dsn) as db:
        Loader(db).load_collections(iter([collection(COLL)]), Methods.upsert)


def point_libpq_at(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    os.environ.update(
        PGHOST=info["host"],
        PGPORT=str(info["port"]),
        PGUSER=info["user"],
        PGDATABASE=info["dbname"],
    )


def run_handler(events: list[dict]) -> tuple[float, int]:
    from item_load import handler

    failed = 0
    with Timer() as t:
        for event in events:
            failed += len(handler.handler(event, LambdaContext())["batchItemFailures"])
    return t.seconds, failed


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="pyinstrument the clean run")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    items = make_items(args.items)
    size = sum(len(json.dumps(i)) for i in items[:100]) / 100
    print(f"{len(items)} items, ~{size:,.0f} bytes each, batches of {BATCH}\n")
    events = events_for(items)
    bad_items, n_bad = poison(items, 0.01)
    bad_events = events_for(bad_items)

    with server() as srv:
        # Reference: pypgstac's Loader, all items in one call.
        ref_dsn = fresh_db(srv, "bench_reference")
        prepare(ref_dsn)
        warm = fresh_db(srv, "bench_warmup")  # first loads into a new server run slower
        prepare(warm)
        with PgstacDB(dsn=warm) as db:
            Loader(db).load_items(iter(copy.deepcopy(items[:BATCH])), insert_mode=Methods.upsert)
        ref_dsn = fresh_db(srv, "bench_reference")
        prepare(ref_dsn)
        ref_items = copy.deepcopy(items)  # the Loader mutates what it is given
        with PgstacDB(dsn=ref_dsn) as db, Timer() as ref:
            Loader(db).load_items(iter(ref_items), insert_mode=Methods.upsert)
        assert count(ref_dsn) == len(items)
        chunks = [copy.deepcopy(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]
        with PgstacDB(dsn=ref_dsn) as db, Timer() as ref_chunked:
            loader = Loader(db)
            for chunk in chunks:
                loader.load_items(iter(chunk), insert_mode=Methods.upsert)

        # Ours: the Lambda handler, end to end from SQS events.
        dsn = fresh_db(srv, "bench_handler")
        prepare(dsn)
        point_libpq_at(dsn)
        from item_load import handler

        handler.connections.discard()
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        clean_s, clean_failed = run_handler(events)
        if args.profile:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        assert clean_failed == 0 and count(dsn) == len(items)
        reingest_s, reingest_failed = run_handler(events)
        assert reingest_failed == 0 and count(dsn) == len(items)

        dsn_bad = fresh_db(srv, "bench_poisoned")
        prepare(dsn_bad)
        point_libpq_at(dsn_bad)
        handler.connections.discard()
        poisoned_s, poisoned_failed = run_handler(bad_events)
        assert poisoned_failed == n_bad, (poisoned_failed, n_bad)
        assert count(dsn_bad) == len(items) - n_bad

        rejected_items, n_rejected = rejected_by_postgres(items, 1000)
        dsn_rej = fresh_db(srv, "bench_rejected")
        prepare(dsn_rej)
        with psycopg.connect(dsn_rej, autocommit=True) as conn:
            conn.execute("SET search_path = pgstac, public")
            conn.execute(SITE_RULE)
        point_libpq_at(dsn_rej)
        handler.connections.discard()
        rejected_s, rejected_failed = run_handler(events_for(rejected_items))
        assert rejected_failed == n_rejected and count(dsn_rej) == len(items) - n_rejected
        handler.connections.discard()

    n = len(items)
    ref_rate = n / ref.seconds
    rows = [
        (
            "pypgstac Loader, one call (reference)",
            n,
            f"{ref.seconds:.2f}",
            f"{ref_rate:,.0f}",
            "1.00",
        ),
        (
            "pypgstac Loader, 1000 per call (upsert over existing)",
            n,
            f"{ref_chunked.seconds:.2f}",
            f"{n / ref_chunked.seconds:,.0f}",
            f"{(n / ref_chunked.seconds) / ref_rate:.2f}",
        ),
        (
            "ItemLoad handler, clean batches",
            n,
            f"{clean_s:.2f}",
            f"{n / clean_s:,.0f}",
            f"{(n / clean_s) / ref_rate:.2f}",
        ),
        (
            "ItemLoad handler, re-ingest",
            n,
            f"{reingest_s:.2f}",
            f"{n / reingest_s:,.0f}",
            f"{(n / reingest_s) / ref_rate:.2f}",
        ),
        (
            f"ItemLoad handler, 1% invalid ({n_bad} bad)",
            n,
            f"{poisoned_s:.2f}",
            f"{n / poisoned_s:,.0f}",
            f"{(n / poisoned_s) / ref_rate:.2f}",
        ),
        (
            f"ItemLoad handler, {n_rejected} rows only PostgreSQL rejects (bisection)",
            n,
            f"{rejected_s:.2f}",
            f"{n / rejected_s:,.0f}",
            f"{(n / rejected_s) / ref_rate:.2f}",
        ),
    ]
    print_table(rows, ("run", "items", "seconds", "items/s", "vs reference"))
    print_json(
        {
            "items": n,
            "reference_items_per_s": round(ref_rate),
            "clean_ratio": round((n / clean_s) / ref_rate, 3),
            "reingest_ratio": round((n / reingest_s) / ref_rate, 3),
            "poisoned_vs_clean_ratio": round(clean_s / poisoned_s, 3),
            "db_rejected_vs_clean_ratio": round(clean_s / rejected_s, 3),
            "batch_1000_seconds": round(clean_s / len(events), 3),
            "reference_batch_1000_seconds": round(ref.seconds / len(events), 3),
        }
    )


if __name__ == "__main__":
    main()
