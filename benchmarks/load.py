"""ItemLoad throughput against pypgstac's own Loader, on the same items, in the same run.

    uv run python benchmarks/load.py [--items 20000] [--repeat 5] [--profile]

Reference: ``Loader.load_items(items, insert_mode=upsert)`` given all items in one call. Ours:
``item_load.handler.handler`` fed SQS events of 1000 SNS-wrapped records, as AWS delivers them:
into an empty collection (with the ledger, the default, and without: ``ledger_cost`` is the
ledger's share, to be under 0.10), again over the existing items (re-ingest), into an empty
collection with the server's TOAST compression (pglz, as the reference stores rows) instead of the
handler's default lz4, with 1% invalid items, and with 0.1% that only a database trigger
rejects (bisection); then both again into a collection partitioned by month, where every batch
spans 12 partitions (the handler's row is compared with the Loader's on that collection). Every
measurement gets a fresh database; each round measures everything once, and the medians over
rounds are reported (single runs on this 2-core machine vary by ±15%). Prints a table and a
final JSON line with the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics

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
            doc["properties"]["datetime"] = "2020-W23-1T00:00:00Z"  # ISO week date, not RFC 3339
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


def prepare(dsn: str, partition_trunc: str | None = None) -> None:
    with PgstacDB(dsn=dsn) as db:
        Loader(db).load_collections(iter([collection(COLL)]), Methods.upsert)
    if partition_trunc:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET search_path = pgstac, public")
            conn.execute("UPDATE collections SET partition_trunc = %s", (partition_trunc,))


def point_libpq_at(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    os.environ.update(
        PGHOST=info["host"],
        PGPORT=str(info["port"]),
        PGUSER=info["user"],
        PGDATABASE=info["dbname"],
        PGPASSWORD=info.get("password", ""),  # the embedded server requires one
    )


def run_handler(events: list[dict]) -> tuple[float, int]:
    from item_load import handler

    failed = 0
    with Timer() as t:
        for event in events:
            failed += len(handler.handler(event, LambdaContext())["batchItemFailures"])
    handler.metrics.clear_metrics()  # with POWERTOOLS_METRICS_DISABLED they pile up unflushed
    return t.seconds, failed


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]


def reference_load(srv, name: str, items: list[dict], partition_trunc: str | None = None) -> float:
    """Seconds for pypgstac's Loader to upsert ``items`` in one call into a fresh database."""
    dsn = fresh_db(srv, name)
    prepare(dsn, partition_trunc)
    fresh = copy.deepcopy(items)  # the Loader mutates what it is given
    with PgstacDB(dsn=dsn) as db, Timer() as t:
        Loader(db).load_items(iter(fresh), insert_mode=Methods.upsert)
    assert count(dsn) == len(items)
    return t.seconds


def handler_load(
    srv,
    name: str,
    events: list[dict],
    setup: str | None = None,
    partition_trunc: str | None = None,
) -> tuple[str, float, int]:
    """Seconds for the ItemLoad handler to take ``events`` into a fresh database."""
    dsn = fresh_db(srv, name)
    prepare(dsn, partition_trunc)
    if setup:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET search_path = pgstac, public")
            conn.execute(setup)
    point_libpq_at(dsn)
    from item_load import handler

    handler.connections.discard()
    seconds, failed = run_handler(events)
    return dsn, seconds, failed


def measure(srv, items, events, bad_events, n_bad, rejected_events, n_rejected) -> dict:
    """One round of every measurement, each into its own fresh database."""
    n = len(items)
    out = {"reference": reference_load(srv, "bench_reference", items)}
    dsn = fresh_db(srv, "bench_chunked")
    prepare(dsn)
    chunks = [copy.deepcopy(items[i : i + BATCH]) for i in range(0, n, BATCH)]
    with PgstacDB(dsn=dsn) as db, Timer() as t:
        loader = Loader(db)
        for chunk in chunks:
            loader.load_items(iter(chunk), insert_mode=Methods.upsert)
    out["reference_chunked"] = t.seconds

    from item_load import handler

    handler.processor.record_ledger = False
    try:
        dsn, out["clean_no_ledger"], failed = handler_load(srv, "bench_no_ledger", events)
    finally:
        handler.processor.record_ledger = handler.settings.ledger
    assert failed == 0 and count(dsn) == n
    dsn, out["clean"], failed = handler_load(srv, "bench_handler", events)
    assert failed == 0 and count(dsn) == n
    with psycopg.connect(dsn) as conn:  # the ledger holds one loaded row per record
        assert (
            conn.execute(
                "SELECT count(*) FROM stactools_ingest.ledger WHERE state = 'loaded'"
            ).fetchone()[0]
            == n
        )
    out["reingest"], failed = run_handler(events)
    assert failed == 0 and count(dsn) == n
    # As the reference stores rows: the server's default TOAST compression (pglz), not lz4.
    handler.processor.toast_compression = "server"
    try:
        dsn, out["clean_server_compression"], failed = handler_load(srv, "bench_pglz", events)
    finally:
        handler.processor.toast_compression = handler.settings.toast_compression
    assert failed == 0 and count(dsn) == n
    dsn, out["poisoned"], failed = handler_load(srv, "bench_poisoned", bad_events)
    assert failed == n_bad and count(dsn) == n - n_bad, (failed, n_bad)
    dsn, out["rejected"], failed = handler_load(
        srv, "bench_rejected", rejected_events, setup=SITE_RULE
    )
    assert failed == n_rejected and count(dsn) == n - n_rejected
    # The same items in a collection partitioned by month: every batch spans 12 partitions.
    out["monthly_reference"] = reference_load(srv, "bench_monthly_reference", items, "month")
    dsn, out["monthly"], failed = handler_load(
        srv, "bench_monthly", events, partition_trunc="month"
    )
    assert failed == 0 and count(dsn) == n
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--profile", action="store_true", help="pyinstrument one clean run")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    items = make_items(args.items)
    size = sum(len(json.dumps(i)) for i in items[:100]) / 100
    print(
        f"{len(items)} items, ~{size:,.0f} bytes each, batches of {BATCH}, {args.repeat} rounds\n"
    )
    events = events_for(items)
    bad_items, n_bad = poison(items, 0.01)
    bad_events = events_for(bad_items)
    rejected_items, n_rejected = rejected_by_postgres(items, 1000)
    rejected_events = events_for(rejected_items)

    with server() as srv:
        reference_load(srv, "bench_warmup", items[:BATCH])  # a new server's first load is slow
        if args.profile:
            from pyinstrument import Profiler

            with Profiler() as profiler:
                handler_load(srv, "bench_profile", events)
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        rounds = [
            measure(srv, items, events, bad_events, n_bad, rejected_events, n_rejected)
            for _ in range(args.repeat)
        ]
        from item_load import handler

        handler.connections.discard()

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    n = len(items)
    ref_rate = n / med["reference"]
    labels = {
        "reference": "pypgstac Loader, one call (reference)",
        "reference_chunked": "pypgstac Loader, 1000 per call",
        "clean": "ItemLoad handler, clean batches (ledger on, the default)",
        "clean_no_ledger": "ItemLoad handler, clean batches, LEDGER=false",
        "reingest": "ItemLoad handler, re-ingest (same items again)",
        "clean_server_compression": "ItemLoad handler, clean, TOAST_COMPRESSION=server",
        "poisoned": f"ItemLoad handler, 1% invalid ({n_bad} bad)",
        "rejected": f"ItemLoad handler, {n_rejected} rows only PostgreSQL rejects",
        "monthly_reference": "pypgstac Loader, one call, 12 monthly partitions",
        "monthly": "ItemLoad handler, 12 monthly partitions",
    }
    rows = [
        (
            label,
            n,
            f"{med[key]:.2f}",
            " ".join(f"{r[key]:.2f}" for r in rounds),
            f"{n / med[key]:,.0f}",
            f"{med['monthly_reference' if key == 'monthly' else 'reference'] / med[key]:.2f}",
        )
        for key, label in labels.items()
    ]
    print_table(rows, ("run", "items", "median s", "rounds s", "items/s", "vs reference"))
    print_json(
        {
            "items": n,
            "rounds": args.repeat,
            "reference_items_per_s": round(ref_rate),
            "clean_ratio": round(med["reference"] / med["clean"], 3),
            "ledger_cost": round(med["clean"] / med["clean_no_ledger"] - 1, 3),
            "reingest_ratio": round(med["reference"] / med["reingest"], 3),
            "clean_server_compression_ratio": round(
                med["reference"] / med["clean_server_compression"], 3
            ),
            "poisoned_vs_clean_ratio": round(med["clean"] / med["poisoned"], 3),
            "db_rejected_vs_clean_ratio": round(med["clean"] / med["rejected"], 3),
            "monthly_ratio": round(med["monthly_reference"] / med["monthly"], 3),
            "batch_1000_seconds": round(med["clean"] / len(events), 3),
            "reference_batch_1000_seconds": round(med["reference"] / len(events), 3),
        }
    )


if __name__ == "__main__":
    main()
