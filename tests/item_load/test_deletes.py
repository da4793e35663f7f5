"""Delete messages: ``{"type": "Delete", "collection": C, "ids": [...]}`` on the load topic.

Items are withdrawn as they were loaded: in the newest-wins order (a delete older than what
pgstac holds does nothing, and an item older than a delete does not bring it back), with the
partition stats refreshed, and ids that are not there reported without failing the message.
"""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from factories import (
    COLL,
    MONTHLY,
    failed_ids,
    item,
    logged_reasons,
    sns_envelope,
    sqs_record,
)

from item_load import upsert
from item_load.core import BatchLoader
from item_load.messages import Document
from item_load.upsert import refresh_stale_partitions

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _delete(ids: list[str], collection: str = COLL) -> dict:
    return {"type": "Delete", "collection": collection, "ids": ids}


def _ids(db) -> set[str]:
    with db.connect() as conn:
        return {row[0] for row in conn.execute("SELECT id FROM items").fetchall()}


def _send(load, *messages: tuple[dict, datetime]) -> dict:
    return load([sqs_record(sns_envelope(doc, timestamp=at)) for doc, at in messages])


def test_a_delete_removes_the_items_it_names_and_only_those(with_collection, load):
    assert failed_ids(_send(load, *[(item(f"i{n}"), NOW) for n in range(4)])) == set()
    result = _send(load, (_delete(["i1", "i3"]), NOW + timedelta(seconds=1)))
    assert failed_ids(result) == set()
    assert _ids(with_collection) == {"i0", "i2"}


def test_ids_that_are_not_there_are_reported_not_failed(with_collection, load, caplog):
    assert failed_ids(_send(load, (item("here"), NOW))) == set()
    result = _send(load, (_delete(["here", "never-loaded"]), NOW + timedelta(seconds=1)))
    assert failed_ids(result) == set()
    assert _ids(with_collection) == set()
    assert any("never-loaded" in json.dumps(r.__dict__, default=str) for r in caplog.records)


def test_a_delete_older_than_the_stored_item_does_nothing(with_collection, load):
    assert failed_ids(_send(load, (item("kept"), NOW))) == set()
    result = _send(load, (_delete(["kept"]), NOW - timedelta(minutes=5)))
    assert failed_ids(result) == set()
    assert _ids(with_collection) == {"kept"}


def test_an_item_older_than_a_delete_does_not_come_back(with_collection, load):
    assert failed_ids(_send(load, (item("gone"), NOW))) == set()
    assert failed_ids(_send(load, (_delete(["gone"]), NOW + timedelta(minutes=1)))) == set()
    # a redrive of the original item message, delivered after the delete
    assert failed_ids(_send(load, (item("gone"), NOW))) == set()
    assert _ids(with_collection) == set()
    # a newer copy is a new version: it loads
    assert failed_ids(_send(load, (item("gone"), NOW + timedelta(minutes=2)))) == set()
    assert _ids(with_collection) == {"gone"}


def test_in_one_batch_the_later_of_an_item_and_its_delete_wins(with_collection, load):
    result = _send(
        load,
        (item("a"), NOW),
        (_delete(["a", "b"]), NOW + timedelta(seconds=1)),
        (item("b"), NOW + timedelta(seconds=2)),
    )
    assert failed_ids(result) == set()
    assert _ids(with_collection) == {"b"}


def test_a_delete_refreshes_the_partition_stats(monthly, load):
    docs = [item(f"m{day}", MONTHLY, f"2020-06-{day:02d}T00:00:00Z") for day in (1, 10, 20)]
    assert failed_ids(_send(load, *[(d, NOW) for d in docs])) == set()
    assert failed_ids(_send(load, (_delete(["m20"], MONTHLY), NOW + timedelta(seconds=1)))) == set()
    with monthly.connect() as conn:
        (upper,) = conn.execute(
            "SELECT upper(dtrange) FROM partitions_view WHERE collection = %s", (MONTHLY,)
        ).fetchone()
    assert upper == datetime(2020, 6, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "Delete", "ids": ["a"]}, "collection"),
        ({"type": "Delete", "collection": COLL}, "ids"),
        ({"type": "Delete", "collection": COLL, "ids": []}, "ids"),
        ({"type": "Delete", "collection": COLL, "ids": "a"}, "ids"),
        ({"type": "Delete", "collection": COLL, "ids": ["a", 7]}, "ids"),
        ({"type": "Delete", "collection": COLL, "ids": [""]}, "ids"),
    ],
)
def test_a_malformed_delete_fails_alone_with_its_reason(
    with_collection, load, caplog, message, reason
):
    assert failed_ids(_send(load, (item("stays"), NOW))) == set()
    record = sqs_record(sns_envelope(message, timestamp=NOW + timedelta(seconds=1)), "bad")
    ok = sqs_record(sns_envelope(item("also"), timestamp=NOW), "good")
    assert failed_ids(load([record, ok])) == {"bad"}
    assert _ids(with_collection) == {"stays", "also"}
    assert any(reason in r for r in logged_reasons(caplog, "bad"))


@pytest.mark.parametrize(
    "ids",
    # random text: PostgreSQL compresses a repeated character to fit its index
    [
        ["ok", "nul\u0000"],
        ["ok", "".join(random.Random(1).choices(string.ascii_letters, k=20_000))],
    ],
    ids=["nul-in-an-id", "20-kB-id"],
)
def test_a_delete_postgres_refuses_fails_alone_and_deletes_nothing_else(with_collection, load, ids):
    assert failed_ids(_send(load, (item("ok"), NOW), (item("other"), NOW))) == set()
    bad = sqs_record(sns_envelope(_delete(ids), timestamp=NOW + timedelta(seconds=1)), "bad")
    good = sqs_record(
        sns_envelope(_delete(["other"]), timestamp=NOW + timedelta(seconds=1)), "good"
    )
    assert failed_ids(load([bad, good])) == {"bad"}
    assert _ids(with_collection) == {"ok"}


def test_a_refresh_that_cannot_run_now_is_left_for_later(monthly):
    # GIVEN three items in one partition, and a reader holding it open (a slow search)
    opts = "-c search_path=pgstac,public -c TimeZone=UTC -c lock_timeout=300"
    conn = psycopg.connect(monthly.dsn, autocommit=True, options=opts)
    loader = BatchLoader(conn, stats_interval=0)
    sent = NOW.timestamp()
    docs = [
        Document(f"m{day}", sent, item(f"m{day}", MONTHLY, f"2020-06-{day:02d}T00:00:00Z"))
        for day in (1, 10, 20)
    ]
    assert not loader.load(docs).failures
    reader = psycopg.connect(monthly.dsn, options=opts)
    reader.execute("SELECT count(*) FROM items")
    # WHEN a delete's stats refresh times out behind the reader
    delete = _delete(["m20"], MONTHLY)
    outcome = loader.load([Document("del", sent + 1, delete)])
    reader.rollback()
    reader.close()
    # THEN the delete stands, and the partition is marked for the maintenance call, which
    # refreshes it once the reader is gone
    assert (outcome.failures, outcome.items_deleted) == ({}, 1)
    assert refresh_stale_partitions(conn, 0) != []
    (upper,) = conn.execute(
        "SELECT upper(dtrange) FROM partitions_view WHERE collection = %s", (MONTHLY,)
    ).fetchone()
    conn.close()
    assert upper == datetime(2020, 6, 10, tzinfo=UTC)


def test_a_batch_of_deletes_refreshes_each_partition_once(with_collection, load, monkeypatch):
    assert failed_ids(_send(load, *[(item(f"s{n}"), NOW) for n in range(20)])) == set()
    refreshed: list[str] = []
    real = upsert.refresh_partition

    def counted(conn, collection, partition):  # the real refresh, counted
        refreshed.append(partition)
        return real(conn, collection, partition)

    monkeypatch.setattr(upsert, "refresh_partition", counted)
    later = NOW + timedelta(seconds=1)
    result = _send(load, *[(_delete([f"s{n}"]), later) for n in range(20)])
    assert failed_ids(result) == set()
    assert _ids(with_collection) == set()
    assert len(refreshed) == len(set(refreshed)) == 1


def test_a_delete_for_an_unknown_collection_succeeds_with_a_warning(with_collection, load, caplog):
    assert failed_ids(_send(load, (item("kept"), NOW))) == set()
    result = _send(load, (_delete(["kept"], "no-such-collection"), NOW + timedelta(seconds=1)))
    assert failed_ids(result) == set()
    assert _ids(with_collection) == {"kept"}
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warned] == ["delete for an unknown collection"]
