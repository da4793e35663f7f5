"""Finding and killing what a command left behind (item_gen.processes)."""

from __future__ import annotations

import os
import subprocess

from item_gen import processes


def test_a_grandchild_in_its_own_session_is_a_descendant():
    # GIVEN a shell that starts a sleep in a new session
    shell = subprocess.Popen(
        ["sh", "-c", "setsid sleep 600 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    sleeper = int(shell.stdout.readline())
    try:
        # THEN it is found below us and below the shell, and killing the shell's tree kills it
        assert {shell.pid, sleeper} <= processes.descendants(os.getpid())
        assert sleeper in processes.descendants(shell.pid)
        assert processes.kill_tree(shell.pid) == {shell.pid, sleeper}
    finally:
        shell.kill()
        shell.wait()
        shell.stdout.close()


def test_without_proc_only_the_root_is_killed_and_nothing_raises(monkeypatch, tmp_path):
    # GIVEN a system without /proc (macOS, where `stactools-ingest run` also runs warm workers)
    monkeypatch.setattr(processes, "PROC", str(tmp_path / "no-proc"))
    child = subprocess.Popen(["sleep", "600"])
    try:
        # THEN nothing is found below anyone, and killing a tree kills its root
        assert processes.descendants(os.getpid()) == set()
        assert processes.has_children() is False
        assert processes.kill_tree(child.pid) == {child.pid}
        assert child.wait(30) == -9
    finally:
        child.kill()
        child.wait()
