"""The embedded server as a new user meets it: wherever they stand, with one-line errors.

Every command here runs as a user runs it (a subprocess of the installed ``stactools-ingest``),
so what is asserted is exactly what a person sees: the exit code and the lines on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from factories import collection, item
from psycopg import sql

from stactools_ingest.embedded import EmbeddedServer, find_server

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "stactools-ingest")
FALLBACK_BASE = Path("/var/lib/stactools-ingest")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server-user switch happens as root")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new shell: no target chosen by variables, no venv of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PG") and k not in {"STACTOOLS_INGEST_HOME", "VIRTUAL_ENV"}
    }
    return {**env, **extra}


def cli(*args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env(**env)
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single line a failed command printed (a traceback would be many)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def stop_home(home: Path) -> None:
    """Stop a server left running under ``home`` (clean-up after a failed assertion)."""
    EmbeddedServer(home).stop()


@pytest.fixture
def home() -> Iterator[Path]:
    """An embedded-server home the server user can reach, stopped and removed afterwards."""
    outer = Path(tempfile.mkdtemp(prefix="stactools-ingest-home-"))  # pytest's tmp_path is 0700
    outer.chmod(0o755)
    yield outer / "home"
    stop_home(outer / "home")
    shutil.rmtree(outer, ignore_errors=True)


# -- 1. a home the server user can use, found again by every later command -----------------------


@as_root
def test_root_in_a_closed_directory_gets_a_reachable_home_found_by_every_command():
    # GIVEN root stands in a project directory the server user cannot enter
    outer = Path(tempfile.mkdtemp(prefix="closed-"))
    outer.chmod(0o700)
    project = outer / "my project é"
    project.mkdir()
    fallback = None
    try:
        # WHEN the first command starts the embedded server
        first = cli("local", "start", cwd=project)
        # THEN it works, and says once where the data went and why
        assert first.returncode == 0, first.stderr
        notes = [line for line in first.stderr.splitlines() if "cannot enter" in line]
        assert len(notes) == 1, first.stderr
        match = re.search(r"keeps its data in (\S+)", notes[0])
        assert match, notes[0]
        fallback = Path(match.group(1))
        assert fallback.parent == FALLBACK_BASE
        assert fallback.name.startswith("my-project-")
        assert f"cannot enter {outer}" in notes[0]
        dsn = first.stdout.strip()
        # AND every later command finds the same server, without saying it again
        again = cli("local", "start", cwd=project)
        assert again.returncode == 0 and again.stdout.strip() == dsn
        assert "cannot enter" not in again.stderr
        assert cli("local", "dsn", cwd=project).stdout.strip() == dsn
        status = cli("local", "status", cwd=project)
        assert status.returncode == 0
        assert status.stdout.splitlines()[0] == f"running  data: {fallback}"
        found = cli("search", "--collection", "nothing", cwd=project)
        assert found.returncode == 0, found.stderr
        assert found.stderr.strip() == "0 items shown"
        letters = cli("dlq", "list", cwd=project)
        assert letters.returncode == 0, letters.stderr
        assert letters.stderr.strip() == "0 dead letters"
        stopped = cli("local", "stop", cwd=project)
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopped")
        assert cli("local", "status", cwd=project).returncode == 3
    finally:
        if fallback is not None:
            stop_home(fallback)
            shutil.rmtree(fallback, ignore_errors=True)
        shutil.rmtree(outer, ignore_errors=True)


@as_root
def test_project_is_the_git_top_level(tmp_path):
    # GIVEN a git checkout the server user cannot enter, and a subdirectory of it
    tmp_path.chmod(0o700)
    subprocess.run(["git", "init", "-q", str(tmp_path / "clone")], check=True)
    sub = tmp_path / "clone" / "examples" / "glad"
    sub.mkdir(parents=True)
    # WHEN status runs from the top and from the subdirectory
    top = cli("local", "status", cwd=tmp_path / "clone")
    below = cli("local", "status", cwd=sub)
    # THEN both name the same home (not yet running: exit 3), keyed by the checkout
    assert (top.returncode, below.returncode) == (3, 3)
    assert top.stdout == below.stdout
    assert top.stdout.startswith(f"stopped  data: {FALLBACK_BASE}/clone-")


def test_home_variable_still_overrides(tmp_path):
    result = cli("local", "status", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(tmp_path / "h"))
    assert result.returncode == 3
    assert result.stdout.splitlines()[0] == f"stopped  data: {tmp_path / 'h'}"


# -- 2. the port survives stop/start; 3. no trust on TCP -----------------------------------------


def test_port_survives_restart_and_tcp_needs_the_password(home, tmp_path):
    # GIVEN a started server and the DSN it printed
    started = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    assert started.returncode == 0, started.stderr
    dsn = started.stdout.strip()
    assert cli("local", "dsn", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home)).stdout.strip() == dsn
    # WHEN it is stopped and started again
    assert cli("local", "stop", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home)).returncode == 0
    again = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    # THEN the saved DSN keeps working: same port, same password
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT pgstac.get_version()").fetchone()[0]
    # AND TCP without the password is refused (no trust for every local user)
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    assert params.pop("password", None), "the DSN carries the generated password"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**params, connect_timeout=5).close()
    assert (home / "password").stat().st_mode & 0o777 == 0o600
    hba = (home / "pgdata" / "pg_hba.conf").read_text().splitlines()
    assert not [
        line for line in hba if line.strip() and not line.startswith("#") and "trust" in line
    ]


def test_port_taken_at_restart_is_said_and_another_is_used(home, tmp_path):
    started = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    assert started.returncode == 0, started.stderr
    port = psycopg.conninfo.conninfo_to_dict(started.stdout.strip())["port"]
    assert cli("local", "stop", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home)).returncode == 0
    # GIVEN another program listens on the saved port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(port)))
        squatter.listen()
        # WHEN the server starts again
        again = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    # THEN it says so, and prints the DSN that now works
    assert again.returncode == 0, again.stderr
    [said] = [line for line in again.stderr.splitlines() if "in use" in line]
    new_port = psycopg.conninfo.conninfo_to_dict(again.stdout.strip())["port"]
    assert new_port != port
    assert said == (
        f"port {port} of the embedded pgstac is in use by another program; "
        f"it now listens on {new_port} (DSNs saved before no longer work)"
    )
    with psycopg.connect(again.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- 4. status, --version, --help ----------------------------------------------------------------


def test_status_exits_non_zero_when_stopped(tmp_path):
    result = cli("local", "status", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(tmp_path / "h"))
    assert result.returncode == 3
    assert result.stdout.startswith("stopped")


def test_version():
    result = cli("--version", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stactools-ingest, version 0.1.0"


def test_local_help_names_the_home_variable():
    result = cli("local", "--help", cwd=REPO)
    assert result.returncode == 0
    assert "STACTOOLS_INGEST_HOME" in result.stdout


# -- 5. one-line errors with an exit code, never a traceback -------------------------------------


@pytest.fixture
def plain_db(pgstac) -> Iterator[str]:
    """A DSN of a database on the test server without pgstac in it."""
    name = f"{pgstac.name}_plain"
    info = {**pgstac.conninfo, "dbname": "postgres"}
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    yield pgstac.server.dsn(name)
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname <> 'information_schema' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def test_run_on_a_database_without_pgstac_is_one_line_and_writes_nothing(plain_db, tmp_path):
    docs = tmp_path / "docs.ndjson"
    docs.write_text(json.dumps(collection("c1")) + "\n" + json.dumps(item("i1", "c1")) + "\n")
    result = cli("run", str(docs), "--dsn", plain_db, cwd=tmp_path)
    assert result.returncode == 3
    line = one_error_line(result)
    assert line.startswith("error: ")
    assert line.endswith(
        "has no pgstac (schema pgstac not found); migrate it first "
        "(pypgstac migrate) or point --dsn at a pgstac database"
    )
    password = psycopg.conninfo.conninfo_to_dict(plain_db).get("password")
    assert not password or password not in line
    assert _schemas(plain_db) == ["public"]


@pytest.mark.parametrize("command", [["search", "--collection", "c1"], ["dlq", "list"]])
def test_reading_a_database_without_pgstac_is_one_line(plain_db, tmp_path, command):
    result = cli(*command, "--dsn", plain_db, cwd=tmp_path)
    assert result.returncode == 3
    assert "has no pgstac (schema pgstac not found)" in one_error_line(result)
    assert _schemas(plain_db) == ["public"]


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("host=x port=notanumber", "port must be a number from 1 to 65535, not 'notanumber'"),
        (
            "postgresql://[bad",
            'end of string reached when looking for matching "]" in IPv6 host address in URI',
        ),
        ("host=127.0.0.1 dbname", 'missing "=" after "dbname" in connection info string'),
    ],
)
@pytest.mark.parametrize("command", [["search"], ["dlq", "list"], ["run", "docs.ndjson"]])
def test_malformed_dsn_is_one_line(tmp_path, dsn, reason, command):
    (tmp_path / "docs.ndjson").write_text(json.dumps(item("i1", "c1")) + "\n")
    result = cli(*command, "--dsn", dsn, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == f"error: malformed DSN: {reason}"


def test_malformed_dsn_in_pgstac_dsn_is_one_line(tmp_path):
    result = cli("search", cwd=tmp_path, PGSTAC_DSN="postgresql://[bad")
    assert result.returncode == 2
    assert one_error_line(result).startswith("error: malformed DSN: ")


# -- 6. the README's first command, verbatim, from a fresh clone in a closed directory -----------


@as_root
def test_readme_first_command_from_a_clone_in_a_closed_directory_as_root(tmp_path):
    # GIVEN a fresh clone of this checkout under a directory only root may enter
    tmp_path.chmod(0o700)
    clone = tmp_path / "stactools-ingest"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = clean_env()

    def uv_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["uv", "run", "stactools-ingest", *args],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=clone,
            env=env,
        )

    try:
        # WHEN the README's first command runs there, verbatim
        result = uv_run("run", "examples/glad/requests.ndjson")
        # THEN it succeeds with the summary the README shows
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(
            r"7 requests, 0 documents: 7 succeeded, 0 failed \(0 dead-lettered, "
            r"0 unusable input lines\); 6 items and 1 collections loaded in [0-9.]+ s",
            result.stdout.strip().splitlines()[-1],
        ), result.stdout
        assert "cannot enter" in result.stderr
        # AND search from the same directory finds the six items
        found = uv_run("search", "--collection", "glad-glclu2020-v2")
        assert found.returncode == 0, found.stderr
        assert sorted(line.split("\t")[1] for line in found.stdout.splitlines()) == sorted(
            f"{y}_{loc}" for y in (2015, 2020) for loc in ("40N_000E", "50N_010E", "50N_020E")
        )
        # AND local stop stops it
        stopped = uv_run("local", "stop")
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopped")
    finally:
        pointer = clone / ".stactools-ingest" / "home"  # where the chosen home is remembered
        if pointer.exists():
            fallback = Path(pointer.read_text().strip())
            stop_home(fallback)
            shutil.rmtree(fallback, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["--datetime", "garbage"],
            'invalid input syntax for type timestamp with time zone: "garbage"',
        ),
        (["--datetime", "2020-02-30T00:00:00Z"], 'date/time field value out of range: "2020-02-30'),
    ],
)
def test_search_pgstac_refuses_is_one_line(pgstac, tmp_path, args, reason):
    result = cli("search", *args, "--dsn", pgstac.dsn, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith(f"error: pgstac refused the search: {reason}")


def test_search_bbox_must_be_finite(pgstac, tmp_path):
    result = cli("search", "--bbox", "1,2,3,nan", "--dsn", pgstac.dsn, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--bbox': expected four finite numbers: minx,miny,maxx,maxy"
    )


# -- abuse: two first commands at once, a data directory from before passwords, odd pointers ---


def test_two_first_starts_at_once_share_one_server(home, tmp_path):
    env = clean_env(STACTOOLS_INGEST_HOME=str(home))
    procs = [
        subprocess.Popen(
            [CLI, "local", "start"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1]
    with psycopg.connect(outs[0]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_data_directory_from_before_passwords_is_secured_at_start(home, tmp_path):
    # GIVEN a data directory initialised with trust for everyone, as earlier versions did
    bindir = find_server(install=False)
    home.mkdir(parents=True)
    shutil.chown(home, "postgres")
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(bindir / "initdb"),
            "-D",
            str(home / "pgdata"),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        cwd="/",
    )
    # WHEN it is started
    result = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    # THEN it says it now needs a password, and only the DSN with it gets in
    assert result.returncode == 0, result.stderr
    assert (
        f"the embedded pgstac in {home} let every local user in without a password; "
        f"it now requires one (stactools-ingest local dsn prints a DSN with it)"
    ) in result.stderr.splitlines()
    dsn = result.stdout.strip()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT pgstac.get_version()").fetchone()[0]
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    assert params.pop("password", None)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**params, connect_timeout=5).close()
    hba = (home / "pgdata" / "pg_hba.conf").read_text().splitlines()
    assert not [
        line for line in hba if line.strip() and not line.startswith("#") and "trust" in line
    ]


@pytest.mark.parametrize("content", ["relative/home\n", "\x00\n", "   \n"])
def test_a_pointer_that_is_not_an_absolute_path_is_ignored(tmp_path, content):
    tmp_path.chmod(0o755)
    (tmp_path / ".stactools-ingest").mkdir()
    (tmp_path / ".stactools-ingest" / "home").write_text(content)
    result = cli("local", "status", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout.splitlines()[0].startswith("stopped  data: /")


def test_a_home_too_long_for_a_unix_socket_still_starts(home, tmp_path):
    # GIVEN a home whose path is longer than a unix socket path may be (107 bytes on Linux)
    deep = home / ("d" * 120)
    result = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(deep))
    # THEN the server starts anyway (TCP is how everyone connects) and its DSN works
    assert result.returncode == 0, result.stderr
    with psycopg.connect(result.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    stop_home(deep)


def test_a_home_with_spaces_and_quotes_starts(home, tmp_path):
    odd = home / "my data's home é"
    result = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(odd))
    assert result.returncode == 0, result.stderr
    with psycopg.connect(result.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    stop_home(odd)


def test_a_server_that_cannot_start_says_why_in_one_line(home, tmp_path):
    assert cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home)).returncode == 0
    assert cli("local", "stop", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home)).returncode == 0
    # GIVEN a configuration PostgreSQL refuses
    with open(home / "pgdata" / "postgresql.conf", "a") as conf:
        conf.write("\nshared_buffers = 'lots'\n")
    result = cli("local", "start", cwd=tmp_path, STACTOOLS_INGEST_HOME=str(home))
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the embedded PostgreSQL did not start: "
        f'invalid value for parameter "shared_buffers": "lots" (see {home / "server.log"})'
    )
