"""A warm runner: one long-lived stactools process per package environment, reused per request.

Running ``uvx … stac <group> create-item`` costs about two seconds of interpreter start and imports
for a few milliseconds of work. Here each environment (its sorted packages, stactools spec and
uvx) gets a worker started once as ``uvx --with … --from stactools python _worker.py``: the very
environment the one-shot path uses, with our stdlib-only worker script run by path because
item_gen itself is not installed there. The worker runs stactools' click CLI in-process, request
after request, and the document is read from the destination file with the one-shot path's
``read_output``, so the output is identical.

- Failures stay per request: a non-zero exit or an exception in the command is answered like the
  one-shot process would have exited, and the worker keeps serving.
- A worker that dies is replaced. If it had already served requests when it died, the request is
  retried once on a fresh worker (a crash after earlier requests says little about this one);
  if a fresh worker dies, the request fails with ``PackageFailed``.
- ``request_timeout_seconds`` covers starting the worker (when needed) and running the request, as
  it covers the whole ``uvx`` process in the one-shot path. On timeout the worker's process group
  is killed, ``RequestTimedOut`` is raised and the next request starts a fresh worker.
- Thread-safe: each environment has a pool of up to ``warm_workers_per_env`` workers, started
  lazily when that many threads want one at once; a thread holds a worker for one request.
- At most ``warm_max_environments`` environments keep workers: using another one stops the
  workers of the least recently used environment (a busy one when its request ends).
- Requests do not see each other: the worker puts back its environment variables, cwd, temp
  directory and umask after each request and kills every process the request started (see
  ``_worker.py``); on timeout the worker's whole process tree is killed, daemons included.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from item_gen.core import Runner
from item_gen.environments import unavailable, uv_environment, uvx_prefix
from item_gen.errors import PackageFailed, RequestTimedOut
from item_gen.models import Request
from item_gen.processes import kill_tree
from item_gen.runner import (
    CHECK_SECONDS,
    CommandLog,
    command_for,
    destination_in,
    read_output,
    run_once,
)
from item_gen.settings import GenSettings

WORKER_SCRIPT = Path(__file__).with_name("_worker.py")

EnvKey = tuple[str, str, tuple[str, ...]]


class _WorkerDied(Exception):
    """The worker process ended without answering; carries its exit status and stderr tail."""

    def __init__(self, status: int | None, stderr: str) -> None:
        super().__init__(f"exited {status}")
        self.status = status
        self.stderr = stderr


class _TimedOut(Exception):
    """No answer before the deadline."""


class _Worker:
    """One worker process: ``uvx … python _worker.py`` in its own session, stderr to a file."""

    def __init__(self, cmd: list[str], deadline: float, env: dict[str, str] | None) -> None:
        self.cmd = cmd
        self.served = 0
        # stderr goes to a file: nothing can block on a full pipe, and after a crash the runner
        # can still read what the process said last.
        self._log = CommandLog("stactools-worker-")
        self._buf = b""
        # A new session lets us kill uvx and the Python it starts together.
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                start_new_session=True,
                env=env,
            )
        except OSError as e:  # uvx itself is missing or not executable
            self._log.close()
            raise _WorkerDied(None, str(e)) from None
        try:
            hello = self._read(deadline)
        except _TimedOut:
            self.kill()
            self.close()
            raise
        self.pid = int(hello["pid"])
        """The worker's Python process (uvx is its parent)."""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, request: dict, deadline: float) -> dict:
        """Send one request and wait for its answer; raises ``_WorkerDied`` or ``_TimedOut``."""
        self._log.clear()  # stderr of this request only
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        answer = self._read(deadline)
        self.served += 1
        return answer

    def stderr(self) -> str:
        """The end of what the worker wrote to stderr since the current request was sent."""
        return self._log.tail()

    def _read(self, deadline: float) -> dict:
        """The next JSON line on the worker's stdout, waiting no later than ``deadline``."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            ready = select.select([fd], [], [], min(CHECK_SECONDS, remaining))[0]
            self._log.trim()
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._died()
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def _died(self) -> _WorkerDied:
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            status = self.proc.returncode
        error = _WorkerDied(status, self.stderr())
        self.close()
        return error

    def kill(self) -> None:
        """Kill uvx, the worker and everything they started, and reap uvx.

        The worker is a subreaper, so even a request's daemons are still below uvx in the process
        tree: ``kill_tree`` stops that tree, then kills all of it.
        """
        # Only while uvx is unreaped: its pid (and so its process group) cannot be reused yet.
        if self.proc.returncode is None:
            kill_tree(self.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        """Ask the worker to stop (stdin closed), kill it if it does not, free the log file."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self._log.close()


class _Pool:
    """Up to ``size`` workers for one environment; each is lent to one thread at a time."""

    def __init__(self, cmd: list[str], size: int, env: dict[str, str] | None) -> None:
        self.cmd = cmd
        self.env = env
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the pool's places; waiting for it does not count against the timeout."""
        with self._slots:
            yield

    def take(self, deadline: float) -> _Worker:
        """An idle live worker, or a freshly started one."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._live.discard(worker)
                worker.close()
        worker = _Worker(self.cmd, deadline, self.env)
        with self._lock:
            self._live.add(worker)
        return worker

    def give_back(self, worker: _Worker) -> None:
        """Return a worker after a request; a dead one (or any, once closed) is let go."""
        with self._lock:
            if not self._closed and worker.alive():
                self._idle.append(worker)
                return
        self.discard(worker)

    def discard(self, worker: _Worker) -> None:
        """Kill a worker that cannot be trusted any more (timed out, died, or closing)."""
        with self._lock:
            self._live.discard(worker)
        worker.kill()
        worker.close()

    def workers(self) -> list[_Worker]:
        """Every live worker, idle or busy (for tests and diagnostics)."""
        with self._lock:
            return list(self._live)

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live.difference_update(idle)
        for worker in idle:
            worker.close()


class WarmRunner:
    """A ``Runner`` (``(request, settings) -> dict``) with warm worker pools per environment."""

    def __init__(self, worker_script: Path = WORKER_SCRIPT) -> None:
        self._script = worker_script
        self._pools: OrderedDict[EnvKey, _Pool] = OrderedDict()
        """Least recently used first."""
        self._lock = threading.Lock()

    def __call__(self, request: Request, settings: GenSettings) -> dict:
        """Run ``request`` in its environment's warm worker and return the document it wrote."""
        pool = self._pool(request, settings)
        with pool.slot(), tempfile.TemporaryDirectory(prefix="stactools-ingest-") as tmp:
            workdir = Path(tmp)
            destination = destination_in(workdir, request)
            cmd = command_for(request, destination, settings)
            # The same `stac` arguments as the one-shot command, run from the caller's directory.
            message = {"argv": cmd[cmd.index("stac") + 1 :], "cwd": os.getcwd()}
            answer = self._run(pool, request, settings, cmd, message)
            if not answer["ok"]:
                detail = answer["stderr"] or answer.get("error") or "(no stderr)"
                raise PackageFailed(
                    f"request {request.label}: `{shlex.join(cmd)}` exited {answer['exit_code']} "
                    f"(in its warm worker): {detail}"
                )
            return read_output(workdir, destination, request, cmd)

    def _run(
        self, pool: _Pool, request: Request, settings: GenSettings, cmd: list[str], message: dict
    ) -> dict:
        """Run on a pooled worker, retrying once on a fresh worker if a reused one dies."""
        deadline = time.monotonic() + settings.request_timeout_seconds
        timed_out = RequestTimedOut(
            f"request {request.label}: `{shlex.join(cmd)}` ran longer than "
            f"{settings.request_timeout_seconds:g} s and was killed with its warm worker; raise "
            "REQUEST_TIMEOUT_SECONDS if the package is just slow"
        )
        retried = False
        while True:
            try:
                worker = pool.take(deadline)
            except _TimedOut:
                raise timed_out from None
            except _WorkerDied as died:
                if error := unavailable(
                    request.label, request.packages, settings, died.status, died.stderr
                ):
                    raise error from None
                raise PackageFailed(
                    f"request {request.label}: `{shlex.join(cmd)}` could not run: its warm "
                    f"worker `{shlex.join(pool.cmd)}` exited {died.status} before it was "
                    f"ready: {died.stderr or '(no stderr)'}"
                ) from None
            reused = worker.served > 0
            try:
                answer = worker.run(message, deadline)
            except _TimedOut:
                pool.discard(worker)
                raise timed_out from None
            except _WorkerDied as died:
                pool.discard(worker)
                if reused and not retried:
                    retried = True
                    continue
                raise PackageFailed(
                    f"request {request.label}: `{shlex.join(cmd)}` exited {died.status}: its warm "
                    "worker died while running it and is replaced for the next request: "
                    f"{died.stderr or '(no stderr)'}"
                ) from None
            except BaseException:
                pool.discard(worker)
                raise
            answer["stderr"] = worker.stderr()
            if answer.get("stray_processes"):
                pool.discard(worker)  # it could not kill what the request started; we can
            else:
                pool.give_back(worker)
            return answer

    def _pool(self, request: Request, settings: GenSettings) -> _Pool:
        """The environment's pool, now the most recently used; evicts beyond the setting."""
        key: EnvKey = (settings.uvx, settings.stactools_spec, tuple(sorted(request.packages)))
        evicted: list[_Pool] = []
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                packages = list(key[2])
                cmd = [*uvx_prefix(packages, settings), "python", str(self._script)]
                env = uv_environment(packages, settings)
                pool = self._pools[key] = _Pool(cmd, max(1, settings.warm_workers_per_env), env)
            self._pools.move_to_end(key)
            while len(self._pools) > max(1, settings.warm_max_environments):
                evicted.append(self._pools.popitem(last=False)[1])
        # Idle workers stop now; busy ones finish their request and stop when it is given back.
        for old in evicted:
            old.close()
        return pool

    def workers(self) -> list[_Worker]:
        """Every live worker of every environment (for tests and diagnostics)."""
        with self._lock:
            pools = list(self._pools.values())
        return [w for pool in pools for w in pool.workers()]

    def close(self) -> None:
        """Stop every worker; the runner can be used again and starts new ones."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


_shared: WarmRunner | None = None
_shared_lock = threading.Lock()


def shared_runner() -> WarmRunner:
    """The process-wide warm runner: the Lambda reuses it across records and warm invocations."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WarmRunner()
            atexit.register(_shared.close)
        return _shared


def runner_for(settings: GenSettings) -> Runner:
    """The shared warm runner, or the one-shot ``run_once`` when ``WARM_RUNNER=false``."""
    return shared_runner() if settings.warm_runner else run_once
