"""Where a backfill stands: every input row before ``done`` was submitted (or reported failed).

Rows are numbered in the order the inventory yields them (a fixed order: see
``stactools_ingest.inventories``). Batches are settled out of order by parallel senders, so the
file records the contiguous prefix only, rewritten atomically (a temporary file, then
``os.replace``) each time it grows: a SIGKILL leaves either the old prefix or the new one. What
was in flight at a kill is sent again on resume (a standard SNS topic cannot deduplicate), at
most ``workers`` x 10 messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from ingest_common.errors import IngestError
from stactools_ingest.target import locate_home


class CheckpointMismatch(IngestError):
    """The checkpoint belongs to another backfill (source, filters or request template)."""

    exit_code = 2


class Checkpoint:
    """The settled prefix of one backfill's rows, kept in a JSON file."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self.done = 0
        self.finished = False
        self._settled: set[int] = set()
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

    def settle(self, row: int) -> None:
        """Row ``row`` is published or reported; the file grows when the prefix does."""
        with self._lock:
            self._settled.add(row)
            start = self.done
            while self.done in self._settled:
                self._settled.discard(self.done)
                self.done += 1
            if self.done > start:
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
            json.dumps({"identity": self.identity, "done": self.done, "finished": self.finished})
        )
        os.replace(tmp, self.path)


def default_path(command: str, stack: str, identity: dict[str, Any]) -> Path:
    """Where a backfill's checkpoint lives when no ``--checkpoint`` is given.

    Keyed by command, stack and the backfill's identity, under the project's home (where the
    embedded pgstac lives; ``STACTOOLS_INGEST_HOME`` when set): the same command run again from
    the project finds it, a different backfill gets its own.
    """
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stack).strip("-.")[:60] or "stack"
    return locate_home().path / "checkpoints" / f"{command}-{name}-{key}.json"
