"""Find and kill every process a stactools command left behind, wherever it moved to.

Standard library only: the warm worker (``_worker.py``) loads this file by path inside a
package's uv environment, where item_gen is not installed.

Killing a process group misses children that started their own session (daemons, ``setsid``),
and a child whose parent has exited is re-parented out of reach. The answer used here is the
process tree in ``/proc``: stop every process under a root first (a stopped process cannot fork
or exit, so the tree holds still), then kill them all. The warm worker also makes itself a *child
subreaper*, so orphans of its requests are re-parented to it rather than to init and stay in its
tree. Run as a script (``python processes.py CMD…``) this module is such a subreaper for one
command: the one-shot runner starts ``uvx`` through it, so whatever the command leaves running,
even in another session, is killed when the command exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36

PROC = "/proc"
"""Where the process tree is read; without it (macOS) only process groups are killed."""


def _parent_and_state(pid: str) -> tuple[int, str] | None:
    """``(ppid, state)`` of a process from ``/proc/<pid>/stat``, or None once it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[1]), fields[0].decode()


def descendants(root: int) -> set[int]:
    """Live (not zombie) processes below ``root`` in the process tree (none without ``/proc``)."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return set()
    children: dict[int, list[int]] = {}
    for name in names:
        if name.isdigit() and (info := _parent_and_state(name)) and info[1] not in "ZX":
            children.setdefault(info[0], []).append(int(name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def has_children() -> bool:
    """Whether this process has any child at all (cheap: no scan of ``/proc``)."""
    try:
        for tid in os.listdir(f"{PROC}/self/task"):
            with open(f"{PROC}/self/task/{tid}/children", "rb") as f:
                if f.read().strip():
                    return True
        return False
    except OSError:  # kernel without /proc/…/children: look the long way
        return bool(descendants(os.getpid()))


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(root: int, *, rounds: int = 100) -> set[int]:
    """Stop ``root`` and everything below it until the tree holds still, then kill them all.

    Returns the processes killed. ``root`` must be a process the caller owns and has not reaped
    (so its pid cannot have been reused).
    """
    stopped: set[int] = set()
    for _ in range(rounds):
        tree = {root} | descendants(root)
        new = tree - stopped
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    return stopped


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap() -> None:
    """Collect every child of this process that has exited (adopted orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_descendants(spare: frozenset[int] = frozenset(), rounds: int = 500) -> int:
    """Kill every descendant of this process but ``spare``; returns how many could not be.

    Meant for a subreaper: a process whose parent is killed is re-parented to us and found in
    the next round; ``SIGKILL``ed processes cannot fork any more.
    """
    if not spare and not has_children():
        reap()  # without /proc (macOS) children are not found, but their zombies are collected
        return 0
    left: set[int] = set()
    for _ in range(rounds):
        reap()
        left = descendants(os.getpid()) - spare
        if not left:
            return 0
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.002)
    return len(left)


def run_as_subreaper(cmd: list[str]) -> int:
    """Run ``cmd``, then kill whatever it left behind; end as ``cmd`` ended."""
    become_subreaper()
    try:
        proc = subprocess.Popen(cmd)
    except OSError as e:
        print(f"{cmd[0]}: {e}", file=sys.stderr)
        return 127
    proc.wait()
    end_descendants()
    if proc.returncode < 0:  # killed by a signal: end the same way, as a shell would report it
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler
            signal.signal(-proc.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -proc.returncode)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(run_as_subreaper(sys.argv[1:]))
