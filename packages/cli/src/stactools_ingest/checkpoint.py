"""Where a backfill stands: every row before ``done`` was submitted (or reported failed).

A backfill (an inventory, a crawl, a dataset) is a sequence of rows in a fixed order, each with a
key that names it (an inventory row's href, a crawled document's href). Batches are settled out of
order by parallel senders, so the file records the contiguous prefix only, rewritten atomically
(a temporary file, then ``os.replace``) each time it grows: a SIGKILL leaves either the old
prefix or the new one. What was in flight at a kill is sent again on resume (a standard SNS topic
cannot deduplicate), at most ``workers`` x 10 messages.

A count alone is not enough to resume: a catalog whose broken link was mended, or an inventory
file with a line inserted, shifts every row after it, and skipping ``done`` rows would then skip
some that were never sent. So the file also keeps a hash of the settled rows' keys in order, and
a resume first hashes the first ``done`` keys of the source as it is now: a different hash stops
it before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest_common.errors import IngestError
from ingest_common.ledger import new_submission_id
from stactools_ingest.target import locate_home

if TYPE_CHECKING:
    from stactools_ingest.inputs import InputProblem, InputRecord


class CheckpointMismatch(IngestError):
    """The checkpoint belongs to another backfill, or its source changed under it."""

    exit_code = 2


@dataclass(slots=True)
class Row:
    """One row of a backfill: its key, and its record (None for a row a resume skips, which
    need not be read or built)."""

    key: str
    record: InputRecord | InputProblem | None


class Checkpoint:
    """The settled prefix of one backfill's rows, kept in a JSON file."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self.done = 0
        self.finished = False
        # One submission however often the backfill is resumed (``status --submission``).
        self.submission_id = new_submission_id()
        self.prefix = hashlib.sha256().hexdigest()  # of no keys
        self._hash = hashlib.sha256()
        self._settled: dict[int, str] = {}
        self._lock = threading.Lock()
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except ValueError as e:
                raise CheckpointMismatch(
                    f"checkpoint {path} is not JSON ({e}); delete it"
                ) from None
            if saved.get("identity") != identity:
                raise CheckpointMismatch(
                    f"checkpoint {path} is for another backfill (source, filters or request "
                    "template differ); pass another --checkpoint, or delete it to start over"
                )
            self.done = int(saved.get("done", 0))
            self.finished = bool(saved.get("finished", False))
            self.prefix = str(saved.get("prefix", ""))
            self.submission_id = str(saved.get("submission_id") or self.submission_id)

    def verify(self, rows: Iterator[Row]) -> None:
        """Take the source's first ``done`` rows from ``rows`` and check they are those the
        checkpoint settled (then hashing carries on from there); CheckpointMismatch when the
        source changed before that point."""
        digest = hashlib.sha256()
        seen = 0
        while seen < self.done:
            row = next(rows, None)
            if row is None:
                break
            digest.update(_entry(row.key))
            seen += 1
        if seen != self.done or digest.hexdigest() != self.prefix:
            raise CheckpointMismatch(
                f"the source changed since checkpoint {self.path} was written (its first "
                f"{self.done} rows are not the ones submitted then: a link mended or broken, a "
                "line added or removed), so resuming could skip rows never submitted; delete "
                "the checkpoint, or pass --no-checkpoint, to submit everything again"
            )
        self._hash = digest

    def settle(self, row: int, key: str) -> None:
        """Row ``row`` is published or reported; the file grows when the prefix does."""
        with self._lock:
            self._settled[row] = key
            start = self.done
            while self.done in self._settled:
                self._hash.update(_entry(self._settled.pop(self.done)))
                self.done += 1
            if self.done > start:
                self.prefix = self._hash.hexdigest()
                self._write()

    def finish(self) -> None:
        """Every row is settled: a rerun submits nothing."""
        with self._lock:
            self.finished = True
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "identity": self.identity,
                    "done": self.done,
                    "prefix": self.prefix,
                    "finished": self.finished,
                    "submission_id": self.submission_id,
                }
            )
        )
        os.replace(tmp, self.path)


def _entry(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape") + b"\0"


def default_path(command: str, stack: str, identity: dict[str, Any]) -> Path:
    """Where a backfill's checkpoint lives when no ``--checkpoint`` is given.

    Keyed by command, stack and the backfill's identity, under the project's home (where the
    embedded pgstac lives; ``STACTOOLS_INGEST_HOME`` when set): the same command run again from
    the project finds it, a different backfill gets its own.
    """
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stack).strip("-.")[:60] or "stack"
    return locate_home().path / "checkpoints" / f"{command}-{name}-{key}.json"
