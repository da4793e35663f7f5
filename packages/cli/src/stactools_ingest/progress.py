"""Progress of ``stactools-ingest run``: a live bar on a terminal, a line every few seconds else.

Progress is counted in inputs (requests and documents) settled out of all this run processes;
an input is unsettled while its message, or its request's generated item, is still queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # publishing to a stack shows progress too, without the local pipeline
    from stactools_ingest.pipeline import Counters, Enqueued

PLAIN_EVERY_SECONDS = 5.0


def eta(done: int, total: int, elapsed: float) -> str:
    """``ETA h:mm:ss`` for the rest of ``total`` at the rate so far (``ETA -`` before any)."""
    if done <= 0 or elapsed <= 0:
        return "ETA -"
    left = max(0.0, elapsed * (total - done) / done)
    whole = round(left)
    return f"ETA {whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Reporter:
    """Receives the pipeline's ticks and shows them; ``close`` before printing the summary."""

    def __init__(
        self,
        enqueued: Enqueued,
        stream: IO[str],
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enqueued = enqueued
        self.stream = stream
        self.quiet = quiet
        self.clock = clock
        self.started = clock()
        self.next_plain = self.started + PLAIN_EVERY_SECONDS
        self._bar: Any = None
        self._task: Any = None
        if not quiet and stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=stream),
                transient=True,
            )
            self._task = self._bar.add_task("ingesting", total=None, detail="")
            self._bar.start()

    def total(self) -> int:
        """Inputs this run processes (known once the run has looked at what was queued)."""
        e = self.enqueued
        return len(e.gen_ids) + len(e.load_ids) + len(e.problems)

    def line(self, c: Counters, pending: dict[str, int]) -> str:
        """One line of plain progress."""
        elapsed = self.clock() - self.started
        total = self.total()
        settled = max(0, total - pending.get("gen", 0) - pending.get("load", 0))
        rate = c.items_loaded / elapsed if elapsed > 0 else 0.0
        return (
            f"{settled}/{total} inputs settled"
            f" | requests {c.requests_done} done, {c.requests_failed} failed"
            f" | items loaded {c.items_loaded} ({rate:,.0f}/s), {c.load_failed} failed"
            f" | queued gen {pending.get('gen', 0)} load {pending.get('load', 0)}"
            f" | retries {c.retries} | {eta(settled, total, elapsed)} | {elapsed:,.1f} s"
        )

    def tick(self, c: Counters, pending: dict[str, int]) -> None:
        """Show the state after one tick of the pipeline's monitor."""
        if self.quiet:
            return
        if self._bar is not None:
            total = self.total()
            settled = max(0, total - pending.get("gen", 0) - pending.get("load", 0))
            self._bar.update(
                self._task,
                total=total,
                completed=settled,
                detail=(
                    f"items {c.items_loaded:,} | failed {c.requests_failed + c.load_failed}"
                    f" | retries {c.retries}"
                ),
            )
        elif self.clock() >= self.next_plain:
            self.next_plain = self.clock() + PLAIN_EVERY_SECONDS
            print(self.line(c, pending), file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.stop()
