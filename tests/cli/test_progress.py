"""Progress of ``run`` when stderr is not a terminal: one plain line every few seconds."""

from __future__ import annotations

import io

from stactools_ingest.pipeline import Counters, Enqueued
from stactools_ingest.progress import Reporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_is_a_line_every_five_seconds():
    clock, out = Clock(), io.StringIO()
    enqueued = Enqueued(gen_ids=["r1", "r2"], load_ids=["d1", "d2", "d3"])
    reporter = Reporter(enqueued, out, clock=clock)
    counters = Counters(requests_done=1, items_loaded=40)
    # GIVEN ticks four times a second for twelve seconds
    for _ in range(48):
        reporter.tick(counters, {"gen": 1, "load": 2})
        clock.now += 0.25
    reporter.close()
    # THEN two lines were written, at 5 s and 10 s, saying how far the run got
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("2/5 inputs settled | requests 1 done, 0 failed | items loaded 40")
    assert lines[0].endswith("| 5.0 s")
    assert lines[1].endswith("| 10.0 s")


def test_quiet_writes_nothing():
    clock, out = Clock(), io.StringIO()
    reporter = Reporter(Enqueued(), out, quiet=True, clock=clock)
    clock.now += 60
    reporter.tick(Counters(), {"gen": 0, "load": 0})
    assert out.getvalue() == ""


def test_plain_progress_says_how_long_is_left_at_the_rate_so_far():
    clock, out = Clock(), io.StringIO()
    enqueued = Enqueued(gen_ids=[f"r{n}" for n in range(100)])
    reporter = Reporter(enqueued, out, clock=clock)
    # GIVEN 25 of 100 inputs settled after 5 s
    clock.now += 5
    reporter.tick(Counters(requests_done=25), {"gen": 75, "load": 0})
    # THEN the line says the other 75 take about 15 s more
    assert "| ETA 0:00:15 |" in out.getvalue()


def test_no_eta_before_anything_settled():
    from stactools_ingest.progress import eta

    assert eta(0, 10, 5.0) == "ETA -"
    assert eta(10, 10, 5.0) == "ETA 0:00:00"
    assert eta(1, 3601, 1.0) == "ETA 1:00:00"


def test_publishing_shows_the_eta_when_the_total_is_known(monkeypatch):
    from ingest_common.sns_batches import PublishSummary
    from stactools_ingest.commands import submit

    lines: list[str] = []
    monkeypatch.setattr(submit.click, "echo", lambda text, err=False: lines.append(text))
    clock = Clock()
    monkeypatch.setattr(submit.time, "monotonic", clock)
    with submit._Display(total=1000) as display:
        clock.now += 10
        display.progress(PublishSummary(published=250, seconds=10.0))
    assert lines == ["published 250 of 1000, failed 0 (25/s, ETA 0:00:30)"]
