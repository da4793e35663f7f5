"""Read ``run``/``submit`` input files: JSON or NDJSON of requests and STAC documents, mixed."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest_api import validation
from ingest_common.errors import IngestError, PermanentError


class InputFileError(IngestError):
    """An input file is missing or unreadable; nothing was enqueued."""

    exit_code = 2


class InputChanged(PermanentError):
    """An input file changed or vanished after its lines were queued by reference."""


@dataclass(frozen=True, slots=True)
class FileSpan:
    """Where an input line lives: the queue keeps this instead of a copy of the line.

    ``stamp`` (size and modification time) tells whether the file is still the one queued.
    """

    path: str
    start: int
    length: int
    stamp: str

    @staticmethod
    def stamp_of(path: str) -> str:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def read(self, fd: int | None = None) -> bytes:
        """The line's bytes; InputChanged when the file is not the one that was queued."""
        try:
            if self.stamp_of(self.path) != self.stamp:
                raise InputChanged(
                    f"{self.path} changed since it was queued; run it again to queue it anew"
                )
            if fd is not None:
                return os.pread(fd, self.length, self.start)
            with open(self.path, "rb") as f:
                f.seek(self.start)
                return f.read(self.length)
        except OSError as e:
            raise InputChanged(f"{self.path} can no longer be read ({e.strerror})") from e


@dataclass(slots=True)
class InputRecord:
    """One object from an input file, with where it came from (``span``: its bytes there).

    ``key`` is the hash of the NDJSON line (or the one-document file) it was read from: a
    document's message id (see ``record_id``).
    """

    source: str
    obj: Any
    span: FileSpan | None = None
    key: str | None = None


@dataclass(slots=True)
class InputProblem:
    """A line that could not be used, reported with file and line number."""

    source: str
    reason: str


def check_files(paths: list[str]) -> None:
    """Fail before doing anything if a named file is missing, or named in bytes that are not
    UTF-8 (the queue keeps where a line is as text, and could not say where it was)."""
    for path in paths:
        if path == "-":
            continue
        try:
            str(Path(path).absolute()).encode()
        except UnicodeEncodeError:
            shown = path.encode(errors="surrogateescape").decode(errors="replace")
            raise InputFileError(
                f"{shown}: the file's path is not valid UTF-8; rename it (or the directory "
                "it is in)"
            ) from None
        if not Path(path).is_file():
            raise InputFileError(f"{path}: no such file")


def read_inputs(paths: list[str]) -> Iterator[InputRecord | InputProblem]:
    """Objects from each file: a whole-file JSON document (object or array), else NDJSON lines.

    A file that is neither, with not one line holding a JSON object, is a JSON document with a
    syntax error (pretty-printed, say): that one error is reported with its line and column,
    not one error per line.
    """
    for path in paths:
        name = "<stdin>" if path == "-" else path
        if path == "-":
            yield from _ndjson(name, ((n, line, 0) for n, line in enumerate(sys.stdin.buffer, 1)))
            continue
        where = (str(Path(path).absolute()), FileSpan.stamp_of(path))
        data = Path(path).read_bytes()
        if _is_ndjson(data):
            yield from _ndjson(name, _lines_with_offsets(data), where)
            continue
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            lines = _ndjson(name, _lines_with_offsets(data), where)
            held: list[InputRecord | InputProblem] = []
            for record in lines:  # streamed once a line holds an object: loading starts early
                held.append(record)
                if isinstance(record, InputRecord) and isinstance(record.obj, dict) and record.obj:
                    yield from held
                    yield from lines
                    break
            else:
                yield InputProblem(f"{name}:{e.lineno}:{e.colno}", f"not valid JSON: {e.msg}")
            continue
        if not isinstance(whole, list):
            # known by its bytes, as the same document on a line of a longer file would be
            yield InputRecord(name, whole, None, _digest(data.strip()))
            continue
        for n, obj in enumerate(whole, start=1):
            yield InputRecord(f"{name}#{n}", obj)


_NON_SPACE = re.compile(rb"\S")


def _is_ndjson(data: bytes) -> bool:
    """Whether the first line with content is a JSON value by itself and more content follows.

    Then the file cannot be one JSON document (nothing may follow a document but whitespace,
    and no JSON value continues across a line that is a value already), and parsing it whole
    first only to fail would cost a fifth of a second per 100 MB.
    """
    first = _NON_SPACE.search(data)
    if first is None:
        return False
    end = data.find(b"\n", first.start())
    if end < 0 or _NON_SPACE.search(data, end) is None:
        return False
    try:
        orjson.loads(data[first.start() : end])
    except orjson.JSONDecodeError:
        return False
    return True


def _lines_with_offsets(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """``(line number, line, byte offset)`` of each line, cut from ``data`` one at a time
    (splitting it all at once copied the file before the first line could load)."""
    start, size, lineno = 0, len(data), 0
    while start <= size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        lineno += 1
        yield lineno, data[start:end], start
        start = end + 1


def _ndjson(
    name: str,
    lines: Iterable[tuple[int, bytes, int]],
    where: tuple[str, str] | None = None,
) -> Iterator[InputRecord | InputProblem]:
    for lineno, line, start in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield InputProblem(f"{name}:{lineno}", f"not valid JSON: {e}")
            continue
        span = None if where is None else FileSpan(where[0], start, len(line), where[1])
        yield InputRecord(f"{name}:{lineno}", obj, span, _digest(line.strip()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def message_id(obj: Any) -> str:
    """A content-derived id, so the same input enqueued twice is one message."""
    return _digest(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))


def record_id(record: InputRecord, queue: str) -> str:
    """The message id of ``record`` on ``queue``: the same input read twice is one message.

    A STAC document read from an NDJSON line is identified by the line's bytes: writing a
    canonical form of each item to hash it cost more than a tenth of loading it. The same
    document laid out otherwise is then another message, which loads again to the same
    row (newest wins). Requests keep the id of their content, whatever their layout: it is
    their request id in the ledger when they name none.
    """
    if queue == validation.LOAD and record.key is not None:
        return record.key
    return message_id(record.obj)


def classify(record: InputRecord) -> tuple[str, int] | InputProblem:
    """``("gen"|"load", priority)`` for a record, or why it cannot be used.

    Requests are validated as ItemGen validates them; everything else goes to the load stage
    exactly when ItemLoad's own parser (``item_load.messages.parse_message``) accepts it, so
    the two never disagree. Nothing is read here: an href is checked when it is loaded.
    Priority 0 is for collections and collection requests, which must land before items.
    """
    try:
        return validation.classify(record.obj)
    except PermanentError as e:
        return InputProblem(record.source, str(e))
