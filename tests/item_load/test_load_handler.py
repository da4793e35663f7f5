"""ItemLoad handler against a real pgstac: every message form, isolation, idempotency, outages."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from factories import (
    COLL,
    SITE_RULE,
    collection,
    failed_ids,
    item,
    s3_event,
    sns_envelope,
    sqs_record,
)
from hrefserver import HrefHandler, serving
from moto import mock_aws

from item_load import handler as load_handler


def test_sns_wrapped_and_raw_items_land(with_collection, load):
    # GIVEN one SNS-wrapped item and one raw-delivered item
    records = [
        sqs_record(sns_envelope(item("a"))),
        sqs_record(json.dumps(item("b"))),
    ]
    # WHEN the batch is handled
    response = load(records)
    # THEN both land and nothing is reported failed
    assert response == {"batchItemFailures": []}
    assert with_collection.item_ids(COLL) == ["a", "b"]


def test_collection_and_its_items_in_one_batch(pgstac, load):
    # GIVEN a batch where items come before their collection
    records = [sqs_record(sns_envelope(item(f"i{n}", "fresh"))) for n in range(3)]
    records.append(sqs_record(sns_envelope(collection("fresh"))))
    # WHEN loaded, collections are upserted first
    assert failed_ids(load(records)) == set()
    assert pgstac.item_ids("fresh") == ["i0", "i1", "i2"]


def test_feature_collection_message(with_collection, load):
    fc = {"type": "FeatureCollection", "features": [item("f1"), item("f2")]}
    assert failed_ids(load([sqs_record(sns_envelope(fc))])) == set()
    assert with_collection.item_ids(COLL) == ["f1", "f2"]


@pytest.fixture
def file_hrefs_allowed(monkeypatch):
    """The handler as `stactools-ingest run` configures reading: file hrefs allowed."""
    from item_load.fetch import HrefFetcher, HrefPolicy

    policy = HrefPolicy(schemes=frozenset({"s3", "https", "file"}))
    monkeypatch.setattr(load_handler, "fetcher", HrefFetcher(policy))


def test_file_href_pointer_to_ndjson(with_collection, load, tmp_path, file_hrefs_allowed):
    path = tmp_path / "items.ndjson"
    path.write_text("\n".join(json.dumps(item(f"n{i}")) for i in range(3)) + "\n")
    assert failed_ids(load([sqs_record(sns_envelope({"href": path.as_uri()}))])) == set()
    assert with_collection.item_ids(COLL) == ["n0", "n1", "n2"]


def test_missing_href_fails_alone_with_reason(
    with_collection, load, tmp_path, caplog, file_hrefs_allowed
):
    bad = sqs_record(sns_envelope({"href": (tmp_path / "nope.json").as_uri()}))
    good = sqs_record(sns_envelope(item("ok")))
    assert failed_ids(load([bad, good])) == {bad["messageId"]}
    assert with_collection.item_ids(COLL) == ["ok"]
    reasons = [
        r.reason for r in caplog.records if getattr(r, "message_id", None) == bad["messageId"]
    ]
    assert reasons == [f"{(tmp_path / 'nope.json').as_uri()}: no such file"]


def test_lambda_reads_no_local_file_and_leaks_nothing(with_collection, load, tmp_path, caplog):
    # GIVEN the Lambda's default policy, a pointer to a local file holding a valid item, a pointer
    # to the process environment (JSON-shaped secrets would leak their keys), and a good item
    path = tmp_path / "planted.json"
    path.write_text(json.dumps(item("planted")))
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"AWS_SECRET_ACCESS_KEY": "x", "DB_PASSWORD": "y"}))
    planted = sqs_record(sns_envelope({"href": path.as_uri()}))
    environ = sqs_record(sns_envelope({"href": "/proc/self/environ"}))
    leak = sqs_record(sns_envelope({"href": str(secrets)}))
    good = sqs_record(sns_envelope(item("ok")))
    # WHEN the batch is handled
    response = load([planted, environ, leak, good])
    # THEN the three pointers fail alone, nothing they point at lands, the good item does
    assert failed_ids(response) == {planted["messageId"], environ["messageId"], leak["messageId"]}
    assert with_collection.item_ids(COLL) == ["ok"]
    # AND each reason says the scheme is not allowed, without a word of the files' content
    reasons = {r.message_id: r.reason for r in caplog.records if hasattr(r, "message_id")}
    refused = "scheme 'file' is not allowed (HREF_SCHEMES=https,s3); nothing was read"
    assert reasons == {
        planted["messageId"]: f"{path.as_uri()}: {refused}",
        environ["messageId"]: f"/proc/self/environ: {refused}",
        leak["messageId"]: f"{secrets}: {refused}",
    }
    assert "AWS_SECRET" not in caplog.text and "DB_PASSWORD" not in caplog.text


def test_s3_href_and_s3_event_with_encoded_key(with_collection, load, aws_env, monkeypatch):
    from item_load.fetch import HrefFetcher, HrefPolicy

    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="stac-drop")
        s3.put_object(Bucket="stac-drop", Key="ptr/item.json", Body=json.dumps(item("ptr")))
        key = "new items/2020+x/item one.geojson"
        s3.put_object(Bucket="stac-drop", Key=key, Body=json.dumps(item("evt")))
        monkeypatch.setattr(load_handler, "fetcher", HrefFetcher(HrefPolicy()))
        records = [
            sqs_record(sns_envelope({"href": "s3://stac-drop/ptr/item.json"})),
            sqs_record(sns_envelope(s3_event("stac-drop", key))),
            sqs_record(sns_envelope({"Service": "Amazon S3", "Event": "s3:TestEvent"})),
        ]
        response = load(records)
    assert failed_ids(response) == set()
    assert with_collection.item_ids(COLL) == ["evt", "ptr"]


def test_hrefs_of_a_batch_are_read_concurrently(with_collection, load, monkeypatch, caplog):
    # GIVEN a server whose 4 documents are only served to 4 requests in flight at once
    # (a reader going one by one gets a 503 after 5 s for each), plus a refused href
    from item_load.fetch import HrefFetcher, HrefPolicy

    policy = HrefPolicy(schemes=frozenset({"s3", "https", "http"}), allow_private_hosts=True)
    monkeypatch.setattr(load_handler, "fetcher", HrefFetcher(policy))
    HrefHandler.barrier = threading.Barrier(4, timeout=5)
    with serving() as base:
        pointers = [
            sqs_record(sns_envelope({"href": f"{base}/barrier/c{n}.json"})) for n in range(4)
        ]
        refused = sqs_record(sns_envelope({"href": "/proc/self/environ"}))
        # WHEN the batch is handled
        response = load([*pointers, refused])
        HrefHandler.barrier.abort()
    # THEN all four land and only the refused record fails, with its own reason
    assert failed_ids(response) == {refused["messageId"]}
    assert with_collection.item_ids(COLL) == ["c0", "c1", "c2", "c3"]
    reasons = {r.message_id: r.reason for r in caplog.records if hasattr(r, "message_id")}
    assert reasons == {
        refused["messageId"]: "/proc/self/environ: scheme 'file' is not allowed "
        "(HREF_SCHEMES=http,https,s3); nothing was read"
    }


def test_s3_event_for_non_stac_object_fails_with_reason(with_collection, load):
    rec = sqs_record(sns_envelope(s3_event("b", "data/image.tif")))
    assert failed_ids(load([rec])) == {rec["messageId"]}


def test_1000_batch_with_10_bad_messages_loads_990(with_collection, load, caplog):
    # GIVEN 990 good items and 10 bad messages of every kind we know
    bad_bodies = {
        "unknown-collection": sns_envelope(item("u1", "no-such-collection")),
        "missing-collection": sns_envelope(item("m1", None)),
        "no-datetime": sns_envelope({**item("d1"), "properties": {"platform": "x"}}),
        "bad-datetime": sns_envelope(item("d2", dt="yesterday")),
        "unclosed-ring": sns_envelope(
            {
                **item("g1"),
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            }
        ),
        "garbage-geometry": sns_envelope(
            {**item("g2"), "geometry": {"type": "Polygon", "coordinates": "x"}}
        ),
        "malformed-json": "{not json",
        "malformed-sns-message": sns_envelope("{also not json"),
        "not-stac": sns_envelope({"hello": "world"}),
        "no-geometry": sns_envelope({**item("g3"), "geometry": None}),
    }
    records = [sqs_record(sns_envelope(item(f"good-{n:04d}", x=n % 170))) for n in range(990)]
    bad_records = {
        name: sqs_record(body, message_id=f"bad-{name}") for name, body in bad_bodies.items()
    }
    batch = records[:500] + list(bad_records.values()) + records[500:]
    assert len(batch) == 1000
    # WHEN the batch is handled
    response = load(batch)
    # THEN exactly the ten bad messages are reported, and the 990 good items landed
    assert failed_ids(response) == {r["messageId"] for r in bad_records.values()}
    assert with_collection.count(COLL) == 990
    # AND each failure is logged with its message id and a reason a person can act on
    reasons = {r.message_id: r.reason for r in caplog.records if hasattr(r, "message_id")}
    assert set(reasons) == {f"bad-{name}" for name in bad_bodies}
    assert "does not exist in pgstac" in reasons["bad-unknown-collection"]
    assert "must end where it starts" in reasons["bad-unclosed-ring"]
    assert "no datetime" in reasons["bad-no-datetime"]
    assert "not valid JSON" in reasons["bad-malformed-json"]


def _stats(db, collection: str):
    with db.connect() as conn:
        queued = conn.execute("SELECT count(*) FROM query_queue").fetchone()[0]
        dtrange = conn.execute(
            "SELECT s.dtrange FROM partition_stats s JOIN partitions_view v USING (partition) "
            "WHERE v.collection = %s",
            (collection,),
        ).fetchone()[0]
    return queued, dtrange


def test_copy_failure_in_a_group_isolates_the_bad_item(with_collection, load, caplog):
    # GIVEN a rule only PostgreSQL knows about (a site's own trigger on items)
    with with_collection.connect() as conn:
        conn.execute(SITE_RULE)
    records = [sqs_record(sns_envelope(item(f"ok{n}"))) for n in range(50)]
    bad = sqs_record(sns_envelope(item("reject-me")))
    # WHEN it is loaded in the middle of a group of good items
    response = load([*records[:25], bad, *records[25:]])
    # THEN the group is not given up: 50 land, the one is reported with PostgreSQL's reason
    assert failed_ids(response) == {bad["messageId"]}
    reasons = [
        r.reason for r in caplog.records if getattr(r, "message_id", None) == bad["messageId"]
    ]
    assert reasons and "site_rule" in reasons[0]
    assert with_collection.count(COLL) == 50
    # AND the partition stats deferred during bisection were brought up to date, not left queued
    queued, dtrange = _stats(with_collection, COLL)
    assert queued == 0
    assert dtrange is not None and dtrange.lower.year == 2020


def test_nul_character_is_rejected_before_copy(with_collection, load, caplog):
    broken = item("nul")
    broken["properties"]["note"] = "bad\u0000value"
    bad = sqs_record(sns_envelope(broken))
    assert failed_ids(load([bad, sqs_record(sns_envelope(item("fine")))])) == {bad["messageId"]}
    assert with_collection.item_ids(COLL) == ["fine"]
    assert any("NUL character" in getattr(r, "reason", "") for r in caplog.records)


def test_row_the_copy_itself_refuses_fails_alone(with_collection, load, caplog):
    # GIVEN a private value PostgreSQL's jsonb refuses (NUL), which only the COPY finds
    # (private is a column of its own, not part of the content checked before; a NUL in an id
    # is now refused before the COPY with the other control characters)
    bad = sqs_record(sns_envelope({**item("bad"), "private": {"note": "nul\u0000"}}))
    good = [sqs_record(sns_envelope(item(f"c{n}"))) for n in range(30)]
    # WHEN it is loaded among good items
    response = load([*good[:15], bad, *good[15:]])
    # THEN only its message fails, with PostgreSQL's reason, and the 30 others land once
    assert failed_ids(response) == {bad["messageId"]}
    reasons = [
        r.reason for r in caplog.records if getattr(r, "message_id", None) == bad["messageId"]
    ]
    assert reasons and "unsupported Unicode escape sequence" in reasons[0]
    assert with_collection.item_ids(COLL) == sorted(f"c{n}" for n in range(30))


def test_session_without_temp_tables_still_loads(with_collection, load):
    # GIVEN a loaded batch, then a session that lost its temporary tables, as when a pooler in
    # transaction mode hands the next transaction another backend
    assert failed_ids(load([sqs_record(sns_envelope(item("before")))])) == set()
    load_handler.connections.get().execute("DISCARD TEMP")
    # WHEN the next batch arrives on it
    response = load([sqs_record(sns_envelope(item("after")))])
    # THEN it loads like the first
    assert failed_ids(response) == set()
    assert with_collection.item_ids(COLL) == ["after", "before"]


def test_reingest_updates_private_and_content(with_collection, load):
    first = {**item("p1"), "private": {"owner": "a"}}
    second = {**item("p1"), "private": {"owner": "b"}}
    second["properties"] = {**second["properties"], "version": 2}
    assert failed_ids(load([sqs_record(sns_envelope(first))])) == set()
    assert failed_ids(load([sqs_record(sns_envelope(second))])) == set()
    with with_collection.connect() as conn:
        private, version = conn.execute(
            "SELECT private->>'owner', content->'properties'->>'version' FROM items"
        ).fetchone()
    assert (private, version) == ("b", "2")


def test_unknown_collection_created_when_enabled(pgstac, load, monkeypatch):
    monkeypatch.setattr(load_handler.processor, "create_collections_if_missing", True)
    response = load([sqs_record(sns_envelope(item("x", "auto-made")))])
    assert failed_ids(response) == set()
    assert pgstac.item_ids("auto-made") == ["x"]


def test_same_items_twice_leave_one_copy(with_collection, load):
    records = [sqs_record(sns_envelope(item(f"r{n}"))) for n in range(20)]
    assert failed_ids(load(records)) == set()
    assert failed_ids(load(records)) == set()
    assert with_collection.count(COLL) == 20


def test_datetime_moved_to_another_partition_leaves_one_copy(pgstac, load):
    assert failed_ids(load([sqs_record(sns_envelope(collection("yearly")))])) == set()
    with pgstac.connect() as conn:
        conn.execute("UPDATE collections SET partition_trunc = 'year' WHERE id = 'yearly'")
    assert (
        failed_ids(
            load([sqs_record(sns_envelope(item("mover", "yearly", "2019-03-01T00:00:00Z")))])
        )
        == set()
    )
    assert (
        failed_ids(
            load([sqs_record(sns_envelope(item("mover", "yearly", "2021-07-01T00:00:00Z")))])
        )
        == set()
    )
    with pgstac.connect() as conn:
        rows = conn.execute("SELECT datetime FROM items WHERE id = 'mover'").fetchall()
    assert [r[0].year for r in rows] == [2021]


def test_duplicates_in_one_batch_keep_newest_and_both_succeed(with_collection, load):
    now = datetime.now(UTC)
    old = {**item("dup"), "properties": {"datetime": "2020-06-01T00:00:00Z", "version": "old"}}
    new = {**item("dup"), "properties": {"datetime": "2020-06-01T00:00:00Z", "version": "new"}}
    # the newer message comes first in the batch: order must not decide, the timestamp does
    r_new = sqs_record(sns_envelope(new, timestamp=now))
    r_old = sqs_record(sns_envelope(old, timestamp=now - timedelta(minutes=5)))
    assert failed_ids(load([r_new, r_old])) == set()
    with with_collection.connect() as conn:
        rows = conn.execute(
            "SELECT content->'properties'->>'version' FROM items WHERE id='dup'"
        ).fetchall()
    assert rows == [("new",)]


def test_raw_duplicates_use_sqs_sent_timestamp(with_collection, load):
    a = {**item("dup2"), "properties": {"datetime": "2020-06-01T00:00:00Z", "version": "later"}}
    b = {**item("dup2"), "properties": {"datetime": "2020-06-01T00:00:00Z", "version": "earlier"}}
    assert (
        failed_ids(
            load([sqs_record(json.dumps(a), sent_ms=2000), sqs_record(json.dumps(b), sent_ms=1000)])
        )
        == set()
    )
    with with_collection.connect() as conn:
        rows = conn.execute(
            "SELECT content->'properties'->>'version' FROM items WHERE id='dup2'"
        ).fetchall()
    assert rows == [("later",)]


def test_database_down_fails_every_record_and_recovers(with_collection, load, monkeypatch):
    # GIVEN the database is unreachable (nothing listens on the port)
    monkeypatch.setenv("PGPORT", "1")
    load_handler.connections.discard()
    records = [sqs_record(sns_envelope(item(f"down{n}"))) for n in range(5)]
    # WHEN a batch arrives
    response = load(records)
    # THEN every record is reported failed, so SQS retries all of them
    assert failed_ids(response) == {r["messageId"] for r in records}
    # AND when the database is back the retry lands them once
    monkeypatch.setenv("PGPORT", str(with_collection.conninfo["port"]))
    load_handler.connections.discard()
    assert failed_ids(load(records)) == set()
    assert with_collection.count(COLL) == 5


def test_connection_lost_mid_batch_fails_the_batch_then_reconnects(with_collection, load):
    assert failed_ids(load([sqs_record(sns_envelope(item("warm")))])) == set()
    conn = load_handler.connections.get()
    pid = conn.info.backend_pid
    with with_collection.connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    records = [sqs_record(sns_envelope(item(f"after{n}"))) for n in range(3)]
    assert failed_ids(load(records)) == {r["messageId"] for r in records}
    assert failed_ids(load(records)) == set()
    assert with_collection.count(COLL) == 4


def test_concurrent_loaders_same_collection_lose_nothing(pgstac, load):
    from item_load.core import load_documents
    from item_load.messages import Document

    assert failed_ids(load([sqs_record(sns_envelope(collection("busy")))])) == set()
    with pgstac.connect() as conn:
        conn.execute("UPDATE collections SET partition_trunc = 'month' WHERE id = 'busy'")
    errors: list[BaseException] = []
    outcomes = []

    def worker(w: int) -> None:
        try:
            with pgstac.connect() as conn:
                for batch in range(4):
                    docs = [
                        Document(
                            f"w{w}-{batch}-{n}",
                            None,
                            item(
                                f"w{w}-b{batch}-{n}",
                                "busy",
                                f"20{10 + n % 3}-{1 + (n + w) % 4:02d}-15T00:00:00Z",
                            ),
                        )
                        for n in range(150)
                    ]
                    outcomes.append(load_documents(conn, docs))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(o.failures == {} for o in outcomes)
    assert pgstac.count("busy") == 4 * 4 * 150


def test_partition_stats_follow_widening_batches_and_nothing_stays_queued(with_collection, load):
    # GIVEN items loaded for one instant
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("a", dt="2020-06-01T00:00:00Z")))])) == set()
    )
    queued, dtrange = _stats(with_collection, COLL)
    assert queued == 0 and (dtrange.lower.year, dtrange.upper.year) == (2020, 2020)
    # WHEN a batch stays inside the partition's bounds, its refresh may wait, but is not queued
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("b", dt="2020-06-01T00:00:00Z")))])) == set()
    )
    assert _stats(with_collection, COLL)[0] == 0
    # WHEN a batch widens the partition, the stats follow at once
    assert (
        failed_ids(load([sqs_record(sns_envelope(item("c", dt="2023-01-01T00:00:00Z")))])) == set()
    )
    queued, dtrange = _stats(with_collection, COLL)
    assert queued == 0 and (dtrange.lower.year, dtrange.upper.year) == (2020, 2023)
    assert with_collection.item_ids(COLL) == ["a", "b", "c"]


def test_naive_and_mixed_datetimes_load(with_collection, load):
    naive = item("naive", dt="2020-06-01T00:00:00")
    mixed = item("mixed")
    mixed["properties"] = {
        "datetime": None,
        "start_datetime": "2020-01-01T00:00:00",
        "end_datetime": "2020-12-31T00:00:00+00:00",
    }
    records = [sqs_record(sns_envelope(naive)), sqs_record(sns_envelope(mixed))]
    assert failed_ids(load(records)) == set()
    assert with_collection.item_ids(COLL) == ["mixed", "naive"]


def test_stats_interval_zero_refreshes_every_batch(with_collection, load, monkeypatch):
    monkeypatch.setattr(load_handler.processor, "stats_interval", 0.0)

    def last_updated():
        with with_collection.connect() as conn:
            return conn.execute(
                "SELECT s.last_updated FROM partition_stats s "
                "JOIN partitions_view v USING (partition) WHERE v.collection = %s",
                (COLL,),
            ).fetchone()[0]

    assert failed_ids(load([sqs_record(sns_envelope(item("s1")))])) == set()
    first = last_updated()
    assert failed_ids(load([sqs_record(sns_envelope(item("s2")))])) == set()  # same bounds
    assert last_updated() > first


def _catalog(catalog_id: str) -> dict:
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": catalog_id,
        "description": "a catalog of collections (multi-tenant catalogs keep these in pgstac)",
        "links": [{"rel": "child", "href": "./c/collection.json"}],
    }


def test_a_catalog_is_stored_beside_the_collections(pgstac, load):
    # GIVEN a STAC Catalog on the load topic, as eoapi-cdk's loader accepts since 2026
    # WHEN it is loaded
    assert failed_ids(load([sqs_record(sns_envelope(_catalog("tenant-a")))])) == set()
    # THEN it is in pgstac's collections table, unchanged, as multi-tenant catalogs expect
    with pgstac.connect() as conn:
        row = conn.execute("SELECT content FROM collections WHERE id = 'tenant-a'").fetchone()
    assert row is not None and row[0]["type"] == "Catalog"
    assert row[0]["description"].startswith("a catalog of collections")


def test_a_catalog_without_a_description_fails_alone_with_reason(pgstac, load, caplog):
    bad = _catalog("tenant-b")
    del bad["description"]
    bad_record = sqs_record(sns_envelope(bad))
    good_record = sqs_record(sns_envelope(_catalog("tenant-c")))
    load([bad_record, good_record])
    with pgstac.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM collections ORDER BY id")]
    assert "tenant-c" in ids and "tenant-b" not in ids
    reasons = [
        r.reason
        for r in caplog.records
        if getattr(r, "message_id", None) == bad_record["messageId"]
    ]
    assert reasons == ["catalog 'tenant-b' has no 'description' string; STAC requires one"]


def _partition_trunc(pgstac, collection_id: str) -> tuple:
    with pgstac.connect() as conn:
        return conn.execute(
            "SELECT partition_trunc, content ? 'stactools_ingest:partition_trunc' "
            "FROM collections WHERE id = %s",
            (collection_id,),
        ).fetchone()


def test_a_collection_asking_for_yearly_partitions_gets_them(pgstac, load):
    # GIVEN a collection that says how pgstac should partition it (as `dataset run` sends it)
    doc = {**collection("yearly"), "stactools_ingest:partition_trunc": "year"}
    # WHEN it is loaded, then its items
    assert failed_ids(load([sqs_record(sns_envelope(doc))])) == set()
    items = [item(f"y{n}", "yearly", dt=f"20{10 + n}-06-01T00:00:00Z") for n in range(3)]
    assert failed_ids(load([sqs_record(sns_envelope(i)) for i in items])) == set()
    # THEN pgstac partitions it by year, and the setting is not part of the stored document
    assert _partition_trunc(pgstac, "yearly") == ("year", False)
    with pgstac.connect() as conn:
        partitions = conn.execute(
            "SELECT count(*) FROM partitions_view WHERE collection = 'yearly'"
        ).fetchone()[0]
    assert partitions == 3
    # AND the collection loaded again without the setting keeps its partitioning
    assert failed_ids(load([sqs_record(sns_envelope(collection("yearly")))])) == set()
    assert _partition_trunc(pgstac, "yearly") == ("year", False)
    # AND with the setting null, pgstac goes back to one partition for it
    unset = {**collection("yearly"), "stactools_ingest:partition_trunc": None}
    assert failed_ids(load([sqs_record(sns_envelope(unset))])) == set()
    assert _partition_trunc(pgstac, "yearly") == (None, False)
    assert pgstac.item_ids("yearly") == ["y0", "y1", "y2"]


def test_a_partitioning_pgstac_does_not_know_fails_the_collection_alone(pgstac, load, caplog):
    bad = {**collection("weekly"), "stactools_ingest:partition_trunc": "week"}
    bad_record = sqs_record(sns_envelope(bad))
    good_record = sqs_record(sns_envelope(collection("plain")))
    load([bad_record, good_record])
    assert _partition_trunc(pgstac, "plain") == (None, False)
    assert _partition_trunc(pgstac, "weekly") is None
    reasons = [
        r.reason
        for r in caplog.records
        if getattr(r, "message_id", None) == bad_record["messageId"]
    ]
    assert reasons == [
        "collection 'weekly' has 'stactools_ingest:partition_trunc' 'week'; "
        "pgstac partitions by 'year' or 'month' (or null)"
    ]
