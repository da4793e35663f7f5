"""The warm runner with the real GLAD package: same output as uvx per request, and it recovers."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from geotiffs import glad_collection_request, glad_item_request, glad_tiles

from item_gen.errors import PackageFailed, RequestTimedOut
from item_gen.models import parse_request
from item_gen.runner import run_once
from item_gen.settings import GenSettings
from item_gen.warm import WarmRunner, runner_for, shared_runner


@pytest.fixture
def runner():
    runner = WarmRunner()
    yield runner
    runner.close()


@pytest.fixture
def settings() -> GenSettings:
    return GenSettings(request_timeout_seconds=120, warm_workers_per_env=2)


def item_request(tif: Path, root: Path):
    return parse_request(glad_item_request(tif, root))


def hanging_tile(root: Path) -> Path:
    """A tile path the package blocks on: a FIFO nobody writes to never finishes opening."""
    fifo = root / "2020" / "40N_000E.tif"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    return fifo


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie nobody reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def wait_for(predicate, timeout: float = 30.0):
    """Poll until ``predicate()`` returns something truthy, and return it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {predicate}")


def without_workdir(doc: dict) -> dict:
    """Collections link to the temporary file they were written to; that path differs per run."""
    links = [
        {**link, "href": re.sub(r"stactools-ingest-[^/]+", "<tmp>", link["href"])}
        for link in doc.get("links", [])
    ]
    return {**doc, "links": links}


def test_output_is_identical_to_the_one_shot_path(runner, settings, tmp_path):
    # GIVEN item requests for two tiles and a collection request
    tifs = glad_tiles(tmp_path)
    requests = [item_request(t, tmp_path) for t in tifs]
    collection = parse_request(glad_collection_request())
    # WHEN both runners handle them
    # THEN the documents are the same, key for key
    for request in requests:
        assert runner(request, settings) == run_once(request, settings)
    assert without_workdir(runner(collection, settings)) == without_workdir(
        run_once(collection, settings)
    )
    # and a failing request fails the same way: same exit status, same end of the traceback
    missing = item_request(tmp_path / "2020" / "40N_000E.tif", tmp_path)
    with pytest.raises(PackageFailed) as warm:
        runner(missing, settings)
    with pytest.raises(PackageFailed) as once:
        run_once(missing, settings)
    for message in (str(warm.value), str(once.value)):
        assert "stac gladglclu2020 create-item" in message
        assert "exited 1" in message
        assert "40N_000E.tif: No such file or directory" in message


def test_a_failing_request_does_not_break_the_next_one(runner, settings, tmp_path):
    tif = glad_tiles(tmp_path)[0]
    good = item_request(tif, tmp_path)
    assert runner(good, settings)["id"] == "2020_50N_010E"
    [worker] = runner.workers()
    # a package exception, then a click usage error (exit 2, as the `stac` script reports it)
    with pytest.raises(PackageFailed, match=r"(?s)exited 1 \(in its warm worker\).*No such file"):
        runner(item_request(tmp_path / "2020" / "40N_000E.tif", tmp_path), settings)
    bad_option = parse_request(
        {**glad_item_request(tif, tmp_path), "create_item_options": {"x": "1"}}
    )
    with pytest.raises(PackageFailed, match=r"(?s)exited 2 .*No such option '--x'"):
        runner(bad_option, settings)
    assert runner(good, settings)["id"] == "2020_50N_010E"
    assert runner.workers() == [worker]


def test_a_killed_worker_is_restarted(runner, settings, tmp_path):
    tif = glad_tiles(tmp_path)[0]
    request = item_request(tif, tmp_path)
    runner(request, settings)
    [worker] = runner.workers()
    # WHEN the idle worker is killed
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: gone(worker.pid))
    # THEN the next request runs on a new worker
    assert runner(request, settings)["id"] == "2020_50N_010E"
    [replacement] = runner.workers()
    assert replacement.pid != worker.pid


def test_a_worker_dying_mid_request_is_retried_once_then_fails(runner, settings, tmp_path):
    # GIVEN a worker that has served a request, then gets one that hangs
    tif = glad_tiles(tmp_path)[0]
    runner(item_request(tif, tmp_path), settings)
    [first] = runner.workers()
    hanging = item_request(hanging_tile(tmp_path), tmp_path)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            runner(hanging, settings)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1)  # the request is sent and the package is blocked opening the FIFO
    # WHEN the reused worker is killed, the request is retried on a fresh worker...
    os.kill(first.pid, signal.SIGKILL)
    second = wait_for(lambda: [w for w in runner.workers() if w.pid != first.pid])[0]
    # ...and when that fresh worker is killed too, the request fails
    os.kill(second.pid, signal.SIGKILL)
    thread.join(60)
    [error] = outcome
    assert isinstance(error, PackageFailed)
    assert "stac gladglclu2020 create-item" in str(error)
    assert "warm worker died while running it" in str(error)
    # THEN the runner still serves requests
    assert runner(item_request(tif, tmp_path), settings)["id"] == "2020_50N_010E"


def test_timeout_kills_the_worker_and_recovers(runner, settings, tmp_path):
    tif = glad_tiles(tmp_path)[0]
    runner(item_request(tif, tmp_path), settings)
    [worker] = runner.workers()
    hanging = item_request(hanging_tile(tmp_path), tmp_path)
    started = time.monotonic()
    with pytest.raises(RequestTimedOut, match=r"create-item .* ran longer than 2 s and was killed"):
        runner(hanging, settings.model_copy(update={"request_timeout_seconds": 2}))
    assert time.monotonic() - started < 10
    wait_for(lambda: gone(worker.pid), timeout=5)
    assert runner.workers() == []
    assert runner(item_request(tif, tmp_path), settings)["id"] == "2020_50N_010E"


def test_concurrent_calls_from_threads_all_succeed(runner, settings, tmp_path):
    # GIVEN eight tiles and a pool of two workers
    corners = [(lon, 50) for lon in range(0, 80, 10)]
    requests = [item_request(t, tmp_path) for t in glad_tiles(tmp_path, corners=corners)]
    # WHEN six threads run them all three times over
    with ThreadPoolExecutor(6) as pool:
        docs = list(pool.map(lambda r: runner(r, settings), requests * 3))
    # THEN every request got its own item, from at most two workers
    assert [d["id"] for d in docs] == [f"2020_50N_{lon:03d}E" for lon, _ in corners] * 3
    assert 1 <= len(runner.workers()) <= 2


def test_warm_runner_setting_chooses_the_runner():
    assert runner_for(GenSettings(warm_runner=False)) is run_once
    assert runner_for(GenSettings(warm_runner=True)) is shared_runner()
