"""``run`` outlives a database restart: it waits, reconnects and finishes with every item once.

The session's server is shared by every test, so these restart a server of their own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from factories import collection, item
from test_run import CLI, REPO

from stactools_ingest.embedded import EmbeddedServer, _ensure_server_user, _run

N_ITEMS = 4000


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedServer]:
    """A server only this module uses, so restarting it disturbs no other test."""
    home = Path(tempfile.mkdtemp(prefix="stactools-ingest-restart-"))
    home.chmod(0o755)
    server = EmbeddedServer(home, durable=False)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _restart(server: EmbeddedServer, mode: str) -> None:
    """pg_ctl restart as the server's user; the port is kept (postmaster.opts).

    ``-l`` matters: without it the new postmaster keeps pg_ctl's stdout pipe open for ever.
    """
    bindir = Path(json.loads(server.state_file.read_text())["bindir"])
    log = server.home / "server.log"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(log)]
    _run(
        [*pg_ctl, "-m", mode, "-w", "-t", "60", "restart"],
        user=_ensure_server_user(),
        timeout=120,
    )


def _count(server: EmbeddedServer, dbname: str) -> int:
    try:
        with psycopg.connect(**server.conninfo(dbname), connect_timeout=2) as conn:
            return conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]
    except psycopg.OperationalError:
        return 0


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_run_survives_a_database_restart(own_server, tmp_path, mode):
    dbname = f"restart_{mode}"
    own_server.ensure_database(dbname)
    path = tmp_path / "items.ndjson"
    lines = [collection("r")] + [item(f"r{n:05d}", "r", x=n % 170) for n in range(N_ITEMS)]
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    # GIVEN a run that has started loading
    proc = subprocess.Popen(
        [CLI, "run", str(path), "--dsn", own_server.dsn(dbname), "--batch-size", "100", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _count(own_server, dbname) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before the restart"
    # WHEN the database restarts under it
    restarter = threading.Thread(target=_restart, args=(own_server, mode))
    restarter.start()
    restarter.join()
    stdout, stderr = proc.communicate(timeout=300)
    # THEN it finishes with exit 0 and every item exactly once
    assert proc.returncode == 0, stderr
    s = json.loads(stdout.strip().splitlines()[-1])
    assert (s["documents"], s["succeeded"], s["failed"]) == (N_ITEMS + 1, N_ITEMS + 1, 0)
    with psycopg.connect(**own_server.conninfo(dbname)) as conn:
        rows = conn.execute("SELECT id, count(*) FROM pgstac.items GROUP BY id").fetchall()
    assert len(rows) == N_ITEMS
    assert {n for _, n in rows} == {1}
