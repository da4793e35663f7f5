"""The garbage collector's pause is process-wide: threads that pause it must not undo each other.

``stactools-ingest run`` pauses it in the reading thread for the whole input while its load
worker pauses it around every poll. A pause that restored what it found on entry re-enabled the
collector under the reading thread at the worker's first idle poll (its cyclic passes then
doubled the time to parse each line).
"""

from __future__ import annotations

import gc
import threading

import pytest

from item_load.core import paused_gc


@pytest.fixture(autouse=True)
def _collector_enabled():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_short_pause_in_another_thread_does_not_end_a_long_one():
    worker_in, long_in, worker_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def worker() -> None:
        with paused_gc():  # entered first, while the collector still runs
            worker_in.set()
            long_in.wait(5)
        worker_out.set()

    thread = threading.Thread(target=worker)
    thread.start()
    worker_in.wait(5)
    with paused_gc():
        long_in.set()
        worker_out.wait(5)
        seen["inside the long pause, after the short one ended"] = gc.isenabled()
    thread.join()
    assert seen == {"inside the long pause, after the short one ended": False}
    assert gc.isenabled()


def test_nested_pauses_restore_the_collector_once_the_last_ends():
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled():
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()
