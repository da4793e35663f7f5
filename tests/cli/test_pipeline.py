"""The local pipeline in-process: what commits together, and what survives a fault."""

from __future__ import annotations

import json
import time

import pytest
from factories import collection, item

from item_load.core import BatchLoader
from stactools_ingest.inputs import InputRecord, read_inputs
from stactools_ingest.pipeline import DIRECT_BATCH, Enqueued, LocalPipeline
from stactools_ingest.queue import LOAD, LocalQueues


class Killed(BaseException):
    """Stands for the process dying between loading a batch and acknowledging it."""


def test_load_and_ack_commit_together(pgstac, monkeypatch):
    # GIVEN a collection and two items on the load queue
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0, visibility_timeout=0.5)
    enqueued = pipeline.enqueue(
        [
            InputRecord("in:1", collection("c")),
            InputRecord("in:2", item("i1", "c")),
            InputRecord("in:3", item("i2", "c")),
        ]
    )

    # WHEN the worker dies after loading the batch, before its messages are acknowledged
    def die(self, messages):
        raise Killed()

    monkeypatch.setattr(LocalQueues, "ack", die)
    with pytest.raises(Killed):
        pipeline.run(enqueued)
    # THEN nothing was loaded, and every message is still there to be received again
    assert pgstac.count() == 0
    with pgstac.connect() as conn:
        assert conn.execute("SELECT count(*) FROM collections").fetchone()[0] == 0
        states = conn.execute(
            "SELECT id, state FROM stactools_ingest.messages WHERE queue = %s ORDER BY id",
            (LOAD,),
        ).fetchall()
    assert sorted(state for _, state in states) == ["ready"] * 3
    # AND once the dead worker's leases expire, the next run loads everything once
    monkeypatch.undo()
    time.sleep(0.5)
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(enqueued)
    assert (summary.succeeded, summary.failed) == (3, 0)
    assert pgstac.item_ids("c") == ["i1", "i2"]


def _bodies(pgstac) -> list[tuple]:
    with pgstac.connect() as conn:
        return conn.execute(
            """
            SELECT m.source, b.body IS NOT NULL, b.path IS NOT NULL
            FROM stactools_ingest.messages m
            JOIN stactools_ingest.message_bodies b USING (queue, id) ORDER BY m.source
            """
        ).fetchall()


def test_prebuilt_items_are_kept_by_reference_not_copied(pgstac, tmp_path):
    # GIVEN an NDJSON file of a collection and items
    path = tmp_path / "items.ndjson"
    docs = [collection("r"), item("r1", "r"), item("r2", "r")]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0)
    # WHEN it is queued
    enqueued = pipeline.enqueue(read_inputs([str(path)]))
    # THEN the queue holds where each item is, not a copy; the collection is copied (it is
    # loaded first, alone, and small)
    assert _bodies(pgstac) == [
        (f"{path}:1", True, False),
        (f"{path}:2", False, True),
        (f"{path}:3", False, True),
    ]
    # AND the run loads the items from the file
    summary = pipeline.run(enqueued)
    assert (summary.succeeded, summary.failed) == (3, 0)
    assert pgstac.item_ids("r") == ["r1", "r2"]
    assert _bodies(pgstac) == []


def test_an_input_changed_after_queueing_is_dead_lettered_not_misread(pgstac, tmp_path):
    # GIVEN items queued by reference, then the file is rewritten before they are loaded
    path = tmp_path / "items.ndjson"
    path.write_text(json.dumps(collection("r")) + "\n" + json.dumps(item("r1", "r")) + "\n")
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0)
    enqueued = pipeline.enqueue(read_inputs([str(path)]))
    path.write_text(json.dumps(collection("r")) + "\n" + json.dumps(item("XX", "r")) + "\n")
    # WHEN the run loads them
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(enqueued)
    # THEN the changed line is not loaded: it is a dead letter saying why, keeping where it was
    assert (summary.succeeded, summary.failed, summary.dead_letters) == (1, 1, 1)
    assert pgstac.item_ids("r") == []
    q = pipeline.queues()
    [letter] = q.dead_letters()
    assert letter.last_error == (
        f"{path}:2: {path} changed since it was queued; run it again to queue it anew"
    )
    assert letter.body == {
        "file": str(path),
        "offset": len(json.dumps(collection("r"))) + 1,
        "length": len(json.dumps(item("r1", "r"))),
    }
    q.conn.close()


def test_warm_workers_per_environment_match_the_generation_threads(pgstac):
    # A thread that leased a request must never wait for a warm worker while holding the lease.
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=5)
    assert pipeline.gen_settings.warm_workers_per_env == 5


def test_a_file_grown_after_a_killed_run_is_read_again_from_its_new_stamp(pgstac, tmp_path):
    # GIVEN items queued by reference by a run that then died
    path = tmp_path / "items.ndjson"
    path.write_text(json.dumps(collection("g")) + "\n" + json.dumps(item("g1", "g")) + "\n")
    LocalPipeline(pgstac.dsn, gen_workers=0).enqueue(read_inputs([str(path)]))
    # WHEN lines are appended and the same command runs again
    with path.open("a") as f:
        f.write(json.dumps(item("g2", "g")) + "\n")
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0)
    summary = pipeline.run(records=read_inputs([str(path)]))
    # THEN the lines queued before are read from the grown file, and everything loads
    assert (summary.documents, summary.succeeded, summary.failed) == (3, 3, 0)
    assert pgstac.item_ids("g") == ["g1", "g2"]


def test_items_read_after_their_collection_wait_for_it_without_a_failed_try(
    pgstac, tmp_path, monkeypatch
):
    # GIVEN a file with a collection, then more items than one batch
    path = tmp_path / "items.ndjson"
    docs = [collection("w")] + [item(f"w{n:03d}", "w") for n in range(250)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0, batch_size=100)
    reasons = _refusals(monkeypatch)
    # WHEN it runs (items are loaded straight from the file once the collection is in)
    summary = pipeline.run(records=read_inputs([str(path)]))
    # THEN no item was tried before its collection had landed
    assert reasons == []
    assert (summary.succeeded, summary.failed) == (251, 0)
    assert len(pgstac.item_ids("w")) == 250


def test_progress_is_reported_while_items_load_straight_from_the_input(pgstac, tmp_path):
    # GIVEN a file of more prebuilt items than one load straight from the input takes
    path = tmp_path / "items.ndjson"
    docs = [item(f"p{n:05d}", "p") for n in range(2 * DIRECT_BATCH + 10)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0)
    with pgstac.connect() as conn:
        conn.execute("SELECT pgstac.create_collection(%s)", (json.dumps(collection("p")),))
    loaded: list[int] = []
    # WHEN it runs
    pipeline.run(
        on_tick=lambda counters, _: loaded.append(counters.items_loaded),
        records=read_inputs([str(path)]),
    )
    # THEN progress was reported between loads, not only once everything had landed
    assert any(0 < n < len(docs) for n in loaded), loaded
    assert loaded[-1] == len(docs)


def _refusals(monkeypatch) -> list[str]:
    """Reasons the real BatchLoader.load refuses documents for, from now on."""
    reasons: list[str] = []
    real_load = BatchLoader.load

    def load(self, docs):
        outcome = real_load(self, docs)
        reasons.extend(f.reason for f in outcome.failures.values())
        return outcome

    monkeypatch.setattr(BatchLoader, "load", load)
    return reasons


def test_only_plain_items_load_straight_from_the_input(pgstac, tmp_path, monkeypatch):
    # GIVEN a collection in pgstac, and a file of items with a pointer to more items among them
    with pgstac.connect() as conn:
        conn.execute("SELECT pgstac.create_collection(%s)", (json.dumps(collection("h")),))
    more = tmp_path / "more.ndjson"
    more.write_text(json.dumps(item("h-more", "h")) + "\n")
    path = tmp_path / "items.ndjson"
    lines = [item("h1", "h"), {"href": more.as_uri()}, item("h2", "h")]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    reasons = _refusals(monkeypatch)
    # WHEN it runs
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN the pointer is read by the load worker, never handed to the loader as an item
    assert reasons == []
    assert (summary.succeeded, summary.failed) == (3, 0)
    assert pgstac.item_ids("h") == ["h-more", "h1", "h2"]


def test_a_document_neither_loaded_nor_queued_counts_as_failed(pgstac):
    # A load straight from the input whose commit was lost (a server without durable commits
    # that crashed) leaves no trace in the queue: the run must not report it as a success.
    pipeline = LocalPipeline(pgstac.dsn, gen_workers=0)
    queues = pipeline.queues()
    summary = pipeline.summarise(queues, Enqueued(load_ids=["lost-with-its-commit"]), 0.0)
    queues.conn.close()
    assert (summary.documents, summary.succeeded, summary.failed) == (1, 0, 1)


def _rows(pgstac, query: str) -> list[tuple]:
    with pgstac.connect() as conn:
        return conn.execute(query).fetchall()


def versioned(item_id: str, platform: str) -> dict:
    doc = item(item_id, "v")
    doc["properties"]["platform"] = platform
    return doc


def test_a_later_line_wins_over_an_earlier_copy_of_the_item_when_both_are_queued(pgstac, tmp_path):
    # GIVEN a collection, then two versions of each of 30 items, the newer on the later line
    # (all queued: the collection is pending when they are read)
    path = tmp_path / "items.ndjson"
    lines = [collection("v")]
    lines += [versioned(f"v{n:02d}", "old") for n in range(30)]
    lines += [versioned(f"v{n:02d}", "new") for n in range(30)]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    # WHEN it runs
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN every item holds its later version
    assert summary.failed == 0
    platforms = _rows(
        pgstac,
        "SELECT DISTINCT content->'properties'->>'platform' FROM items WHERE collection = 'v'",
    )
    assert platforms == [("new",)]


def _delete(*ids: str) -> dict:
    return {"type": "Delete", "collection": "v", "ids": list(ids)}


def test_a_delete_line_removes_the_items_read_before_it(pgstac, tmp_path):
    # GIVEN a collection and items loaded by an earlier run
    first = tmp_path / "first.ndjson"
    first.write_text(
        "".join(
            json.dumps(d) + "\n" for d in [collection("v"), *(item(f"d{n}", "v") for n in range(5))]
        )
    )
    assert (
        LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(first)])).failed == 0
    )
    # WHEN a file deletes two of them, loads a new one, then deletes it and a missing id
    path = tmp_path / "changes.ndjson"
    lines = [_delete("d1", "d3"), item("new", "v"), item("later", "v"), _delete("new", "nowhere")]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN each delete applies to what was read before it, and counts in the summary
    assert (summary.failed, summary.items_deleted) == (0, 3)
    with pgstac.connect() as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM items WHERE collection = 'v'")}
    assert ids == {"d0", "d2", "d4", "later"}


def test_an_item_after_its_delete_in_the_file_is_loaded(pgstac, tmp_path):
    path = tmp_path / "items.ndjson"
    # (a changed copy: an identical line is the same message as the first, read once)
    lines = [collection("v"), item("x", "v"), _delete("x"), versioned("x", "again")]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    assert summary.failed == 0
    with pgstac.connect() as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE id = 'x'").fetchone()[0] == 1


def test_a_collection_and_its_items_in_one_file_load_straight_from_the_input(pgstac, tmp_path):
    # GIVEN the usual file: the collection first, then its items
    path = tmp_path / "items.ndjson"
    lines = [collection("v")] + [item(f"c{n:04d}", "v", x=n % 170) for n in range(2 * DIRECT_BATCH)]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    # WHEN it runs
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN everything landed, and no item waited for its collection in the queue (no lease)
    assert (summary.failed, summary.items_loaded, summary.collections_loaded) == (0, 6000, 1)
    with pgstac.connect() as conn:
        leased = conn.execute(
            "SELECT count(*) FROM stactools_ingest.messages WHERE receive_count > 0"
        ).fetchone()[0]
    assert leased == 0


def test_a_line_read_through_a_pointer_is_as_late_as_its_place_in_the_file(pgstac, tmp_path):
    # GIVEN an item, then a pointer to a file holding a newer version of it and a delete
    newer = tmp_path / "newer.ndjson"
    newer.write_text(json.dumps(versioned("p1", "new")) + "\n" + json.dumps(_delete("p2")) + "\n")
    path = tmp_path / "items.ndjson"
    lines = [
        collection("v"),
        versioned("p1", "old"),
        item("p2", "v"),
        {"href": newer.as_uri()},
    ]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    # WHEN it runs
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN what the pointer holds came later than the lines before it
    assert summary.failed == 0
    rows = _rows(
        pgstac, "SELECT id, content->'properties'->>'platform' FROM items WHERE collection = 'v'"
    )
    assert rows == [("p1", "new")]


def test_a_catalog_line_loads_beside_the_collections(pgstac, tmp_path):
    # GIVEN a file with a Catalog (multi-tenant catalogs), a collection and an item
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "tenant",
        "description": "groups collections",
        "links": [],
    }
    path = tmp_path / "docs.ndjson"
    lines = [catalog, collection("t"), item("t1", "t")]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    # WHEN it runs
    summary = LocalPipeline(pgstac.dsn, gen_workers=0).run(records=read_inputs([str(path)]))
    # THEN all three landed: the catalog in the collections table, as eoapi-cdk's loader does
    assert (summary.failed, summary.collections_loaded, summary.items_loaded) == (0, 2, 1)
    with pgstac.connect() as conn:
        kinds = conn.execute("SELECT id, content->>'type' FROM collections ORDER BY id").fetchall()
    assert kinds == [("t", "Collection"), ("tenant", "Catalog")]


def test_documents_without_a_file_load_straight_and_failures_keep_their_body(pgstac):
    # GIVEN documents that come from no file (stdin, a crawl): a collection, items, one bad
    records = [InputRecord("crawl:0", collection("s"))]
    records += [InputRecord(f"crawl:{n}", item(f"s{n}", "s")) for n in range(1, 2001)]
    bad = item("bad", "s")
    bad["bbox"] = [10, 10, 0, 0]  # outside its geometry
    records.append(InputRecord("crawl:bad", bad))
    # WHEN they run
    summary = LocalPipeline(pgstac.dsn, gen_workers=0, max_receives=1).run(records=records)
    # THEN the good ones loaded straight (never leased from the queue), and the bad one was
    # dead-lettered with its body, so `dlq list` shows it and a redrive can load it once mended
    assert (summary.items_loaded, summary.failed, summary.dead_letters) == (2000, 1, 1)
    with pgstac.connect() as conn:
        leased = conn.execute(
            "SELECT m.source, b.body::jsonb->>'id' FROM stactools_ingest.messages m "
            "LEFT JOIN stactools_ingest.message_bodies b USING (queue, id) "
            "WHERE m.receive_count > 0"
        ).fetchall()
    assert leased == [("crawl:bad", "bad")]
