"""Find and kill every process a stactools command left behind, wherever it moved to.

Standard library only: the warm worker (``_worker.py``) loads this file by path inside a
package's uv environment, where item_gen is not installed.

Killing a process group misses children that started their own session (daemons, ``setsid``),
and a child whose parent has exited is re-parented out of reach. The answer used here is the
process tree in ``/proc``: stop every process under a root first (a stopped process cannot fork
or exit, so the tree holds still), then kill them all. The warm worker also makes itself a *child
subreaper*, so orphans of its requests are re-parented to it rather than to init and stay in its
tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

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
