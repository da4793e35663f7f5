"""Read ``run``/``submit`` input files: JSON or NDJSON of requests and STAC documents, mixed."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest_common.errors import IngestError, PermanentError
from item_gen.models import CollectionRequest, is_request, parse_request
from item_load.messages import parse_message


class InputFileError(IngestError):
    """An input file is missing or unreadable; nothing was enqueued."""

    exit_code = 2


@dataclass(slots=True)
class InputRecord:
    """One object from an input file, with where it came from."""

    source: str
    obj: Any


@dataclass(slots=True)
class InputProblem:
    """A line that could not be used, reported with file and line number."""

    source: str
    reason: str


def check_files(paths: list[str]) -> None:
    """Fail before doing anything if a named file is missing."""
    for path in paths:
        if path != "-" and not Path(path).is_file():
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
            yield from _ndjson(name, enumerate(sys.stdin.buffer, start=1))
            continue
        data = Path(path).read_bytes()
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            lines = list(_ndjson(name, enumerate(data.splitlines(), start=1)))
            if any(isinstance(r, InputRecord) and isinstance(r.obj, dict) and r.obj for r in lines):
                yield from lines
            else:
                yield InputProblem(f"{name}:{e.lineno}:{e.colno}", f"not valid JSON: {e.msg}")
            continue
        items = whole if isinstance(whole, list) else [whole]
        for n, obj in enumerate(items, start=1):
            yield InputRecord(f"{name}#{n}" if isinstance(whole, list) else name, obj)


def _ndjson(name: str, lines: Iterable[tuple[int, bytes]]) -> Iterator[InputRecord | InputProblem]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            yield InputRecord(f"{name}:{lineno}", orjson.loads(line))
        except orjson.JSONDecodeError as e:
            yield InputProblem(f"{name}:{lineno}", f"not valid JSON: {e}")


def message_id(obj: Any) -> str:
    """A content-derived id, so the same input enqueued twice is one message."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def classify(record: InputRecord) -> tuple[str, int] | InputProblem:
    """``("gen"|"load", priority)`` for a record, or why it cannot be used.

    Requests are validated as ItemGen validates them; everything else goes to the load stage
    exactly when ItemLoad's own parser (``item_load.messages.parse_message``) accepts it, so
    the two never disagree. Nothing is read here: an href is checked when it is loaded.
    Priority 0 is for collections and collection requests, which must land before items.
    """
    obj = record.obj
    if is_request(obj):
        try:
            request = parse_request(obj)
        except PermanentError as e:
            return InputProblem(record.source, str(e))
        return ("gen", 0 if isinstance(request, CollectionRequest) else 1)
    try:
        parse_message(obj, "", None)
    except PermanentError as e:
        return InputProblem(
            record.source, f"not an item or collection request, nor a load message: {e}"
        )
    collection = isinstance(obj, dict) and obj.get("type") == "Collection"
    return ("load", 0 if collection else 1)
