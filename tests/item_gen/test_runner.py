"""The one-shot runner's process handling, with a fake ``uvx`` (a shell script) in its place."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from factories import fake_uvx

from item_gen import runner
from item_gen.errors import PackageFailed, RequestTimedOut
from item_gen.models import parse_request
from item_gen.runner import run_once
from item_gen.settings import GenSettings

ITEM = {
    "type": "Feature",
    "stac_version": "1.0.0",
    "id": "fake-1",
    "collection": "fake",
    "geometry": {"type": "Point", "coordinates": [0, 0]},
    "properties": {"datetime": "2020-01-01T00:00:00Z"},
    "links": [],
    "assets": {},
}


def left_behind(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in "ZX"


def wait_until_gone(pids: list[int], bound: float = 30) -> None:
    """Killed processes take a moment to exit on a busy machine; fail if they never do."""
    end = time.monotonic() + bound
    while [pid for pid in pids if alive(pid)]:
        assert time.monotonic() < end, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.02)


@pytest.fixture
def strays(tmp_path):
    """Whatever the fake left running is killed after the test, whatever the test found."""
    yield
    for pid in left_behind(tmp_path):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def run_in_thread(request, settings, bound: float = 60) -> object:
    """``run_once``'s result or exception; fails the test if it has not returned in ``bound`` s."""
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(run_once(request, settings))
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(bound)
    assert outcome, (
        f"run_once had not returned {bound} s after a {settings.request_timeout_seconds} s timeout"
    )
    return outcome[0]


def request():
    return parse_request(
        {"package_name": "stactools-fake", "group_name": "fake", "request_id": "r1"}
    )


@pytest.mark.parametrize("start", ["", "setsid "], ids=["same-group", "own-session"])
def test_a_background_process_holding_stdout_does_not_hold_the_request(tmp_path, strays, start):
    # GIVEN a package that writes its item, leaves a process holding stdout and stderr, and exits
    item = json.dumps(ITEM)
    uvx = fake_uvx(
        tmp_path,
        f"echo '{item}' > \"$last\"\n{start}sleep 600 &\necho $! >> $PIDS\necho done\nexit 0",
    )
    settings = GenSettings(uvx=str(uvx), request_timeout_seconds=5)
    # WHEN the one-shot runner runs it
    # THEN the item comes back as soon as the command exits, not after the timeout
    assert run_in_thread(request(), settings) == ITEM
    # and the background process is killed with it, even in a session of its own
    [pid] = left_behind(tmp_path)
    wait_until_gone([pid])


def test_timeout_holds_and_kills_what_the_command_started_even_in_another_session(tmp_path, strays):
    # GIVEN a package that starts a process in its own session, then hangs
    uvx = fake_uvx(
        tmp_path, "setsid sleep 600 &\necho $! >> $PIDS\nsleep 600 &\necho $! >> $PIDS\nwait"
    )
    settings = GenSettings(uvx=str(uvx), request_timeout_seconds=3)
    # WHEN it runs past the timeout
    error = run_in_thread(request(), settings)
    # THEN the request times out, and everything it started is killed
    assert isinstance(error, RequestTimedOut)
    assert str(error).startswith(f"request r1: `{uvx} --with stactools-fake")
    assert "ran longer than 3 s and was killed" in str(error)
    pids = left_behind(tmp_path)
    assert len(pids) == 2
    wait_until_gone(pids)


def test_a_failing_command_reports_its_stderr_and_stdout(tmp_path, strays):
    uvx = fake_uvx(tmp_path, "echo 'to stdout'\necho 'Traceback: boom' >&2\nexit 3")
    settings = GenSettings(uvx=str(uvx), request_timeout_seconds=5)
    error = run_in_thread(request(), settings)
    assert str(error).endswith("exited 3: to stdout\nTraceback: boom")


def test_without_pidfd_and_waitid_the_runner_still_works(tmp_path, strays, monkeypatch):
    # GIVEN a Python without os.pidfd_open and os.waitid (macOS before Python 3.13)
    monkeypatch.delattr(os, "pidfd_open")
    monkeypatch.delattr(os, "waitid")
    item = json.dumps(ITEM)
    uvx = fake_uvx(tmp_path, f"echo '{item}' > \"$last\"\nsleep 600 &\necho $! >> $PIDS\nexit 0")
    settings = GenSettings(uvx=str(uvx), request_timeout_seconds=5)
    # THEN the item still comes back and the background process is killed
    assert run_in_thread(request(), settings) == ITEM
    wait_until_gone(left_behind(tmp_path))


def test_endless_output_is_cut_back_to_its_end(tmp_path, strays, monkeypatch):
    # GIVEN output files kept under 1 MiB, and a package that writes 20 MB to stderr, 1 MB at a
    # time, each time waiting until its stderr file holds under 1.5 MB again (it hangs otherwise)
    monkeypatch.setattr(runner, "OUTPUT_KEEP_BYTES", 1024 * 1024)
    uvx = fake_uvx(
        tmp_path,
        "for i in $(seq 20); do\n"
        "  head -c 1000000 /dev/zero | tr '\\0' x >&2\n"
        "  while [ $(( $(stat -L -c '%b*%B' /proc/$$/fd/2) )) -gt 1500000 ]; do sleep 0.05; done\n"
        "done\n"
        "echo >&2; echo 'last words' >&2; exit 1",
    )
    settings = GenSettings(uvx=str(uvx), request_timeout_seconds=60)
    # THEN it runs to its end (its output file was cut back as it ran) and its last words show
    error = run_in_thread(request(), settings, bound=120)
    assert isinstance(error, PackageFailed)
    assert str(error).endswith("exited 1: …" + "x" * 1989 + "\nlast words")


def test_cutting_back_a_log_loses_nothing_written_meanwhile():
    # GIVEN a command appending numbered lines to its log as fast as it can
    import subprocess

    log = runner.CommandLog("test-")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os\nfor n in range(400_000): os.write(2, b'%d\\n' % n)"],
        stderr=log.fileno(),
    )
    try:
        # WHEN the log is cut back again and again while it writes
        while writer.poll() is None:
            log.trim(keep=64 * 1024)
            lines = log._end().decode().split("\n")[1:-1]  # whole lines only
            numbers = [int(n) for n in lines if n.isdigit()]
            # THEN what the log keeps is every line, in order: none lost, none moved
            if numbers:
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    finally:
        writer.wait()
        log.close()


def test_a_command_killed_by_a_signal_is_reported_as_such(tmp_path, strays):
    uvx = fake_uvx(tmp_path, "echo 'about to die' >&2\nkill -9 $$")
    error = run_in_thread(request(), GenSettings(uvx=str(uvx), request_timeout_seconds=5))
    assert isinstance(error, PackageFailed)
    assert str(error).endswith("exited -9: about to die")


def test_stactools_is_pinned_by_default(monkeypatch):
    # Every package environment gets the same stactools unless STACTOOLS_SPEC says otherwise.
    monkeypatch.delenv("STACTOOLS_SPEC", raising=False)
    assert GenSettings().stactools_spec == "stactools==0.5.3"


def test_a_tracebacks_exception_leads_its_stderr_tail():
    from item_gen.runner import STDERR_TAIL, stderr_tail

    frames = "".join(
        f'  File "/site-packages/pkg/m{n}.py", line {n}, in f{n}\n    x()\n' for n in range(200)
    )
    cause = "rasterio.errors.RasterioIOError: a.tif: No such file or directory"
    text = f"Traceback (most recent call last):\n{frames}{cause}\n"
    tail = stderr_tail(text)
    # the cause first, where a person reading the ledger or the DLQ looks, then the context
    assert tail.startswith("rasterio.errors.RasterioIOError: a.tif: No such file or directory\n…")
    assert len(tail) <= STDERR_TAIL + 600
    # output that is no traceback is cut as before
    assert stderr_tail("x" * (STDERR_TAIL + 10)) == "…" + "x" * STDERR_TAIL
    assert stderr_tail("error: no such package\n") == "error: no such package"
