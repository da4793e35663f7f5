"""A local backfill (``inventory`` without ``--stack``) killed with SIGKILL and run again.

The package is a tiny real stactools plugin (tests/fake_package.py) run through uv by
the warm runner, so the backfill exercises the whole local path: inventory rows, item requests on
the gen queue, generation, hand-over to the load queue, loading into pgstac.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_package import COLLECTION, GROUP, build_wheel

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "stactools-ingest")
ROWS = 1000
WORKERS = 2


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _loaded(pgstac) -> int:
    with pgstac.connect() as conn:
        return conn.execute("SELECT count(*) FROM items WHERE collection = 'fake'").fetchone()[0]


def test_a_killed_local_backfill_resumes_and_submits_nothing_twice(pgstac, wheel, tmp_path):
    # GIVEN the collection, and an inventory of 1,000 rows (plus a comment and a blank line)
    docs = tmp_path / "collection.json"
    docs.write_text(json.dumps(COLLECTION))
    assert subprocess.run([CLI, "run", str(docs), "--dsn", pgstac.dsn], cwd=REPO).returncode == 0
    inventory = tmp_path / "rows.txt"
    ids = [f"tile-{n:06d}" for n in range(ROWS)]
    inventory.write_text("# synthetic rows\n\n" + "\n".join(ids) + "\n")
    made = tmp_path / "made.log"
    args = [
        CLI,
        "inventory",
        str(inventory),
        "--package",
        str(wheel),
        "--group",
        GROUP,
        "--arg-template",
        "id:{href}",
        "--workers",
        str(WORKERS),
        "--dsn",
        pgstac.dsn,
        "--json",
    ]
    env = {**os.environ, "FAKEGEN_LOG": str(made)}
    # WHEN the backfill is killed with SIGKILL a third of the way through
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _loaded(pgstac) < ROWS // 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the backfill made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    at_kill = _loaded(pgstac)
    assert at_kill < ROWS, "killed too late to test anything"
    # AND the same command runs again
    resumed = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # THEN it finishes with success, and every row's item is in pgstac exactly once
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["failed"] == 0
    with pgstac.connect() as conn:
        stored = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")]
        queued = conn.execute(
            "SELECT queue, count(*), count(DISTINCT id), "
            "count(*) FILTER (WHERE state <> 'done') FROM stactools_ingest.messages "
            "GROUP BY queue ORDER BY queue"
        ).fetchall()
    assert stored == ids
    # AND each row was submitted once: one request per row, one hand-over per request, all done
    assert queued == [("gen", ROWS, ROWS, 0), ("load", ROWS + 1, ROWS + 1, 0)]
    # AND only what was being generated at the kill was generated again (at most one per worker)
    made_counts = collections.Counter(made.read_text().split())
    assert set(made_counts) == set(ids)
    again = [i for i, n in made_counts.items() if n > 1]
    assert len(again) <= WORKERS, again
    # AND the rerun counted what it did: the requests left, nothing that was finished before
    assert summary["requests"] + summary["documents"] == summary["succeeded"]
    assert summary["items_loaded"] == ROWS - at_kill
