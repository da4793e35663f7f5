"""``stactools-ingest status``: asking the local ledger what happened to each request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import item
from geotiffs import GLAD_COLLECTION, glad_collection_request, glad_item_request, glad_tiles
from test_run import cli

from ingest_api.ages import parse_since

CORNERS = [(lon, lat) for lat in (40, 50) for lon in (0, 10, 20, 30)]


def status(pgstac, *args: str):
    return cli("status", *args, "--dsn", pgstac.dsn)


def test_ten_requests_one_bad_each_has_its_answer(pgstac, tmp_path):
    # GIVEN a collection request, eight tile requests with their own ids, one request for a
    # file that does not exist, and a prebuilt item
    tifs = glad_tiles(tmp_path, corners=CORNERS)
    lines = [glad_collection_request()]
    lines += [glad_item_request(t, tmp_path, request_id=f"tile-{n}") for n, t in enumerate(tifs)]
    missing = tmp_path / "2020" / "60N_000E.tif"
    lines.append(glad_item_request(missing, tmp_path, request_id="bad-1"))
    lines.append(item("prebuilt", GLAD_COLLECTION, dt="2020-01-01T00:00:00Z"))
    path = tmp_path / "requests.ndjson"
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    # WHEN they run (one is dead-lettered: exit 1)
    result = cli("run", str(path), "--dsn", pgstac.dsn, "-q")
    assert result.returncode == 1, result.stderr
    # THEN each tile request is loaded, naming its item
    for n, tif in enumerate(tifs):
        asked = status(pgstac, f"tile-{n}", "--json")
        assert asked.returncode == 0, asked.stderr
        got = json.loads(asked.stdout)
        assert (got["state"], got["stage"], got["generated"]) == ("loaded", "item-load", 1)
        assert got["items"] == [{"collection": GLAD_COLLECTION, "id": f"2020_{tif.stem}"}]
        assert got["error"] is None
    # AND the bad one is dead-lettered by the generation stage, with the package's reason
    bad = json.loads(status(pgstac, "bad-1", "--json").stdout)
    assert (bad["state"], bad["stage"]) == ("dead_lettered", "item-gen")
    assert "60N_000E.tif" in bad["error"]
    human = status(pgstac, "bad-1")
    assert human.returncode == 0
    assert "dead_lettered (item-gen" in human.stdout and "60N_000E.tif" in human.stdout
    # AND the listing counts all eleven: the collection request and the prebuilt item are
    # known by the ids the run gave them
    listed = json.loads(status(pgstac, "--since", "1h", "--json").stdout)
    assert listed["counts"]["loaded"] == 10
    assert listed["counts"]["dead_lettered"] == 1
    assert sum(listed["counts"].values()) == 11
    [prebuilt] = [
        r
        for r in listed["requests"]
        if r["items"] == [{"collection": GLAD_COLLECTION, "id": "prebuilt"}]
    ]
    assert json.loads(status(pgstac, prebuilt["request_id"], "--json").stdout)["state"] == "loaded"
    failed = json.loads(status(pgstac, "--state", "dead_lettered", "--json").stdout)
    assert [r["request_id"] for r in failed["requests"]] == ["bad-1"]
    # AND a request nobody sent is one line and exit 1
    unknown = status(pgstac, "never-sent")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: no request 'never-sent' in the ledger (never received, or older than its "
        "retention); list recent ones with: stactools-ingest status --since 1d"
    ]


def test_a_redriven_request_is_answered_by_its_new_outcome(pgstac, tmp_path):
    # GIVEN a prebuilt item whose collection is missing: it fails, then is dead-lettered
    path = tmp_path / "orphan.ndjson"
    path.write_text(json.dumps(item("orphan", "nowhere")) + "\n")
    assert cli("run", str(path), "--dsn", pgstac.dsn, "-q", "--max-receives", "1").returncode == 1
    [row] = json.loads(status(pgstac, "--json").stdout)["requests"]
    assert row["state"] == "dead_lettered" and "nowhere" in row["error"]
    # WHEN the collection arrives and the dead letter is redriven and run
    coll = tmp_path / "coll.ndjson"
    from factories import collection

    coll.write_text(json.dumps(collection("nowhere")) + "\n")
    assert cli("run", str(coll), "--dsn", pgstac.dsn, "-q").returncode == 0
    assert cli("dlq", "redrive", "--all", "--dsn", pgstac.dsn).returncode == 0
    assert cli("run", "--dsn", pgstac.dsn, "-q").returncode == 0
    # THEN the same request id now says loaded
    got = json.loads(status(pgstac, row["request_id"], "--json").stdout)
    assert (got["state"], got["error"]) == ("loaded", None)
    assert got["items"] == [{"collection": "nowhere", "id": "orphan"}]


def test_status_on_a_pgstac_without_a_ledger_lists_nothing(pgstac):
    listed = status(pgstac, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "counts": {
            "queued": 0,
            "generated": 0,
            "loaded": 0,
            "failed": 0,
            "dead_lettered": 0,
            "superseded": 0,
        },
        "requests": [],
    }
    assert status(pgstac, "x").returncode == 1


@pytest.mark.parametrize(
    "value, expected",
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        (" 1.5h ", timedelta(hours=1.5)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_since_takes_ages(value, expected):
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert parse_since(value, now) == now - expected


def test_since_takes_instants_and_refuses_the_rest():
    assert parse_since("2026-12-07T10:00:00Z") == datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert parse_since("2026-12-07T10:00:00") == datetime(2026, 12, 7, 10, tzinfo=UTC)
    for bad in ("yesterday", "10x", "", "9" * 400 + "w"):
        with pytest.raises(ValueError, match=r"expected an age|longer ago"):
            parse_since(bad)


def test_run_events_lists_each_created_or_changed_item_once(pgstac, tmp_path):
    from factories import collection

    events = tmp_path / "events.ndjson"
    path = tmp_path / "docs.ndjson"
    docs = [collection("ev")] + [item(f"e{n}", "ev", x=n) for n in range(3)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    # WHEN the documents run with --events
    first = cli("run", str(path), "--dsn", pgstac.dsn, "-q", "--events", str(events))
    assert first.returncode == 0, first.stderr
    # THEN each item is announced as created, under the request id the ledger knows it by
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert sorted((n["action"], n["collection"], n["id"]) for n in lines) == [
        ("created", "ev", f"e{n}") for n in range(3)
    ]
    for note in lines:
        known = json.loads(status(pgstac, note["request_id"], "--json").stdout)
        assert known["items"] == [{"collection": "ev", "id": note["id"]}]
        assert note["datetime"] == "2020-06-01T00:00:00Z"
    # WHEN the same file runs again, and then a file changing one item
    assert cli("run", str(path), "--dsn", pgstac.dsn, "-q", "--events", str(events)).returncode == 0
    changed = item("e1", "ev", x=1)
    changed["properties"]["platform"] = "changed"
    (tmp_path / "change.ndjson").write_text(json.dumps(changed) + "\n")
    again = cli(
        "run", str(tmp_path / "change.ndjson"), "--dsn", pgstac.dsn, "-q", "--events", str(events)
    )
    assert again.returncode == 0, again.stderr
    # THEN the file gained exactly one line: e1 updated
    later = [json.loads(x) for x in events.read_text().splitlines()][len(lines) :]
    assert [(n["action"], n["id"]) for n in later] == [("updated", "e1")]
