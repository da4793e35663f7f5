"""Time is UTC, strictly: partitions and stored instants come from the parsed UTC instant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from factories import (
    MONTHLY,
    collection,
    failed_ids,
    item,
    logged_reasons,
    sns_envelope,
    sqs_record,
)

from item_load import handler as load_handler


def _stored(db, item_id: str) -> tuple[str, datetime, datetime]:
    """(partition, datetime, end_datetime) of the one stored copy of ``item_id``."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, datetime, end_datetime FROM items WHERE id = %s",
            (item_id,),
        ).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def _key(db, collection_id: str) -> int:
    with db.connect() as conn:
        return conn.execute(
            "SELECT key FROM collections WHERE id = %s", (collection_id,)
        ).fetchone()[0]


def test_an_offset_instant_decides_the_month_partition(monthly, load):
    # GIVEN an item whose local date is June 1st but whose UTC instant is May 31st
    rec = sqs_record(sns_envelope(item("east", MONTHLY, "2020-06-01T05:00:00+08:00")))
    # WHEN it is loaded into a month-partitioned collection
    assert failed_ids(load([rec])) == set()
    # THEN it lands in May's partition, at its UTC instant
    partition, dt, end = _stored(monthly, "east")
    assert partition == f"_items_{_key(monthly, MONTHLY)}_202005"
    assert dt == end == datetime(2020, 5, 31, 21, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("2020-05-31T23:59:59.9999999Z", "202006"),  # PostgreSQL rounds it into June
        ("2020-05-31T23:59:59.9999994Z", "202005"),
        ("2020-05-31T23:59:59.0000015Z", "202005"),  # half to even: 2 µs
        ("2020-05-31T23:59:59.0000025+00:00", "202005"),  # half to even: 2 µs
        ("2020-06-30T23:59:60Z", "202007"),  # a leap second: PostgreSQL rolls it over
    ],
)
def test_fractions_and_leap_seconds_land_where_postgres_puts_them(monthly, load, text, month):
    rec = sqs_record(sns_envelope(item("edge", MONTHLY, text)))
    assert failed_ids(load([rec])) == set()
    partition, dt, _ = _stored(monthly, "edge")
    with monthly.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        postgres = conn.execute("SELECT %s::text::timestamptz", (text,)).fetchone()[0]
    assert dt == postgres
    assert partition == f"_items_{_key(monthly, MONTHLY)}_{month}"


def test_an_offset_postgres_refuses_is_normalised_in_python(monthly, load):
    # GIVEN a valid RFC 3339 offset beyond what PostgreSQL parses (±15:59)
    rec = sqs_record(sns_envelope(item("far-east", MONTHLY, "2020-06-01T00:00:00+20:00")))
    # WHEN it is loaded, THEN it lands at its UTC instant
    assert failed_ids(load([rec])) == set()
    partition, dt, _ = _stored(monthly, "far-east")
    assert dt == datetime(2020, 5, 31, 4, 0, tzinfo=UTC)
    assert partition == f"_items_{_key(monthly, MONTHLY)}_202005"


def test_sessions_run_in_utc_whatever_the_database_default(pgstac, load):
    # GIVEN a database whose default time zone is not UTC (an RDS parameter group, say)
    with pgstac.connect() as conn:
        conn.execute(f"ALTER DATABASE \"{pgstac.name}\" SET TimeZone = 'Asia/Tokyo'")
    assert failed_ids(load([sqs_record(sns_envelope(collection(MONTHLY)))])) == set()
    with pgstac.connect() as conn:
        conn.execute("UPDATE collections SET partition_trunc = 'month' WHERE id = %s", (MONTHLY,))
    # WHEN an item without an offset (read as UTC) and one with an offset are loaded
    records = [
        sqs_record(sns_envelope(item("naive", MONTHLY, "2020-06-01T00:00:00"))),
        sqs_record(sns_envelope(item("offset", MONTHLY, "2020-06-01T00:30:00+01:00"))),
    ]
    assert failed_ids(load(records)) == set()
    # THEN the loader's session runs in UTC, and the instants and partitions are UTC ones
    assert load_handler.connections.get().execute("SHOW TimeZone").fetchone()[0] == "UTC"
    key = _key(pgstac, MONTHLY)
    assert _stored(pgstac, "naive")[:2] == (
        f"_items_{key}_202006",
        datetime(2020, 6, 1, tzinfo=UTC),
    )
    assert _stored(pgstac, "offset")[:2] == (
        f"_items_{key}_202005",
        datetime(2020, 5, 31, 23, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "text",
    [
        "2020-W01-1",  # ISO week date: Python reads it, PostgreSQL refuses it
        "2020-W01-1T00:00:00Z",
        "2020-153T00:00:00Z",  # ordinal date
        "20200601T000000Z",  # ISO basic format
        "2020-06-01",  # a date is not a date-time
        "2020-06-01T00:00Z",  # seconds are required
        "2020-06-01T24:00:00Z",
        "2020-06-01T00:00:00+05:30:15",  # offsets are hours and minutes
        "2020-06-01T00:00:00+05:60",
        "\uff12\uff10\uff12\uff10-06-01T00:00:00Z",  # fullwidth digits
        "0000-06-01T00:00:00Z",
        "9999-12-31T23:59:59.9999999Z",  # rounds beyond year 9999
    ],
)
def test_forms_outside_rfc_3339_are_refused_before_the_copy(pgstac, load, caplog, text):
    assert failed_ids(load([sqs_record(sns_envelope(collection("c")))])) == set()
    bad = sqs_record(sns_envelope(item("odd", "c", text)), message_id="odd-message")
    good = sqs_record(sns_envelope(item("fine", "c")))
    assert failed_ids(load([bad, good])) == {"odd-message"}
    assert pgstac.item_ids("c") == ["fine"]
    (reason,) = logged_reasons(caplog, "odd-message")
    assert reason.startswith(f"item 'odd': properties.datetime {text!r}")
    assert "RFC 3339" in reason or "out of range" in reason


def test_start_and_end_with_offsets_are_stored_as_utc(monthly, load):
    doc = item("span", MONTHLY)
    doc["properties"] = {
        "datetime": None,
        "start_datetime": "2020-07-01T01:00:00+02:00",
        "end_datetime": "2020-07-01T12:00:00-10:00",
    }
    assert failed_ids(load([sqs_record(sns_envelope(doc))])) == set()
    partition, dt, end = _stored(monthly, "span")
    assert partition == f"_items_{_key(monthly, MONTHLY)}_202006"
    assert (dt, end) == (
        datetime(2020, 6, 30, 23, 0, tzinfo=UTC),
        datetime(2020, 7, 1, 22, 0, tzinfo=UTC),
    )
