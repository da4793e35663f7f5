"""The local queue keeps SQS's promises: leases belong to their holder, receives need a body."""

from __future__ import annotations

import time

import pytest

from stactools_ingest.queue import GEN, LOAD, LocalQueues
from stactools_ingest.target import connect


@pytest.fixture
def queues(pgstac):
    """Two handles on the queue, as two workers have; leases expire at once."""
    a = LocalQueues(connect(pgstac.dsn), visibility_timeout=0.0, max_receives=3)
    b = LocalQueues(connect(pgstac.dsn), visibility_timeout=0.0, max_receives=3)
    yield a, b
    a.conn.close()
    b.conn.close()


def _state(q: LocalQueues, mid: str) -> tuple:
    return q.conn.execute(
        """
        SELECT m.state, m.receive_count, b.body IS NOT NULL
        FROM stactools_ingest.messages m
        LEFT JOIN stactools_ingest.message_bodies b USING (queue, id)
        WHERE m.queue = %s AND m.id = %s
        """,
        (LOAD, mid),
    ).fetchone()


def test_late_ack_of_an_expired_lease_leaves_the_new_holders_message(queues):
    a, b = queues
    a.send_many([(LOAD, "m1", {"type": "Feature", "id": "x"}, "in:1", 1)])
    # GIVEN worker A's lease expired and worker B now holds the message
    [late] = a.receive(LOAD, 10)
    time.sleep(0.01)
    [current] = b.receive(LOAD, 10)
    # WHEN A acknowledges late
    a.ack([late])
    # THEN nothing changed: B's message is still ready, with its body
    assert _state(a, "m1") == ("ready", 2, True)
    # AND a late fail changes nothing either
    assert a.fail(late, "too late") is False
    assert _state(a, "m1") == ("ready", 2, True)
    # AND B's ack is the one that counts
    b.ack([current])
    assert _state(a, "m1") == ("done", 2, False)


def test_late_ack_never_wedges_a_message_past_max_receives(queues):
    a, b = queues
    a.send_many([(LOAD, "m2", {"type": "Feature", "id": "y"}, "in:2", 1)])
    [late] = a.receive(LOAD, 1)
    time.sleep(0.01)
    [current] = b.receive(LOAD, 1)
    a.ack([late])  # late: must not drop the body B needs
    b.fail(current, "transient trouble", retry_after=0)
    # THEN the message can still be received, with its body, until it is dead
    again = b.receive(LOAD, 1)
    assert [(m.id, m.body, m.receive_count) for m in again] == [
        ("m2", {"type": "Feature", "id": "y"}, 3)
    ]
    assert b.fail(again[0], "still failing", retry_after=0) is True
    assert _state(a, "m2") == ("dead", 3, True)
    assert a.pending() == {"gen": 0, "load": 0}


def test_a_message_without_body_is_never_received(queues):
    a, _ = queues
    a.conn.execute(
        "INSERT INTO stactools_ingest.messages (queue, id, source) VALUES (%s, 'orphan', 'x')",
        (LOAD,),
    )
    assert a.receive(LOAD, 10) == []
    assert _state(a, "orphan") == ("ready", 0, False)
    assert a.pending() == {"gen": 0, "load": 0}


def test_an_expired_lease_on_the_last_receive_is_dead_lettered(queues):
    a, b = queues
    a.send_many([(LOAD, "m3", {"type": "Feature", "id": "z"}, "in:3", 1)])
    for _ in range(3):  # every holder vanished without a verdict
        assert [m.id for m in a.receive(LOAD, 1)] == ["m3"]
        time.sleep(0.01)
    # WHEN the lease of the last allowed receive expires
    assert b.receive(LOAD, 1) == []
    # THEN the message is a dead letter saying why, as SQS moves it to the DLQ
    [letter] = b.dead_letters(LOAD)
    assert (letter.id, letter.receive_count) == ("m3", 3)
    assert letter.last_error == (
        "received 3 times without a verdict (the worker holding it stopped or exceeded the "
        "visibility timeout)"
    )


@pytest.mark.parametrize("stage", ["load", "item-load"])
def test_local_redrive_of_one_stage_leaves_the_other(queues, pgstac, stage):
    from test_run import cli

    a, _ = queues
    a.send_many([(GEN, "g1", {"package_name": "x"}, "in:1", 1), (LOAD, "l1", {}, "in:2", 1)])
    for queue in (GEN, LOAD):
        [msg] = a.receive(queue, 1)
        assert a.fail(msg, "bad", permanent=True) is True
    # WHEN only the load stage's dead letters are redriven
    result = cli("dlq", "redrive", "--all", "--stage", stage, "--dsn", pgstac.dsn)
    # THEN only the load message is back on its queue
    assert result.stdout.strip() == "redrove 1 messages; run `stactools-ingest run` to process them"
    assert [d.id for d in a.dead_letters()] == ["g1"]
    assert a.pending() == {"gen": 0, "load": 1}
