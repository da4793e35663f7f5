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
from fake_package import GROUP as FAKE_GROUP
from fake_package import build_wheel
from geotiffs import glad_collection_request, glad_item_request, glad_tiles

import item_gen.runner
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


# -- isolation, children and eviction, with a tiny local package (tests/fake_package.py)


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def fake_request(wheel: Path, *actions: str, extra_packages: tuple[str, ...] = ()):
    """A request for the fake package; ``extra_packages`` make a different environment."""
    return parse_request(
        {
            "package_name": str(wheel),
            "group_name": FAKE_GROUP,
            "create_item_args": list(actions),
            "extra_packages": list(extra_packages),
            "request_id": " ".join(actions) or "plain",
        }
    )


def alive(pid: int) -> bool:
    return not gone(pid)


def test_a_request_starts_with_the_workers_environment_cwd_and_tempdir(
    runner, settings, fake_wheel, tmp_path
):
    # GIVEN a warm worker and what a request sees in it
    pristine = runner(fake_request(fake_wheel), settings)["properties"]["seen"]
    assert pristine["probe"] is None
    assert pristine["cwd"] == os.getcwd()
    # WHEN a request changes os.environ, the cwd, tempfile's directory, the umask, sys.stdout
    # and a signal's handler
    changes = [
        "setenv:FAKEGEN_PROBE=leaked",
        f"chdir:{tmp_path}",
        f"tempdir:{tmp_path}",
        "umask:077",
        "stdout",
        "ignore-sigchld",
    ]
    runner(fake_request(fake_wheel, *changes), settings)
    # THEN the next request on the same worker sees none of it
    [worker] = runner.workers()
    assert runner(fake_request(fake_wheel), settings)["properties"]["seen"] == pristine
    assert runner.workers() == [worker]


def test_processes_a_request_leaves_behind_are_killed_with_it(runner, settings, fake_wheel):
    # GIVEN a request that leaves a child holding stdout, a daemon in its own session and an
    # orphan whose parent already exited
    doc = runner(fake_request(fake_wheel, "spawn", "daemon", "orphan"), settings)
    spawned = doc["properties"]["spawned"]
    assert len(spawned) == 3
    # THEN all of them are gone when the request has returned, and the worker serves on
    assert [pid for pid in spawned if alive(pid)] == []
    [worker] = runner.workers()
    assert alive(worker.pid)
    assert runner(fake_request(fake_wheel), settings)["id"] == "fake-item"
    assert runner.workers() == [worker]


def test_a_timed_out_request_takes_its_daemons_with_it(runner, settings, fake_wheel, tmp_path):
    # GIVEN a warm worker, and a request that starts a daemon in its own session and an orphan,
    # then hangs past its timeout
    runner(fake_request(fake_wheel), settings)
    [worker] = runner.workers()
    pids = tmp_path / "pids"
    hanging = fake_request(
        fake_wheel, f"pidfile:{pids}", "daemon", "orphan", f"waitfor:{tmp_path / 'never'}"
    )
    short = settings.model_copy(update={"request_timeout_seconds": 3})
    with pytest.raises(RequestTimedOut):
        runner(hanging, short)
    # THEN the worker and everything the request started are gone
    wait_for(lambda: gone(worker.pid), timeout=5)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    wait_for(lambda: all(gone(pid) for pid in started), timeout=5)


def environment_of(worker) -> str:
    """Which of the test environments a worker serves (by its extra ``requests`` pin)."""
    pins = [a for a in worker.cmd if a.startswith("requests")]
    return "A" if pins == ["requests"] else pins[0].removeprefix("requests>=")


def test_the_least_recently_used_environment_is_evicted(runner, settings, fake_wheel):
    # GIVEN warm workers kept for at most two environments
    two = settings.model_copy(update={"warm_max_environments": 2})
    envs = {"A": (), "1": ("requests>=1",), "2": ("requests>=2",)}

    def run(env: str) -> None:
        assert runner(fake_request(fake_wheel, extra_packages=envs[env]), two)["id"] == "fake-item"

    run("A")
    run("1")
    [worker_a] = [w for w in runner.workers() if environment_of(w) == "A"]
    [worker_1] = [w for w in runner.workers() if environment_of(w) == "1"]
    # WHEN A is used again and then a third environment
    run("A")
    run("2")
    # THEN the least recently used one (1) lost its worker; A's worker is still the same
    assert sorted(environment_of(w) for w in runner.workers()) == ["2", "A"]
    wait_for(lambda: gone(worker_1.pid), timeout=10)
    assert alive(worker_a.pid)
    # and the evicted environment starts a fresh worker when it is used again
    run("1")
    assert sorted(environment_of(w) for w in runner.workers()) == ["1", "2"]


def test_a_busy_worker_is_not_killed_by_eviction(runner, settings, fake_wheel, tmp_path):
    # GIVEN one environment kept, and a request running in it
    one = settings.model_copy(update={"warm_max_environments": 1})
    flag = tmp_path / "go"
    results: list[dict] = []
    busy = threading.Thread(
        target=lambda: results.append(runner(fake_request(fake_wheel, f"waitfor:{flag}"), one))
    )
    busy.start()
    [worker] = wait_for(lambda: runner.workers())
    # WHEN another environment is used meanwhile
    assert runner(fake_request(fake_wheel, extra_packages=("requests>=1",)), one)["id"]
    # THEN the busy worker finishes its request, and stops after it
    assert alive(worker.pid)
    flag.touch()
    busy.join(60)
    assert [r["id"] for r in results] == ["fake-item"]
    wait_for(lambda: gone(worker.pid), timeout=10)
    assert [environment_of(w) for w in runner.workers()] == ["1"]


def test_endless_stderr_is_cut_back_to_its_end(runner, settings, fake_wheel, monkeypatch):
    # GIVEN worker stderr files kept under 1 MiB, and a request that writes 20 MB to stderr, each
    # MB waiting until the file is back under 1.5 MB (it fails after 30 s otherwise)
    monkeypatch.setattr(item_gen.runner, "OUTPUT_KEEP_BYTES", 1024 * 1024)
    # THEN it runs to its end
    assert runner(fake_request(fake_wheel, "noise:20"), settings)["id"] == "fake-item"
