"""``stactools_ingest.aws_dlq`` against moto: peeking at dead letters and redriving them."""

from __future__ import annotations

import json

from moto_stack import Wrapped

from stactools_ingest.aws_dlq import list_dead_letters, redrive_dead_letters


def test_list_dead_letters_peeks_without_consuming(deployed):
    gen = [json.dumps({"n": i}) for i in range(3)]
    load = [json.dumps({"m": i}) for i in range(12)]
    deployed.send("gen", "dlq", gen)
    deployed.send("load", "dlq", load)

    letters = list_dead_letters(deployed.outputs, sqs=deployed.sqs)

    assert [(d["stage"], d["body"]) for d in letters] == [
        *(("gen", b) for b in gen),
        *(("load", b) for b in load),
    ]
    assert set(letters[0]) == {
        "stage",
        "message_id",
        "body",
        "receive_count",
        "sent_at",
        "reason",
    }
    assert letters[0]["receive_count"] == 1
    assert letters[0]["sent_at"].endswith("+00:00")
    assert len({d["message_id"] for d in letters}) == 15
    # nothing consumed, and everything visible again at once
    assert deployed.drain("gen", "dlq") == gen
    assert sorted(deployed.drain("load", "dlq")) == sorted(load)


def test_list_dead_letters_by_stage_and_limit(deployed):
    deployed.send("gen", "dlq", ["g1", "g2"])
    deployed.send("load", "dlq", [f"l{i}" for i in range(12)])
    assert [d["body"] for d in list_dead_letters(deployed.outputs, "gen", sqs=deployed.sqs)] == [
        "g1",
        "g2",
    ]
    limited = list_dead_letters(deployed.outputs, "load", limit=11, sqs=deployed.sqs)
    assert [d["body"] for d in limited] == [f"l{i}" for i in range(11)]
    assert list_dead_letters(deployed.outputs, None, limit=1, sqs=deployed.sqs)[0]["body"] == "g1"
    assert deployed.depth("load", "dlq") == 12


def test_redrive_moves_dead_letters_back_by_hand_when_move_tasks_are_missing(deployed):
    # GIVEN 23 dead letters on ItemGen's DLQ and one on ItemLoad's (moto has no move tasks)
    bodies = [json.dumps({"request": i}) for i in range(23)]
    deployed.send("gen", "dlq", bodies[1:])
    deployed.sqs.send_message(
        QueueUrl=deployed.url("gen", "dlq"),
        MessageBody=bodies[0],
        MessageAttributes={"origin": {"DataType": "String", "StringValue": "test"}},
    )
    deployed.send("load", "dlq", ["stays"])
    # WHEN ItemGen's are redriven
    moved = redrive_dead_letters(deployed.outputs, "gen", sqs=deployed.sqs)
    # THEN all 23 are on the ItemGen queue, none on its DLQ, and ItemLoad's DLQ is untouched
    assert moved == 23
    received = []
    while batch := deployed.sqs.receive_message(
        QueueUrl=deployed.url("gen"), MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        received += batch
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    first = next(m for m in received if m["Body"] == bodies[0])
    assert first["MessageAttributes"]["origin"]["StringValue"] == "test"
    assert deployed.depth("gen", "dlq") == 0
    assert deployed.drain("load", "dlq") == ["stays"]


def test_redrive_both_stages(deployed):
    deployed.send("gen", "dlq", ["a", "b"])
    deployed.send("load", "dlq", ["c"])
    assert redrive_dead_letters(deployed.outputs, sqs=deployed.sqs) == 3
    assert sorted(deployed.drain("gen")) == ["a", "b"]
    assert deployed.drain("load") == ["c"]
    assert redrive_dead_letters(deployed.outputs, sqs=deployed.sqs) == 0


def test_redrive_never_deletes_a_message_whose_copy_was_refused(deployed):
    # GIVEN SQS refuses the first entry of every send batch
    bodies = [f"m{i}" for i in range(25)]
    deployed.send("load", "dlq", bodies)

    def send_message_batch(QueueUrl, Entries):
        ok = deployed.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries[1:])
        failed = [{"Id": Entries[0]["Id"], "Code": "InternalError", "SenderFault": False}]
        return {"Successful": ok["Successful"], "Failed": failed}

    sqs = Wrapped(deployed.sqs, send_message_batch=send_message_batch)
    # WHEN redriving
    moved = redrive_dead_letters(deployed.outputs, "load", sqs=sqs)
    # THEN batches of 10, 10, 5 each lost one copy: 22 moved, the 3 refused are still dead letters
    assert moved == 22
    on_queue = deployed.drain("load")
    assert len(on_queue) == 22
    assert deployed.depth("load", "dlq") == 3
    assert sorted(on_queue + [b for b in bodies if b not in on_queue]) == sorted(bodies)


def test_redrive_prefers_a_message_move_task(deployed):
    deployed.send("gen", "dlq", ["a", "b", "c"])
    calls: list[dict] = []
    sqs = Wrapped(deployed.sqs, start_message_move_task=lambda **kw: calls.append(kw) or {})
    assert redrive_dead_letters(deployed.outputs, sqs=sqs) == 3
    assert calls == [
        {
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:ItemGen-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:ItemGen-queue",
        }
    ]
    assert deployed.depth("gen", "dlq") == 3  # the task (not us) moves them
