"""Warm worker: runs inside a package's uv environment and serves ``stac`` commands in-process.

Started by ``item_gen.warm`` as ``uvx --with … --from stactools python /path/to/_worker.py``. It
uses only the standard library and stactools (item_gen is not installed in that environment).

Protocol, one JSON object per line:

- start-up: the worker imports stactools' CLI, then writes ``{"ready": true, "pid": <its pid>}``;
- request (stdin): ``{"argv": ["<group>", "<command>", *args, "<destination>"], "cwd": "<dir>"}``;
- response (stdout): ``{"ok": bool, "exit_code": int, "error": str | None}``.

Everything the command prints (Python's stdout and stderr, logging, and C libraries writing to
file descriptors 1 and 2) goes to the worker's stderr, which the runner reads as the stderr tail.
The worker exits when stdin closes, so it never outlives the runner.

Every request starts from the state the worker had when it became ready: ``os.environ``, the
working directory, ``tempfile.tempdir``, the umask, logging, ``sys.stdout``/``stderr``/``stdin``
and the handlers of a few signals are put back after each request, and every process the
request started is killed before it is answered. The worker is a *child
subreaper*, so processes that daemonised or lost their parent are re-parented to it and found
too (``processes.py``, loaded by path from beside this file).
"""

import os
import sys

# Running this file by path puts item_gen's source folder first on sys.path, where modules named
# ``models``, ``errors``, ``core``... would shadow a package's own imports; take it off again.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import contextlib
import importlib.util
import json
import logging
import signal
import tempfile
import traceback
import warnings
from dataclasses import dataclass


def _exit_code(exc: SystemExit) -> int:
    """The status a process would exit with for ``exc``, printing non-int codes as Python does."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _logging_state() -> dict:
    """Handlers, level and flags of every logger that exists now, to undo a command's set-up."""
    loggers = [logging.getLogger()]
    loggers += [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers}


def _restore_logging(state: dict) -> None:
    for lg, (handlers, level, propagate, disabled) in state.items():
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
        lg.disabled = disabled


def _load_processes():
    """item_gen's ``processes.py`` (standard library only), loaded from beside this file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "processes.py")
    spec = importlib.util.spec_from_file_location("_stactools_ingest_processes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


processes = None
"""``processes.py``, loaded by ``main``."""


_SIGNALS = (signal.SIGCHLD, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


@dataclass(frozen=True)
class _Pristine:
    """What every request starts from: the worker's state when it became ready."""

    environ: dict
    cwd: str
    tempdir: str | None
    umask: int
    logging: dict
    streams: tuple
    """``sys.stdin``, ``sys.stdout`` and ``sys.stderr``."""
    signals: dict
    """Handlers of the signals a package might take over (an ignored SIGCHLD breaks waiting)."""
    children: frozenset
    """Processes started while importing stactools and its plugins (not a request's to keep)."""

    @classmethod
    def now(cls) -> "_Pristine":
        umask = os.umask(0o022)
        os.umask(umask)
        return cls(
            environ=dict(os.environ),
            cwd=os.getcwd(),
            tempdir=tempfile.tempdir,
            umask=umask,
            logging=_logging_state(),
            streams=(sys.stdin, sys.stdout, sys.stderr),
            signals={sig: signal.getsignal(sig) for sig in _SIGNALS},
            children=frozenset(processes.descendants(os.getpid())),
        )

    def restore(self) -> None:
        """Undo what a request changed in this process."""
        # clear() and update() call unsetenv/putenv for every name, so C code reading the
        # environment sees the restored values too, not only os.environ.
        os.environ.clear()
        os.environ.update(self.environ)
        with contextlib.suppress(OSError):  # gone since start-up: the next request sets its own
            os.chdir(self.cwd)
        tempfile.tempdir = self.tempdir
        os.umask(self.umask)
        # stactools' CLI adds a log handler on every invocation; keep the worker as it started.
        _restore_logging(self.logging)
        sys.stdin, sys.stdout, sys.stderr = self.streams
        signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm left set would kill the worker later
        for sig, handler in self.signals.items():
            if handler is not None:  # None: set outside Python, nothing we could put back
                signal.signal(sig, handler)


def _run(cli, request: dict, pristine: _Pristine) -> dict:
    """Run one ``stac`` command line as the ``stac`` script would, and say how it ended."""
    argv = [str(a) for a in request["argv"]]
    error = None
    try:
        os.chdir(request.get("cwd") or pristine.cwd)
        sys.argv = ["stac", *argv]
        # A fresh registry per request, so a warning shows for every request, as in a new process.
        with warnings.catch_warnings():
            try:
                # Standalone mode is exactly what the `stac` script does: click prints usage errors
                # and "Aborted!" itself and always ends with SystemExit carrying the exit status.
                cli.main(args=argv, prog_name="stac")
                code = 0
            except SystemExit as e:
                code = _exit_code(e)
            except BaseException as e:
                # What an uncaught exception does to the script: traceback on stderr, status 1.
                traceback.print_exc()
                error = f"{type(e).__name__}: {e}"
                code = 1
    finally:
        for stream in (sys.stdout, sys.stderr, *pristine.streams[1:]):
            with contextlib.suppress(Exception):  # a package's replacement may be closed
                stream.flush()
        pristine.restore()
        left = processes.end_descendants(pristine.children)
    if left:  # in uninterruptible sleep: the runner kills this worker, and them, on its answer
        print(f"{left} processes the command started could not be killed", file=sys.stderr)
    return {"ok": code == 0, "exit_code": code, "error": error, "stray_processes": left}


def main() -> None:
    """Serve requests from stdin until it closes."""
    # Keep the real stdout for responses; anything else written to fd 1 goes to stderr instead.
    responses = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)

    global processes
    processes = _load_processes()
    processes.become_subreaper()

    from stactools.cli.cli import cli

    logging.getLogger("stactools")  # the logger the CLI configures, so it is restored too
    pristine = _Pristine.now()

    def send(obj: dict) -> None:
        responses.write(json.dumps(obj) + "\n")
        responses.flush()

    send({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as e:
            send({"ok": False, "exit_code": 2, "error": f"bad request line: {e}"})
            continue
        send(_run(cli, request, pristine))


if __name__ == "__main__":
    main()
