"""The local pipeline in-process: what commits together, and what survives a fault."""

from __future__ import annotations

import time

import pytest
from factories import collection, item

from stactools_ingest.inputs import InputRecord
from stactools_ingest.pipeline import LocalPipeline
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
