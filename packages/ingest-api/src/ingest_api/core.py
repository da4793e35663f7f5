"""The ingest API's work, whoever serves it (API Gateway's Lambda, or ``serve``): validate what
is posted as the stages would, and answer from the ledger a page at a time."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from ingest_api.validation import check_documents, classify
from ingest_common.errors import PermanentError
from ingest_common.ledger import PAGE_MAX, STATES, clean_request_id
from item_load import ledger

MAX_OBJECTS = 2_000
"""Per call to the deployment's API: what its Lambda publishes well inside API Gateway's 29 s
(``submit`` takes files of any size)."""


class Unusable(ValueError):
    """Posted objects that cannot be queued: ``(position, reason)`` each; nothing was queued."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__("; ".join(f"#{n}: {reason}" for n, reason in problems))
        self.problems = problems

    def detail(self) -> list[dict[str, Any]]:
        """The problems as the API answers them (422)."""
        return [{"index": n, "reason": reason} for n, reason in self.problems]


@dataclass(frozen=True, slots=True)
class Routed:
    """A posted object that a stage will take: its queue, priority and the id it gave itself."""

    stage: str
    priority: int
    obj: Any
    given_id: str | None


def validate(objs: Sequence[Any]) -> list[Routed]:
    """Every object routed, or Unusable naming each one that is not (all or nothing)."""
    if not objs:
        raise Unusable([(0, "an empty list: nothing to queue")])
    routed: list[Routed] = []
    problems: list[tuple[int, str]] = []
    for n, obj in enumerate(objs):
        try:
            stage, priority = classify(obj)
            check_documents(obj)
        except PermanentError as e:
            problems.append((n, str(e)))
            continue
        given = clean_request_id(obj.get("request_id")) if stage == "gen" else None
        routed.append(Routed(stage, priority, obj, given))
    if problems:
        raise Unusable(problems)
    return routed


def parse_body(
    body: bytes | str | None,
    max_objects: int = MAX_OBJECTS,
    bulk_hint: str = "stactools-ingest submit FILE --stack NAME publishes files of any size",
) -> list[Any]:
    """The posted objects: one, or a list; ValueError saying what is wrong with the body."""
    try:
        data = orjson.loads(body or b"")
    except orjson.JSONDecodeError as e:
        raise ValueError(f"body is not valid JSON: {e}") from None
    objs = data if isinstance(data, list) else [data]
    if len(objs) > max_objects:
        raise ValueError(f"{len(objs)} objects; send at most {max_objects} per call ({bulk_hint})")
    return objs


def _no_nul(**values: str | None) -> None:
    """PostgreSQL text cannot hold NUL: a filter with one matches nothing, and says so (422)."""
    for name, value in values.items():
        if value is not None and "\x00" in value:
            raise ValueError(f"{name} contains NUL (U+0000), which no ledger value can hold")


def encode_token(row: dict[str, Any]) -> str:
    """Where the next page starts: after this row (newest first)."""
    raw = orjson.dumps([row["updated_at"], row["request_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str]:
    """The row a page token points after; ValueError for a token this API did not give."""
    try:
        padded = token + "=" * (-len(token) % 4)
        updated, request_id = orjson.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(updated), str(request_id)
    except Exception:
        raise ValueError("token is not one this API gave out; start from the first page") from None


def page(
    conn: psycopg.Connection,
    *,
    state: str | None = None,
    since: datetime | None = None,
    collection: str | None = None,
    submission_id: str | None = None,
    limit: int = 100,
    token: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the ledger, newest first, and the token of the next (None at the end)."""
    _no_nul(state=state, collection=collection, submission=submission_id, token=token)
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1 to {PAGE_MAX}")
    before = decode_token(token) if token else None
    if not ledger.exists(conn):
        return [], None
    rows = ledger.find(
        conn,
        state=state,
        since=since,
        collection=collection,
        submission_id=submission_id,
        limit=limit,
        before=before,
    )
    return rows, encode_token(rows[-1]) if len(rows) == limit else None


def counts(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    collection: str | None = None,
    submission_id: str | None = None,
) -> dict[str, int]:
    """How many requests are in each state: the whole of what matches, not one page."""
    _no_nul(collection=collection, submission=submission_id)
    if not ledger.exists(conn):
        return dict.fromkeys(STATES, 0)
    return ledger.counts(conn, since=since, collection=collection, submission_id=submission_id)


def one(conn: psycopg.Connection, request_id: str) -> dict[str, Any] | None:
    """One request's row, or None (an id with NUL names none)."""
    if "\x00" in request_id:
        return None
    return ledger.get(conn, request_id) if ledger.exists(conn) else None
