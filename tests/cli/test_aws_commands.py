"""``submit``, ``inventory`` and ``status`` through click, against the emulated ingestion stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from factories import collection, item
from moto_stack import STACK, Wrapped

from stactools_ingest.aws_stack import StackNotFound
from stactools_ingest.checkpoint import CheckpointMismatch
from stactools_ingest.commands import inventory, status, submit
from stactools_ingest.inputs import InputFileError

SUBMIT = submit.submit
INVENTORY = inventory.inventory
STATUS = status.status

REQUEST = {
    "package_name": "stactools-glad-glclu2020",
    "group_name": "gladglclu2020",
    "create_item_args": ["https://example.com/2020_40N_000E.tif"],
    "create_item_options": {},
    "collection_id": "glad",
}
COLLECTION_REQUEST = {
    "package_name": "stactools-glad-glclu2020",
    "group_name": "gladglclu2020",
    "create_collection_args": [],
}


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Default checkpoints go to this test's home, not the repository's."""
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(command, args: list[str], input: str | None = None) -> Result:
    return CliRunner().invoke(command, args, input=input)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_submit_routes_requests_and_stac_and_reports_bad_lines(deployed, tmp_path):
    # GIVEN an NDJSON file mixing requests and STAC documents, with one malformed line (4)
    # and one invalid request (6)
    fc = {"type": "FeatureCollection", "features": [item("f1", "glad"), item("f2", "glad")]}
    good_request_2 = {**REQUEST, "create_item_args": ["https://example.com/2020_50N_010E.tif"]}
    path = write_lines(
        tmp_path / "mixed.ndjson",
        [
            json.dumps(COLLECTION_REQUEST),
            json.dumps(REQUEST),
            json.dumps(collection("glad")),
            '{"type": "Feature", "id": ',
            "",
            json.dumps({**REQUEST, "create_item_args": "not-a-list"}),
            json.dumps(item("i1", "glad")),
            json.dumps(fc),
            json.dumps(good_request_2),
        ],
    )
    # WHEN submitted
    result = invoke(SUBMIT, [str(path), "--stack", STACK, "--json"])
    # THEN it fails overall, naming each bad line by file and line ...
    assert result.exit_code == 1
    assert isinstance(result.exception, submit.NotAllPublished)
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"{path}:4: not valid JSON: ")
    assert errors[1].startswith(f"{path}:6: invalid ItemRequest: create_item_args")
    # ... and everything else went to the right topic
    assert json.loads(result.stdout)["published"] == 6
    assert json.loads(result.stdout)["failed"] == 2
    assert [e["source"] for e in json.loads(result.stdout)["errors"]] == [f"{path}:4", f"{path}:6"]
    assert deployed.published("gen") == [COLLECTION_REQUEST, REQUEST, good_request_2]
    assert deployed.published("load") == [collection("glad"), item("i1", "glad"), fc]


def test_submit_reads_json_documents_arrays_and_stdin(deployed, tmp_path):
    pretty = tmp_path / "collection.json"
    pretty.write_text(json.dumps(collection("c"), indent=2))
    array = tmp_path / "items.json"
    array.write_text(json.dumps([item("a", "c"), item("b", "c")], indent=2))
    result = invoke(
        SUBMIT, [str(pretty), str(array), "-", "--stack", STACK], input=json.dumps(REQUEST) + "\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("published 4, failed 0 in ")
    assert deployed.published("load") == [collection("c"), item("a", "c"), item("b", "c")]
    assert deployed.published("gen") == [REQUEST]


def test_submit_missing_file_publishes_nothing(deployed, tmp_path):
    good = write_lines(tmp_path / "good.ndjson", [json.dumps(REQUEST)])
    result = invoke(SUBMIT, [str(good), str(tmp_path / "missing.ndjson"), "--stack", STACK])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputFileError)
    assert str(result.exception) == f"{tmp_path / 'missing.ndjson'}: no such file"
    assert deployed.published("gen") == []


def test_submit_unknown_stack_names_it(deployed, tmp_path):
    good = write_lines(tmp_path / "good.ndjson", [json.dumps(REQUEST)])
    result = invoke(SUBMIT, [str(good), "--stack", "nope"])
    assert isinstance(result.exception, StackNotFound)
    assert "stack 'nope' not found" in str(result.exception)


def test_main_prints_one_error_line_and_exits_non_zero(deployed, tmp_path, monkeypatch, capsys):
    from stactools_ingest import cli

    try:
        cli._register()
    except ImportError as e:  # another command module is still being written
        pytest.skip(f"not every command module exists yet: {e}")
    missing = tmp_path / "missing.ndjson"
    monkeypatch.setattr(sys, "argv", ["stactools-ingest", "submit", str(missing), "--stack", STACK])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"


# --- inventory --------------------------------------------------------------------------------

INVENTORY_LINES = [
    "# GLAD tiles",
    "s3://bucket/2020_40N_000E.tif",
    "",
    "  s3://bucket/2020_50N_010E.tif  ",
]


def inventory_args(path: Path, *extra: str) -> list[str]:
    return [
        str(path),
        "--package",
        "stactools-glad-glclu2020",
        "--group",
        "gladglclu2020",
        "--collection",
        "glad",
        "--option",
        "href-format=s3://bucket/{loc}.tif",
        "--extra-package",
        "affine<3",
        *extra,
    ]


def expected_request(href: str) -> dict:
    return {
        "package_name": "stactools-glad-glclu2020",
        "group_name": "gladglclu2020",
        "collection_id": "glad",
        "extra_packages": ["affine<3"],
        "create_item_args": [href],
        "create_item_options": {"href-format": "s3://bucket/{loc}.tif"},
    }


def test_inventory_publishes_one_item_request_per_href(deployed, tmp_path):
    path = write_lines(tmp_path / "urls.txt", INVENTORY_LINES)
    result = invoke(INVENTORY, inventory_args(path, "--stack", STACK, "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["published"] == 2
    assert deployed.published("gen") == [
        expected_request("s3://bucket/2020_40N_000E.tif"),
        expected_request("s3://bucket/2020_50N_010E.tif"),
    ]
    assert deployed.published("load") == []


def test_inventory_dry_run_prints_requests_and_applies_the_template(tmp_path):
    path = write_lines(tmp_path / "urls.txt", INVENTORY_LINES)
    result = invoke(INVENTORY, inventory_args(path, "--dry-run", "--arg-template", "/vsis3/{href}"))
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        expected_request("/vsis3/s3://bucket/2020_40N_000E.tif"),
        expected_request("/vsis3/s3://bucket/2020_50N_010E.tif"),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--option", "no-equals-sign", "--dry-run"], "'no-equals-sign' is not KEY=VALUE"),
        (["--arg-template", "{url}", "--dry-run"], "must contain {href}"),
        (["--checkpoint", "x.json"], "--checkpoint is for --stack"),
        (["--no-checkpoint"], "--checkpoint is for --stack"),
    ],
)
def test_inventory_rejects_bad_options(tmp_path, extra, message):
    path = write_lines(tmp_path / "urls.txt", INVENTORY_LINES)
    result = invoke(INVENTORY, inventory_args(path, *extra))
    assert result.exit_code == 2
    assert message in result.stderr


def test_inventory_missing_file(tmp_path):
    result = invoke(INVENTORY, inventory_args(tmp_path / "nope.txt", "--dry-run"))
    assert isinstance(result.exception, InputFileError)


# --- status -----------------------------------------------------------------------------------


def test_status_shows_depths_in_flight_and_dead_letters(deployed):
    deployed.send("gen", "queue", ["a", "b", "c"])
    deployed.sqs.receive_message(QueueUrl=deployed.url("gen"), MaxNumberOfMessages=1)
    deployed.send("load", "dlq", ["x", "y"])

    as_json = invoke(STATUS, ["--stack", STACK, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "gen": {"queued": 2, "in_flight": 1, "dead_letters": 0},
        "load": {"queued": 0, "in_flight": 0, "dead_letters": 2},
    }

    table = invoke(STATUS, ["--stack", STACK])
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.stdout.splitlines() if "Item" in line]
    assert [[c for c in row if c not in "│┃"] for row in rows] == [
        ["ItemGen", "2", "1", "0"],
        ["ItemLoad", "0", "0", "2"],
    ]


def test_status_unknown_stack(deployed):
    result = invoke(STATUS, ["--stack", "nope"])
    assert isinstance(result.exception, StackNotFound)


# --- the dlq command on a stack (its module is another's; this checks it meets aws_ops) ------


def test_dlq_list_and_redrive_on_the_stack(deployed):
    from stactools_ingest import cli

    cli._register()
    deployed.send("gen", "dlq", [json.dumps(REQUEST)])
    deployed.send("load", "dlq", [json.dumps(item("i1", "glad"))])

    listed = invoke(cli.cli, ["dlq", "list", "--stack", STACK, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["stage"], json.loads(r["body"])) for r in rows] == [
        ("gen", REQUEST),
        ("load", item("i1", "glad")),
    ]

    redriven = invoke(cli.cli, ["dlq", "redrive", "--stack", STACK, "--stage", "load"])
    assert redriven.exit_code == 0, redriven.output
    assert redriven.stdout == "redrove 1 messages\n"
    assert [json.loads(b) for b in deployed.drain("load")] == [item("i1", "glad")]
    assert deployed.depth("gen", "dlq") == 1


def test_dlq_list_on_the_stack_shows_the_full_reason(deployed):
    from stactools_ingest import cli

    cli._register()
    # GIVEN a record a stage dead-lettered itself, with its reason and cause line
    reason = (
        "request stactools-x/x a.tif: stac x create-item exited 2 " + "detail " * 40 + "\n"
        "caused by: FileNotFoundError: a.tif"
    )
    deployed.sqs.send_message(
        QueueUrl=deployed.url("gen", "dlq"),
        MessageBody=json.dumps(REQUEST),
        MessageAttributes={
            "error": {"DataType": "String", "StringValue": reason},
            "stage": {"DataType": "String", "StringValue": "item-gen"},
        },
    )
    # WHEN listed, as text and as JSON
    text = invoke(cli.cli, ["dlq", "list", "--stack", STACK, "--stage", "gen"])
    as_json = invoke(cli.cli, ["dlq", "list", "--stack", STACK, "--stage", "gen", "--json"])
    # THEN the whole reason is shown, the cause line included
    assert text.exit_code == 0, text.output
    assert "caused by: FileNotFoundError: a.tif" in text.stdout
    assert "detail " * 40 in text.stdout
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert row["reason"] == reason


def test_a_killed_backfill_resumes_from_its_checkpoint_and_sends_nothing_twice(
    deployed, tmp_path, monkeypatch
):
    # GIVEN 95 hrefs, and a publisher killed at its fourth call (before SNS takes it)
    path = write_lines(tmp_path / "urls.txt", [f"s3://bucket/t{n:03d}.tif" for n in range(95)])
    checkpoint = tmp_path / "backfill.json"
    calls = []

    def killed_at_the_fourth(**kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # what a kill does to the loop, short of the process
        return deployed.sns.publish_batch(**kwargs)

    args = inventory_args(path, "--stack", STACK, "--checkpoint", str(checkpoint), "--workers", "1")
    monkeypatch.setattr(
        inventory, "sns_client", lambda: Wrapped(deployed.sns, publish_batch=killed_at_the_fourth)
    )
    killed = invoke(INVENTORY, args)
    assert killed.exit_code != 0
    assert json.loads(checkpoint.read_text())["done"] == 30
    # WHEN it runs again
    monkeypatch.setattr(inventory, "sns_client", lambda: deployed.sns)
    resumed = invoke(INVENTORY, [*args, "--json"])
    # THEN it sends only the rest, and every href arrives exactly once
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["published"] == 65
    hrefs = [r["create_item_args"][0] for r in deployed.published("gen")]
    assert sorted(hrefs) == [f"s3://bucket/t{n:03d}.tif" for n in range(95)]
    # AND a finished backfill sends nothing again
    again = invoke(INVENTORY, args)
    assert again.exit_code == 0 and "already submitted" in again.stderr
    assert deployed.published("gen") == []


def test_a_checkpoint_of_another_backfill_is_refused(deployed, tmp_path):
    path = write_lines(tmp_path / "urls.txt", INVENTORY_LINES)
    checkpoint = tmp_path / "backfill.json"
    args = inventory_args(path, "--stack", STACK, "--checkpoint", str(checkpoint))
    assert invoke(INVENTORY, args).exit_code == 0
    other = invoke(INVENTORY, [*args, "--suffix", ".xml"])
    assert isinstance(other.exception, CheckpointMismatch)
    assert "is for another backfill" in str(other.exception)


def test_a_backfill_keeps_a_checkpoint_without_being_asked(deployed, tmp_path, own_home):
    # GIVEN an inventory published to a stack, with no --checkpoint
    path = write_lines(tmp_path / "urls.txt", INVENTORY_LINES)
    args = inventory_args(path, "--stack", STACK)
    first = invoke(INVENTORY, args)
    assert first.exit_code == 0, first.output
    assert len(deployed.published("gen")) == 2
    # WHEN the same command runs again
    again = invoke(INVENTORY, args)
    # THEN it finds its checkpoint under the project's home and publishes nothing twice
    assert again.exit_code == 0 and "already submitted in full" in again.stderr
    assert deployed.published("gen") == []
    [saved] = (own_home / "checkpoints").glob("inventory-*.json")
    assert json.loads(saved.read_text())["finished"] is True
    # AND --no-checkpoint publishes everything again, as asked
    forced = invoke(INVENTORY, [*args, "--no-checkpoint"])
    assert forced.exit_code == 0 and len(deployed.published("gen")) == 2


def test_a_backfill_whose_inventory_changed_before_its_checkpoint_is_not_resumed(
    deployed, tmp_path, monkeypatch
):
    # GIVEN a backfill killed after its first 30 rows
    path = write_lines(tmp_path / "urls.txt", [f"s3://bucket/t{n:03d}.tif" for n in range(95)])
    calls = []

    def killed_at_the_fourth(**kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return deployed.sns.publish_batch(**kwargs)

    args = inventory_args(path, "--stack", STACK, "--workers", "1")
    monkeypatch.setattr(
        inventory, "sns_client", lambda: Wrapped(deployed.sns, publish_batch=killed_at_the_fourth)
    )
    assert invoke(INVENTORY, args).exit_code != 0
    deployed.published("gen")
    # WHEN a line is inserted before that point and it runs again
    lines = path.read_text().splitlines()
    write_lines(path, ["s3://bucket/new.tif", *lines])
    monkeypatch.setattr(inventory, "sns_client", lambda: deployed.sns)
    resumed = invoke(INVENTORY, args)
    # THEN it stops before publishing, rather than skip the row the insert pushed past 30
    assert isinstance(resumed.exception, CheckpointMismatch)
    assert "the source changed since checkpoint" in str(resumed.exception)
    assert deployed.published("gen") == []


def test_a_document_over_sns_limit_travels_through_the_payload_bucket(
    deployed, tmp_path, pgstac, monkeypatch
):
    # GIVEN an item of about 300 KiB (a long property), over SNS's 256 KiB
    big = item("big", "glad")
    big["properties"]["notes"] = "n" * 300_000
    path = write_lines(tmp_path / "big.ndjson", [json.dumps(collection("glad")), json.dumps(big)])
    # WHEN it is submitted to the stack
    result = invoke(SUBMIT, [str(path), "--stack", STACK, "--json"])
    # THEN it was published as a pointer to the stack's payload bucket
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["published"] == 2
    bodies = deployed.drain("load")
    messages = [json.loads(json.loads(b)["Message"]) for b in bodies]
    [pointer] = [m for m in messages if "href" in m]
    assert pointer["href"].startswith("s3://test-ingestion-payloads/payloads/glad/big-")
    # AND the load stage, reading it as it would on AWS, loads the whole item
    from factories import sqs_record

    from item_load import handler as load_handler
    from item_load.fetch import HrefFetcher, HrefPolicy

    monkeypatch.setattr(load_handler, "fetcher", HrefFetcher(HrefPolicy()))  # s3 and https
    load_handler.connections.discard()
    from factories import LambdaContext, sqs_event

    response = load_handler.handler(sqs_event([sqs_record(b) for b in bodies]), LambdaContext())
    load_handler.connections.discard()
    assert response == {"batchItemFailures": []}
    with pgstac.connect() as conn:
        notes = conn.execute(
            "SELECT length(content->'properties'->>'notes') FROM items WHERE id = 'big'"
        ).fetchone()
    assert notes == (300_000,)


def test_a_submission_is_one_id_the_ledger_counts_by(deployed, tmp_path, pgstac):
    from factories import LambdaContext, sqs_event, sqs_record

    from item_load import handler as load_handler

    # GIVEN a collection and three items, one of them without a datetime (ItemLoad refuses it)
    undated = {**item("i2", "glad"), "properties": {}}
    docs = [collection("glad"), item("i0", "glad"), item("i1", "glad"), undated]
    path = write_lines(tmp_path / "docs.ndjson", [json.dumps(d) for d in docs])
    # WHEN submitted, the summary names the submission
    result = invoke(SUBMIT, [str(path), "--stack", STACK, "--json"])
    assert result.exit_code == 0, result.output
    submission = json.loads(result.stdout)["submission_id"]
    assert submission.startswith("sub-")
    # AND every message carries it, as SNS delivers it to ItemLoad's queue
    bodies = deployed.drain("load")
    attributes = [json.loads(b)["MessageAttributes"]["submission_id"]["Value"] for b in bodies]
    assert attributes == [submission] * 4
    # WHEN ItemLoad takes them
    load_handler.connections.discard()
    try:
        load_handler.handler(sqs_event([sqs_record(b) for b in bodies]), LambdaContext())
    finally:
        load_handler.connections.discard()
    # THEN status --submission counts the whole submission by state
    asked = invoke(STATUS, ["--submission", submission, "--dsn", pgstac.dsn, "--json"])
    assert asked.exit_code == 0, asked.output
    counts = json.loads(asked.stdout)["counts"]
    assert (counts["loaded"], counts["failed"]) == (3, 1)
    other = invoke(STATUS, ["--submission", "sub-other", "--dsn", pgstac.dsn, "--json"])
    assert sum(json.loads(other.stdout)["counts"].values()) == 0
    # AND a person is told the command that asks the deployment about it
    again = invoke(SUBMIT, [str(path), "--stack", STACK])
    assert "status --submission sub-" in again.stdout and f"--stack {STACK})" in again.stdout


def test_a_resumed_backfill_keeps_its_submission(deployed, tmp_path):
    hrefs = write_lines(tmp_path / "hrefs.txt", [f"s3://b/{n}.tif" for n in range(3)])
    args = [str(hrefs), "--stack", STACK, "--package", "stactools-x", "--group", "x", "--json"]
    first = invoke(INVENTORY, args)
    assert first.exit_code == 0, first.output
    checkpoints = list((tmp_path / "home" / "checkpoints").glob("*.json"))
    [saved] = [json.loads(c.read_text()) for c in checkpoints]
    assert saved["submission_id"] == json.loads(first.stdout)["submission_id"]
