"""An embedded PostgreSQL + PostGIS + pgstac server that the tool runs itself.

Used by ``stactools-ingest local``/``run`` and by the test suite, so both exercise one piece of
code. As root, the server runs as an unprivileged user (``postgres``, created if missing), since
PostgreSQL refuses to run as root.

It listens on 127.0.0.1 only, on a port it keeps across restarts (saved in ``server.json``), and
every connection needs the password generated at ``initdb`` (scram-sha-256, TCP and socket alike;
kept in ``<home>/password``, mode 0600): a port on localhost is reachable by every local user, so
``trust`` would make each of them a superuser.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from ingest_common.errors import IngestError

SERVER_USER = "postgres"
DB_NAME = "pgstac"


class EmbeddedError(IngestError):
    """The embedded server could not be set up or started; the message says what to install."""

    exit_code = 4


def _run(cmd: list[str], user: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
        kwargs.setdefault("cwd", "/")  # the server user may not enter our working directory
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise EmbeddedError(
            f"{' '.join(cmd)} failed (exit {result.returncode}): "
            f"{' '.join((result.stderr or result.stdout).split())[-2000:]}"  # one line
        )
    return result


def _candidate_bindirs() -> list[Path]:
    dirs = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            dirs.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return [d for d in [*versions, *dirs] if (d / "postgres").exists()]


def _sharedir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True)
        if out.returncode == 0:
            return Path(out.stdout.strip())
    return Path("/usr/share/postgresql") / bindir.parent.name


def _apt_install(packages: list[str], say) -> None:
    say(f"installing {' '.join(packages)} with apt-get (this machine has apt and we are root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", *packages], env=env)


def find_server(install: bool = True, say=lambda msg: print(msg, file=sys.stderr)) -> Path:
    """The bin directory of a PostgreSQL server with PostGIS, installed with apt if allowed."""
    can_apt = install and os.geteuid() == 0 and shutil.which("apt-get") is not None
    bindirs = _candidate_bindirs()
    if not bindirs:
        if not can_apt:
            raise EmbeddedError(
                "no PostgreSQL server found; install it (Debian/Ubuntu: apt-get install "
                "postgresql postgresql-15-postgis-3) or pass --dsn for an existing pgstac"
            )
        _apt_install(["postgresql"], say)
        bindirs = _candidate_bindirs()
    bindir = bindirs[0]
    major = bindir.parent.name
    if not (_sharedir(bindir) / "extension" / "postgis.control").exists():
        package = f"postgresql-{major}-postgis-3"
        if not can_apt:
            raise EmbeddedError(
                f"PostGIS is not installed for PostgreSQL {major}; install {package} "
                "(apt-get install " + package + ") or pass --dsn for an existing pgstac"
            )
        _apt_install([package], say)
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (TIME_WAIT leftovers of our own server
    do not count: PostgreSQL binds with SO_REUSEADDR, so the probe does too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ensure_server_user() -> str | None:
    """The user to run postgres as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        _run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER]
        )
    return SERVER_USER


def first_closed(path: Path, user: str) -> Path | None:
    """The outermost existing directory on the way to ``path`` that ``user`` cannot enter.

    Owner, group and other execute bits are checked as the kernel does (ACLs aside); a user that
    does not exist yet (created at the first start) owns nothing and is in no group.
    """
    try:
        info = pwd.getpwnam(user)
        uid, groups = info.pw_uid, set(os.getgrouplist(user, info.pw_gid))
    except KeyError:
        uid, groups = None, set()
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return None  # what does not exist yet will be created by us, for the server user
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _check_traversable(path: Path, user: str) -> None:
    closed = first_closed(path, user)
    if closed is not None:
        raise EmbeddedError(
            f"the database server runs as '{user}', which cannot enter {closed}; "
            f"set STACTOOLS_INGEST_HOME to a directory it can reach (e.g. under /var/tmp)"
        )


def _write_secret(path: Path, text: str, owner: str | None = None) -> None:
    """Write ``text`` to a file only its owner can read (created 0600, never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner:
        shutil.chown(path, owner)


_PG_HBA = """\
# Written by stactools-ingest: every connection needs the password kept in <home>/password.
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""
_LOG_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (LOG|WARNING|ERROR|FATAL|PANIC):\s+(.*)$")
_ROUTINE = ("starting PostgreSQL", "listening on", "database system was shut down")


def _start_failure(log: Path, offset: int) -> str | None:
    """Why the server died at start, from what it logged since ``offset``: the first telling
    line of the process that logged FATAL (its cause, e.g. a bad setting), else None."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read(1 << 20).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    parsed = [m.groups() for m in map(_LOG_LINE.match, lines) if m]
    fatal = next((pid for pid, level, _ in parsed if level in ("FATAL", "PANIC")), None)
    if fatal is None:
        return None
    for pid, _, text in parsed:
        if pid == fatal and not text.startswith(_ROUTINE):
            return text
    return None


@dataclass
class EmbeddedServer:
    """A PostgreSQL data directory under ``home`` and the server running on it."""

    home: Path
    durable: bool = True

    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def port(self) -> int | None:
        return self._state().get("port")

    @property
    def password_file(self) -> Path:
        return self.home / "password"

    @property
    def password(self) -> str | None:
        """The superuser's password, generated at ``initdb``; None before the first start."""
        try:
            return self.password_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def dsn(self, dbname: str = DB_NAME) -> str:
        """A libpq URL other tools can use: 127.0.0.1, the saved port and the password."""
        port = self.port
        if port is None:
            raise EmbeddedError(
                "the embedded pgstac is not running; run: stactools-ingest local start"
            )
        password = self.password
        # quote() although the generated password is URL-safe: the file may have been edited.
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://{SERVER_USER}{secret}@127.0.0.1:{port}/{quote(dbname, safe='')}"

    def conninfo(self, dbname: str = DB_NAME) -> dict:
        """Connection parameters for psycopg."""
        info = {"host": "127.0.0.1", "port": self.port, "user": SERVER_USER, "dbname": dbname}
        password = self.password
        if password:
            info["password"] = password
        return info

    def is_running(self) -> bool:
        port = self.port
        if port is None or not (self.data_dir / "postmaster.pid").exists():
            return False
        try:
            with psycopg.connect(**self.conninfo("postgres"), connect_timeout=3):
                return True
        except psycopg.OperationalError:
            return False

    def start(self, say=lambda msg: print(msg, file=sys.stderr)) -> None:
        """Initialise (first time), start and migrate; a running server is left as it is."""
        if self.is_running():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        # Two first commands at once (two terminals) must not both initdb or both pg_ctl start:
        # the second waits here, then finds the server the first one started.
        with open(self.home / "start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_running():
                self._start_locked(say)

    def _start_locked(self, say) -> None:
        bindir = find_server(say=say)
        user = _ensure_server_user()
        if user:
            _check_traversable(self.home, user)
            shutil.chown(self.home, user)
        self.home.chmod(0o700)
        open_to_all = False
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, user, say)
        elif self.password is None:
            open_to_all = True  # initialised with trust by an earlier version: secured below
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():  # left by a killed server; pg_ctl refuses to start otherwise
            with contextlib.suppress(Exception):
                _run(
                    [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"],
                    user=user,
                )
            stale_pid.unlink(missing_ok=True)
        port = self._choose_port(say)
        opts = [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {shlex.quote(self._socket_dir())}",  # pg_ctl hands -o to /bin/sh
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            "-c max_locks_per_transaction=256",
        ]
        if not self.durable:  # tests: a crash loses nothing we care about
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = self.home / "server.log"
        log_start = log.stat().st_size if log.exists() else 0
        try:
            self._pg_ctl_start(bindir, user, opts)
        except EmbeddedError as e:
            reason = _start_failure(log, log_start)
            if reason is None:
                raise
            raise EmbeddedError(
                f"the embedded PostgreSQL did not start: {reason} (see {log})"
            ) from e
        self.state_file.write_text(json.dumps({"port": port, "bindir": str(bindir)}))
        if open_to_all:
            self._require_password()
            say(
                f"the embedded pgstac in {self.home} let every local user in without a "
                f"password; it now requires one (stactools-ingest local dsn prints a DSN with it)"
            )
        self.ensure_database(DB_NAME)

    def _pg_ctl_start(self, bindir: Path, user: str | None, opts: list[str]) -> None:
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.home / "server.log"),
                "-o",
                " ".join(opts),
                "-w",
                "-t",
                "60",
                "start",
            ],
            user=user,
        )

    def _require_password(self) -> None:
        """Give a trust-initialised server a password and scram-only pg_hba.conf, live.

        The password file is written last: if we die before, the next start sees the server
        still open (trust) and does all of this again.
        """
        password = secrets.token_urlsafe(24)
        with psycopg.connect(**self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    psycopg.sql.Identifier(SERVER_USER), psycopg.sql.Literal(password)
                )
            )
            (self.data_dir / "pg_hba.conf").write_text(_PG_HBA)  # keeps its owner and mode
            conn.execute("SELECT pg_reload_conf()")
        _write_secret(self.password_file, password + "\n")

    def _socket_dir(self) -> str:
        """The data directory for the unix socket, or none when its path would be too long.

        Linux caps a socket path at 107 bytes and PostgreSQL refuses to start without the
        socket it was asked for; every DSN we hand out is TCP, so the socket is a convenience.
        """
        socket_path = self.data_dir / ".s.PGSQL.65535.lock"
        return str(self.data_dir) if len(os.fsencode(socket_path)) <= 107 else ""

    def _initdb(self, bindir: Path, user: str | None, say) -> None:
        """A new data directory whose superuser needs a freshly generated password."""
        say(f"initialising a PostgreSQL data directory in {self.data_dir}")
        self.data_dir.mkdir(exist_ok=True)
        if user:
            shutil.chown(self.data_dir, user)
        password = self.password or secrets.token_urlsafe(24)
        _write_secret(self.password_file, password + "\n")
        pwfile = self.home / ".initdb-password"  # initdb runs as the server user: it must read it
        _write_secret(pwfile, password + "\n", owner=user)
        try:
            _run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SERVER_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                user=user,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _choose_port(self, say) -> int:
        """The saved port when it is free (saved DSNs keep working), else a new one, said."""
        saved = self.port
        if saved is None:
            return _free_port()
        if _port_free(saved):
            return saved
        port = _free_port()
        say(
            f"port {saved} of the embedded pgstac is in use by another program; "
            f"it now listens on {port} (DSNs saved before no longer work)"
        )
        return port

    def ensure_database(self, dbname: str) -> None:
        """Create ``dbname`` if needed and bring it to pypgstac's pgstac version."""
        from pypgstac.db import PgstacDB
        from pypgstac.migrate import Migrate

        with psycopg.connect(**self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if not exists:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
                )
        with PgstacDB(dsn=self.dsn(dbname)) as db:
            Migrate(db).run_migration()

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        state = self._state()
        if not state or not (self.data_dir / "postmaster.pid").exists():
            return False
        user = _ensure_server_user()
        pg_ctl = Path(state.get("bindir", "")) / "pg_ctl"
        _run([str(pg_ctl), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], user=user)
        return True
