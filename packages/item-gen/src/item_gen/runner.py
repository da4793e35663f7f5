"""Run a stactools package's ``create-item`` / ``create-collection`` in its own uv environment."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from item_gen.environments import unavailable, uv_environment, uvx_prefix
from item_gen.errors import PackageFailed, RequestTimedOut
from item_gen.models import Request
from item_gen.processes import kill_tree
from item_gen.settings import GenSettings

STDERR_TAIL = 2000

SUBREAPER = Path(__file__).with_name("processes.py")
"""Run as a script, it runs a command and kills whatever the command left running."""


def command_for(request: Request, destination: Path, settings: GenSettings) -> list[str]:
    """The full one-shot command line for a request, writing its JSON to ``destination``."""
    return [
        *uvx_prefix(request.packages, settings),
        "stac",
        request.group_name,
        request.command,
        *request.cli_args,
        str(destination),
    ]


def stderr_tail(text: str) -> str:
    """The end of a command's stderr, short enough for a log line and an error message.

    A Python traceback's last line (the exception) is repeated first: that is what a person
    reading the ledger, the page or the DLQ needs, and the frames above it push it far right.
    """
    text = text.strip()
    tail = text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]
    if "Traceback (most recent call last)" not in text:
        return tail
    cause = text.rsplit("\n", 1)[-1].strip()[:500]
    return f"{cause}\n{tail}" if cause and not tail.startswith(cause) else tail


def destination_in(workdir: Path, request: Request) -> Path:
    """Where a request's command is told to write its JSON inside its working directory."""
    return workdir / ("collection.json" if request.command == "create-collection" else "item.json")


def read_output(workdir: Path, destination: Path, request: Request, cmd: list[str]) -> dict:
    """The JSON the command wrote: at ``destination``, or the one JSON file in ``workdir``.

    Some packages treat the destination as a directory and name the file themselves.
    """
    if destination.is_file():
        candidates = [destination]
    else:
        candidates = sorted(p for p in workdir.rglob("*.json") if p.is_file())
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "nothing"
        raise PackageFailed(
            f"request {request.label}: `{shlex.join(cmd)}` exited 0 but wrote {found}; "
            "expected exactly one STAC JSON file"
        )
    try:
        doc: Any = json.loads(candidates[0].read_text())
    except json.JSONDecodeError as e:
        raise PackageFailed(f"request {request.label}: output is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PackageFailed(f"request {request.label}: output is not a JSON object")
    return doc


def _exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` has exited, leaving it unreaped where the platform allows."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reaps, so its pgid may be reused
        return proc.poll() is not None
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait(proc: subprocess.Popen, timeout: float, output: CommandLog) -> bool:
    """Wait until ``proc`` exits, without reaping it; False if ``timeout`` passed first.

    Not reaping keeps its pid, and so its process group id, from being reused while we kill the
    group. Waits on the process itself (a pidfd), never on its pipes, which anything it left
    running may hold open. Meanwhile keeps its output file short.
    """
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        pidfd = None
    try:
        while True:
            if _exited(proc):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is None:
                time.sleep(min(0.05, remaining))
            else:
                select.select([pidfd], [], [], min(CHECK_SECONDS, remaining))
            output.trim()
    finally:
        if pidfd is not None:
            os.close(pidfd)


OUTPUT_KEEP_BYTES = 16 * 1024 * 1024
"""A command's output file is cut back to its tail beyond this: endless output cannot fill /tmp."""

CHECK_SECONDS = 0.25
"""How often a running command's output file is checked against ``OUTPUT_KEEP_BYTES``."""


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


@functools.cache
def _fallocate() -> Any:
    """libc's ``fallocate``, looked up once (trim runs every quarter second per command); None
    where there is none."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate


def _punch_hole(fd: int, length: int) -> bool:
    """Free the first ``length`` bytes of a file in place; False where that is not possible
    (no Linux ``fallocate``, or a file system without holes)."""
    fallocate = _fallocate()
    if fallocate is None:
        return False
    return fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, length) == 0


class CommandLog:
    """An unlinked file a command appends its output to, of which only the end matters.

    A file, not a pipe: nothing the command leaves running can make us wait for an end of file,
    and nothing blocks on a full pipe. After a crash what the process said last is still there.
    """

    def __init__(self, prefix: str) -> None:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
        os.close(fd)
        # O_APPEND: writes land at the end even after ``trim`` cut the file back.
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND)
        os.unlink(path)

    def fileno(self) -> int:
        return self.fd

    def clear(self) -> None:
        """Forget what was written so far (a warm worker's previous request)."""
        os.ftruncate(self.fd, 0)

    def _end(self) -> bytes:
        size = os.fstat(self.fd).st_size
        start = max(0, size - 4 * STDERR_TAIL)
        return os.pread(self.fd, size - start, start)

    def tail(self) -> str:
        """The end of the output, short enough for a log line and an error message."""
        return stderr_tail(self._end().decode(errors="replace"))

    def trim(self, keep: int | None = None) -> None:
        """Free the file's start once it holds over ``keep`` bytes, keeping its end.

        Punching a hole (``fallocate``) frees the blocks while the command goes on appending:
        nothing it writes meanwhile is lost, and the file's length, and so its end, stay where
        they are. Where holes cannot be punched the file is cut back and its end written again;
        what the command writes between those two steps is lost.
        """
        limit = OUTPUT_KEEP_BYTES if keep is None else keep
        stat = os.fstat(self.fd)
        if stat.st_blocks * 512 <= limit:  # what it holds, holes excluded
            return
        hole = stat.st_size - 4 * STDERR_TAIL
        if hole > 0 and _punch_hole(self.fd, hole):
            return
        end = self._end()
        os.ftruncate(self.fd, 0)
        os.write(self.fd, end)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def run_once(request: Request, settings: GenSettings) -> dict:
    """Run the request's command in a fresh process and return the STAC document it wrote."""
    with tempfile.TemporaryDirectory(prefix="stactools-ingest-") as tmp:
        workdir = Path(tmp)
        destination = destination_in(workdir, request)
        cmd = command_for(request, destination, settings)
        output = CommandLog("stactools-run-")
        try:
            # Runs in the caller's directory so relative paths in requests mean what the user meant.
            # A new session lets us kill uvx, the Python it starts and their children together;
            # the subreaper in between kills what they leave running, in any session, on exit.
            proc = subprocess.Popen(
                [sys.executable, "-I", str(SUBREAPER), *cmd] if sys.executable else cmd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                env=uv_environment(request.packages, settings),
            )
            finished = False
            try:
                finished = _wait(proc, settings.request_timeout_seconds, output)
            finally:
                if not finished:  # timed out (or interrupted): also what left the session
                    kill_tree(proc.pid)
                # Whatever the command left running in its process group dies with it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if not finished:
                raise RequestTimedOut(
                    f"request {request.label}: `{shlex.join(cmd)}` ran longer than "
                    f"{settings.request_timeout_seconds:g} s and was killed; raise "
                    "REQUEST_TIMEOUT_SECONDS if the package is just slow"
                )
            if proc.returncode != 0:
                tail = output.tail()
                if error := unavailable(
                    request.label, request.packages, settings, proc.returncode, tail
                ):
                    raise error
                raise PackageFailed(
                    f"request {request.label}: `{shlex.join(cmd)}` exited {proc.returncode}: {tail}"
                )
        finally:
            output.close()
        return read_output(workdir, destination, request, cmd)
