"""``stactools-ingest run`` end to end on a real pgstac, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from factories import collection, item
from geotiffs import (
    GLAD_COLLECTION,
    GLAD_EXTRAS,
    GLAD_GROUP,
    GLAD_PACKAGE,
    glad_collection_request,
    glad_item_request,
    glad_tiles,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "glad" / "requests.ndjson"
CLI = str(Path(sys.executable).parent / "stactools-ingest")
EXAMPLE_IDS = [f"{y}_{loc}" for y in (2015, 2020) for loc in ("40N_000E", "50N_010E", "50N_020E")]


def cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs
    )


def summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_example_lands_and_rerun_changes_nothing(pgstac):
    # WHEN the README's example runs
    first = cli("run", str(EXAMPLE), "--dsn", pgstac.dsn, "--json")
    # THEN it succeeds, and the six tiles are in pgstac with their collection
    assert first.returncode == 0, first.stderr
    s = summary(first)
    assert (s["requests"], s["succeeded"], s["failed"], s["items_loaded"]) == (7, 7, 0, 6)
    assert pgstac.item_ids(GLAD_COLLECTION) == EXAMPLE_IDS
    # AND running the finished file again loads nothing and still reports success
    again = cli("run", str(EXAMPLE), "--dsn", pgstac.dsn, "--json")
    assert again.returncode == 0, again.stderr
    s2 = summary(again)
    assert (s2["succeeded"], s2["failed"], s2["items_loaded"]) == (7, 0, 0)
    assert pgstac.item_ids(GLAD_COLLECTION) == EXAMPLE_IDS


def test_search_shows_what_landed(pgstac, tmp_path):
    docs = tmp_path / "docs.ndjson"
    docs.write_text(
        json.dumps(collection("c1"))
        + "\n"
        + "".join(json.dumps(item(f"s{n}", "c1", x=n * 10)) + "\n" for n in range(3))
    )
    assert cli("run", str(docs), "--dsn", pgstac.dsn, "-q").returncode == 0
    found = cli(
        "search", "--collection", "c1", "--bbox", "9,39,12,42", "--json", "--dsn", pgstac.dsn
    )
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["id"] for line in found.stdout.splitlines()] == ["s1"]


def test_killed_run_resumes_with_every_item_once(pgstac, tmp_path):
    # GIVEN prebuilt items and requests in one input
    tifs = glad_tiles(tmp_path, corners=[(10, 50), (20, 50), (30, 50), (40, 50)])
    lines = [glad_collection_request()] + [glad_item_request(t, tmp_path) for t in tifs]
    lines += [collection("bulk")] + [item(f"b{n:05d}", "bulk", x=n % 170) for n in range(3000)]
    path = tmp_path / "mixed.ndjson"
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    # WHEN the run is SIGKILLed once it has started loading
    proc = subprocess.Popen(
        [CLI, "run", str(path), "--dsn", pgstac.dsn, "--workers", "1", "--batch-size", "500", "-q"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while pgstac.count() == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert pgstac.count() < 3004
    # AND the same command runs again
    again = cli("run", str(path), "--dsn", pgstac.dsn, "--workers", "1", "--json")
    # THEN everything is there exactly once
    assert again.returncode == 0, again.stderr
    assert pgstac.count("bulk") == 3000
    assert len(pgstac.item_ids(GLAD_COLLECTION)) == 4
    with pgstac.connect() as conn:
        dupes = conn.execute("SELECT id FROM items GROUP BY id HAVING count(*) > 1").fetchall()
    assert dupes == []


def test_bad_request_dead_letters_then_redrive_after_fix(pgstac, tmp_path):
    # GIVEN a request for a tile that does not exist yet
    glad_tiles(tmp_path)  # the collection's other tiles exist
    missing = tmp_path / "2020" / "30N_050E.tif"
    requests = tmp_path / "requests.ndjson"
    requests.write_text(
        json.dumps(glad_collection_request())
        + "\n"
        + json.dumps(glad_item_request(missing, tmp_path))
        + "\n"
    )
    # WHEN it runs
    result = cli("run", str(requests), "--dsn", pgstac.dsn, "--json", "--max-receives", "2")
    # THEN it exits non-zero and the request is a dead letter with the package's reason
    assert result.returncode == 1
    assert summary(result)["dead_letters"] == 1
    listed = cli("dlq", "list", "--json", "--dsn", pgstac.dsn)
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["queue"] == "gen"
    assert letter["source"] == f"{requests}:2"
    assert "30N_050E.tif" in letter["reason"]
    assert "create-item" in letter["reason"]
    shown = cli("dlq", "show", letter["id"][:10], "--dsn", pgstac.dsn)
    assert shown.returncode == 0 and "30N_050E.tif" in shown.stdout
    # WHEN the cause is fixed and the dead letter redriven
    from geotiffs import write_tile

    write_tile(missing, 50, 30)
    assert "redrove 1" in cli("dlq", "redrive", "--all", "--dsn", pgstac.dsn).stdout
    rerun = cli("run", str(requests), "--dsn", pgstac.dsn, "--json")
    # THEN it lands
    assert rerun.returncode == 0, rerun.stderr
    assert pgstac.item_ids(GLAD_COLLECTION) == ["2020_30N_050E"]
    assert cli("dlq", "list", "--json", "--dsn", pgstac.dsn).stdout == ""


def test_missing_file_is_one_line_and_nothing_runs(pgstac, tmp_path):
    result = cli("run", str(tmp_path / "nope.ndjson"), "--dsn", pgstac.dsn)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.ndjson'}: no such file"


def test_a_file_named_in_bytes_that_are_not_utf8_is_one_line_and_nothing_runs(pgstac, tmp_path):
    # GIVEN an input file whose name is not UTF-8 (Latin-1 "é")
    odd = os.fsencode(tmp_path) + b"/caf\xe9.ndjson"
    with open(odd, "wb") as f:
        f.write(json.dumps(item("x1", "x")).encode() + b"\n")
    # WHEN it runs
    result = subprocess.run(
        [CLI.encode(), b"run", odd, b"--dsn", pgstac.dsn.encode()], capture_output=True, timeout=60
    )
    # THEN one line says what to do, and nothing was queued
    assert result.returncode == 2
    [message] = result.stderr.decode().strip().splitlines()
    assert message.endswith(
        "caf\ufffd.ndjson: the file's path is not valid UTF-8; rename it (or the directory "
        "it is in)"
    )
    with pgstac.connect() as conn:
        assert conn.execute("SELECT to_regclass('stactools_ingest.messages')").fetchone() == (None,)


def test_malformed_line_is_reported_and_the_rest_runs(pgstac, tmp_path):
    path = tmp_path / "input.ndjson"
    path.write_text(
        json.dumps(collection("m"))
        + "\n"
        + json.dumps(item("m1", "m"))
        + "\n{oops\n"
        + json.dumps(item("m2", "m"))
        + "\n"
    )
    result = cli("run", str(path), "--dsn", pgstac.dsn, "--json")
    assert result.returncode == 1
    assert f"{path}:3: not valid JSON" in result.stderr
    s = summary(result)
    assert (s["succeeded"], s["input_errors"], s["failed"]) == (3, 1, 1)
    assert s["requests"] + s["documents"] == s["succeeded"] + s["failed"]
    assert pgstac.item_ids("m") == ["m1", "m2"]


def test_unknown_package_is_dead_lettered_with_reason(pgstac, tmp_path):
    path = tmp_path / "r.ndjson"
    path.write_text(
        json.dumps(
            {
                "package_name": "stactools-package-that-does-not-exist-0xdeadbeef",
                "group_name": "x",
                "create_item_args": ["y"],
                "collection_id": "c",
            }
        )
        + "\n"
    )
    result = cli("run", str(path), "--dsn", pgstac.dsn, "--json", "--max-receives", "1")
    assert result.returncode == 1
    listed = [
        json.loads(x) for x in cli("dlq", "list", "--json", "--dsn", pgstac.dsn).stdout.splitlines()
    ]
    assert len(listed) == 1
    assert "stactools-package-that-does-not-exist-0xdeadbeef" in listed[0]["reason"]


def test_database_unreachable_is_one_line(tmp_path):
    path = tmp_path / "r.ndjson"
    path.write_text(json.dumps(item("x")) + "\n")
    result = cli("run", str(path), "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot connect to postgresql://nobody@127.0.0.1:1/none")


def test_repeated_input_lines_count_once(pgstac, tmp_path):
    path = tmp_path / "twice.ndjson"
    line = json.dumps(item("t1", "t")) + "\n"
    path.write_text(json.dumps(collection("t")) + "\n" + line + line)
    result = cli("run", str(path), "--dsn", pgstac.dsn, "--json")
    assert result.returncode == 0, result.stderr
    s = summary(result)
    assert (s["documents"], s["succeeded"], s["failed"]) == (2, 2, 0)
    assert pgstac.item_ids("t") == ["t1"]


def test_an_item_is_known_by_its_line_and_lands_once_however_it_is_laid_out(pgstac, tmp_path):
    # GIVEN an item, and the same item laid out otherwise (keys reordered, spaces) in a
    # second file
    doc = item("t1", "t")
    compact = tmp_path / "compact.ndjson"
    compact.write_text(json.dumps(collection("t")) + "\n" + json.dumps(doc) + "\n")
    spaced = tmp_path / "spaced.ndjson"
    spaced.write_text(
        json.dumps(dict(reversed(doc.items())), indent=None, separators=(" , ", " : ")) + "\n"
    )
    # WHEN the first file runs, then again, then the second
    first = cli("run", str(compact), "--dsn", pgstac.dsn, "--json")
    again = cli("run", str(compact), "--dsn", pgstac.dsn, "--json")
    other = cli("run", str(spaced), "--dsn", pgstac.dsn, "--json")
    # THEN the same lines again are the same messages: nothing loads twice
    assert (first.returncode, again.returncode, other.returncode) == (0, 0, 0), other.stderr
    assert summary(first)["items_loaded"] == 1
    assert (summary(again)["succeeded"], summary(again)["items_loaded"]) == (2, 0)
    # AND another layout is another message, which loads the same item again: one row
    assert (summary(other)["succeeded"], summary(other)["items_loaded"]) == (1, 1)
    assert pgstac.item_ids("t") == ["t1"]


def test_run_reads_file_hrefs_but_not_a_fifo(pgstac, tmp_path):
    # GIVEN a collection, a pointer to a local NDJSON file and a pointer to a FIFO nobody writes
    items = tmp_path / "items.ndjson"
    items.write_text("".join(json.dumps(item(f"f{n}", "c1")) + "\n" for n in range(2)))
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    docs = tmp_path / "docs.ndjson"
    docs.write_text(
        json.dumps(collection("c1"))
        + "\n"
        + json.dumps({"href": items.as_uri()})
        + "\n"
        + json.dumps({"href": str(fifo)})
        + "\n"
    )
    # WHEN run locally (the local run allows file hrefs)
    result = cli("run", str(docs), "--dsn", pgstac.dsn, "--json", "--max-receives", "1")
    # THEN the file's items land and the FIFO is refused without hanging the run
    s = summary(result)
    assert (s["succeeded"], s["failed"], s["items_loaded"]) == (2, 1, 2), result.stderr
    assert pgstac.item_ids("c1") == ["f0", "f1"]
    assert f"{fifo}: not a regular file; nothing was read" in result.stderr


def test_poison_records_are_dead_lettered_at_once_and_the_rest_loads(pgstac, tmp_path):
    # GIVEN records that can never load: a NUL in a collection id, an href that is no URL
    path = tmp_path / "poison.ndjson"
    lines = [
        collection("p"),
        item("p1", "p"),
        item("nul", "p\u0000x"),
        {"href": "http://[::1"},
        item("p2", "p"),
    ]
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    # WHEN it runs with retries allowed
    result = cli("run", str(path), "--dsn", pgstac.dsn, "--json", "--max-receives", "5")
    # THEN the good records load, the run ends, and only the two poison records failed
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    s = summary(result)
    assert (s["documents"], s["succeeded"], s["failed"], s["dead_letters"]) == (5, 3, 2, 2)
    assert pgstac.item_ids("p") == ["p1", "p2"]
    # AND each is a dead letter after its first attempt, with a reason naming it
    listed = cli("dlq", "list", "--json", "--dsn", pgstac.dsn)
    letters = {json.loads(x)["source"]: json.loads(x) for x in listed.stdout.splitlines()}
    assert sorted(letters) == [f"{path}:3", f"{path}:4"]
    assert [letters[s]["receive_count"] for s in sorted(letters)] == [1, 1]
    assert "nul" in letters[f"{path}:3"]["reason"]
    assert "http://[::1" in letters[f"{path}:4"]["reason"]


def _dead_item(pgstac, tmp_path) -> None:
    """An item whose collection is missing, dead-lettered."""
    early = tmp_path / "early.ndjson"
    early.write_text(json.dumps(item("late1", "late")) + "\n")
    first = cli("run", str(early), "--dsn", pgstac.dsn, "--json", "--max-receives", "1")
    assert (first.returncode, summary(first)["dead_letters"]) == (1, 1), first.stderr


def _redrive(pgstac) -> None:
    redrove = cli("dlq", "redrive", "--all", "--dsn", pgstac.dsn)
    assert redrove.stdout.strip() == (
        "redrove 1 messages; run `stactools-ingest run` to process them"
    )


def test_run_without_files_processes_what_dlq_redrive_put_back(pgstac, tmp_path):
    # GIVEN a dead letter whose cause is then fixed (its collection loaded), and redriven
    _dead_item(pgstac, tmp_path)
    fix = tmp_path / "fix.ndjson"
    fix.write_text(json.dumps(collection("late")) + "\n")
    assert cli("run", str(fix), "--dsn", pgstac.dsn, "-q").returncode == 0
    _redrive(pgstac)
    # WHEN `run` runs with no files, as redrive's message says
    result = cli("run", "--dsn", pgstac.dsn, "--json")
    # THEN it processes the redriven message, counts it, and succeeds
    assert result.returncode == 0, result.stderr
    s = summary(result)
    assert (s["requests"], s["documents"], s["succeeded"], s["failed"]) == (0, 1, 1, 0)
    assert pgstac.item_ids("late") == ["late1"]


def test_a_redriven_message_that_dies_again_fails_the_run(pgstac, tmp_path):
    # GIVEN a redriven dead letter whose cause is not fixed
    _dead_item(pgstac, tmp_path)
    _redrive(pgstac)
    # WHEN another file runs
    other = tmp_path / "other.ndjson"
    other.write_text(json.dumps(collection("other")) + "\n")
    result = cli("run", str(other), "--dsn", pgstac.dsn, "--json", "--max-receives", "1")
    # THEN the summary counts both, the dead letter included, and the exit code says so
    assert result.returncode == 1, result.stderr
    s = summary(result)
    assert (s["documents"], s["succeeded"], s["failed"], s["dead_letters"]) == (2, 1, 1, 1)
    assert s["requests"] + s["documents"] == s["succeeded"] + s["failed"]


def test_pretty_printed_json_with_one_syntax_error_is_one_error(pgstac, tmp_path):
    # GIVEN a pretty-printed FeatureCollection with one missing comma
    text = json.dumps({"type": "FeatureCollection", "features": [item("j1", "j")]}, indent=2)
    broken = text.replace('"stac_version": "1.0.0",', '"stac_version": "1.0.0"', 1)
    line = text[: text.index('"stac_version": "1.0.0",')].count("\n") + 2
    path = tmp_path / "items.json"
    path.write_text(broken)
    # WHEN it runs
    result = cli("run", str(path), "--dsn", pgstac.dsn, "--json")
    # THEN one error names the line and column of the syntax error
    assert result.returncode == 1
    [message] = result.stderr.strip().splitlines()
    assert message.startswith(f"{path}:{line}:7: not valid JSON: unexpected character")
    s = summary(result)
    assert (s["documents"], s["input_errors"], s["failed"]) == (1, 1, 1)


def test_inventory_without_a_stack_runs_the_local_pipeline(pgstac, tmp_path):
    # GIVEN the collection in pgstac and a list of two tiles' paths
    tifs = glad_tiles(tmp_path)
    setup = tmp_path / "collection.ndjson"
    setup.write_text(json.dumps(glad_collection_request()) + "\n")
    assert cli("run", str(setup), "--dsn", pgstac.dsn, "-q").returncode == 0
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{t}\n" for t in tifs))
    extras = [arg for extra in GLAD_EXTRAS for arg in ("--extra-package", extra)]
    args = [
        "inventory", str(urls), "--package", GLAD_PACKAGE, "--group", GLAD_GROUP, *extras,
        "--option", f"href-format={tmp_path}/{{year}}/{{loc}}.tif", "--dsn", pgstac.dsn, "--json",
    ]  # fmt: skip
    # WHEN the inventory runs with no --stack
    result = cli(*args)
    # THEN its requests ran here, and their items are in pgstac
    assert result.returncode == 0, result.stderr
    assert summary(result)["items_loaded"] == 2
    assert pgstac.item_ids(GLAD_COLLECTION) == ["2020_50N_010E", "2020_50N_020E"]
    # AND running it again submits nothing new (the local queue's ids come from content)
    again = cli(*args)
    assert again.returncode == 0 and summary(again)["items_loaded"] == 0
