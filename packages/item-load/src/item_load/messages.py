"""Turn one load-topic message into the STAC documents it carries.

Accepted shapes (design.md): an Item, a Collection or Catalog, a FeatureCollection, a pointer
``{"href": "s3://…" | "https://…" | "file://…"}`` to any of those (JSON or NDJSON), S3
``ObjectCreated`` notifications for ``.json`` / ``.geojson`` / ``.ndjson`` objects, and
``{"type": "Delete", "collection": C, "ids": [...]}``. Which hrefs
may actually be read, and how much of them, is the fetcher's policy (``item_load.fetch``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import orjson

from ingest_common.ledger import REPORTED_STATES, STATUS_TYPE, clean_request_id
from item_load.errors import FetchUnavailable, InvalidMessage
from item_load.fetch import HrefFetcher, HrefPolicy, shown

STAC_SUFFIXES = (".json", ".geojson", ".ndjson")
MAX_DELETE_IDS = 10_000
"""Ids one Delete message may name: its ids go to PostgreSQL as one array, per partition."""
COLLECTION_TYPES = frozenset({"Collection", "Catalog"})
"""Documents stored in pgstac's collections table. Catalogs go there too, as eoapi-cdk's loader
stores them since 2026: the Multi-Tenant Catalogs extension of stac-fastapi-pgstac reads them."""
R = TypeVar("R")


def is_collection(body: Any) -> bool:
    """Whether a document is stored as a collection (a Collection or a Catalog), not an item."""
    return isinstance(body, dict) and body.get("type") in COLLECTION_TYPES


@dataclass(slots=True)
class Document:
    """One STAC object and the message it came from, so failures map back to that message."""

    message_id: str
    sent_at: float | None
    body: dict[str, Any]
    request_id: str | None = None  # the ledger's key (ingest_common.ledger); None: unrecorded
    attempts: int = 0  # how often its message was received, this time included
    submission_id: str | None = None  # the submission its message belongs to
    span: Any = None  # the item's time span, when its reader checked it already (check_item)
    geometry: str | None = None  # and its geometry as hex EWKB, when its reader made it (rows)

    def release_body(self) -> None:
        """Keep only what failure reports name (type, id, collection) and drop the rest.

        A batch's item dicts are its largest allocation. Releasing each one as soon as its row
        is in the COPY stream frees it while PostgreSQL is still parsing the stream, instead of
        after the load, when nothing else can overlap with it (about 8 ms per 1000 items).
        """
        body = self.body
        self.body = {key: body[key] for key in ("type", "id", "collection") if key in body}


Fetcher = Callable[[str], bytes]


@cache
def _default_fetcher() -> HrefFetcher:
    """The strictest fetcher (s3 and https, public hosts) for callers that pass none."""
    return HrefFetcher(HrefPolicy())


def _decode_stac_bytes(data: bytes, source: str) -> list[Any]:
    """JSON document, or NDJSON with one document per line."""
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError:
        pass
    docs = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            docs.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise InvalidMessage(f"{source} line {n} is not valid JSON: {e}") from e
    return docs


def _s3_event_hrefs(message: dict[str, Any]) -> Iterator[str]:
    for record in message["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = (s3.get("object") or {}).get("key")
        if not bucket or not key:
            raise InvalidMessage("S3 event record without bucket name or object key")
        key = unquote_plus(key)  # S3 notifications URL-encode keys, with '+' for spaces
        if not key.lower().endswith(STAC_SUFFIXES):
            raise InvalidMessage(
                f"s3://{bucket}/{key} is not a .json/.geojson/.ndjson object; "
                "narrow the bucket notification filter to STAC files"
            )
        yield f"s3://{bucket}/{key}"


def _is_s3_event(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("Records"), list)
        and any(
            isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in message["Records"]
        )
    )


def check_delete(obj: dict[str, Any], origin: str) -> None:
    """InvalidMessage unless ``obj`` names a collection and a list of item ids to delete."""
    collection = obj.get("collection")
    if not isinstance(collection, str) or not collection:
        raise InvalidMessage(
            f"{origin} is a Delete without a 'collection' string; name the collection of the ids"
        )
    ids = obj.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidMessage(
            f"{origin} is a Delete without an 'ids' list of item id strings (non-empty)"
        )
    if len(ids) > MAX_DELETE_IDS:
        raise InvalidMessage(
            f"{origin} is a Delete of {len(ids)} ids; send at most {MAX_DELETE_IDS} per message"
        )


def check_status_report(obj: dict[str, Any], origin: str) -> None:
    """InvalidMessage unless ``obj`` is a status report the ledger can record."""
    if clean_request_id(obj.get("request_id")) is None:
        raise InvalidMessage(f"{origin} is a status report without a usable 'request_id'")
    if obj.get("state") not in REPORTED_STATES:
        raise InvalidMessage(
            f"{origin} is a status report whose 'state' is not one of "
            f"{', '.join(sorted(REPORTED_STATES))}"
        )
    for key, kind in (("stage", str), ("error", str), ("collection", str), ("submission_id", str)):
        if obj.get(key) is not None and not isinstance(obj[key], kind):
            raise InvalidMessage(f"{origin} is a status report whose {key!r} is not a string")
    for key in ("attempts", "generated"):
        value = obj.get(key)
        if value is not None and (type(value) is not int or not 0 <= value < 2**31):
            raise InvalidMessage(f"{origin} is a status report whose {key!r} is not a count")


def _flatten(obj: Any, origin: str, fetched: bool = False) -> Iterator[dict[str, Any]]:
    """The STAC objects in one decoded document; reasons never quote a fetched document."""
    if not isinstance(obj, dict):
        raise InvalidMessage(f"{origin} is a JSON {type(obj).__name__}, not a STAC object")
    kind = obj.get("type")
    if kind == "Feature" or kind in COLLECTION_TYPES:
        yield obj
    elif kind == "Delete":
        check_delete(obj, origin)
        yield obj
    elif kind == STATUS_TYPE and not fetched:  # ItemGen's reports travel inline, never by href
        check_status_report(obj, origin)
        yield obj
    elif kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InvalidMessage(f"{origin} is a FeatureCollection without a 'features' list")
        for feature in features:
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise InvalidMessage(f"{origin} has a feature that is not a STAC Item")
            yield feature
    else:
        # Never the keys, and for a fetched document not even its type: whatever an href made
        # us read that is not STAC must not come back out through logs or the DLQ.
        what = "" if fetched or not isinstance(kind, str | None) else f" (type={kind!r:.40})"
        raise InvalidMessage(
            f"{origin} is not a STAC Item, Collection, Catalog, FeatureCollection, Delete, "
            f"href pointer or S3 event{what}"
        )


@dataclass(slots=True)
class Parsed:
    """One message after parsing: its inline documents, and the hrefs still to be read."""

    message_id: str
    sent_at: float | None
    documents: list[Document]
    hrefs: list[str]
    request_id: str | None = None
    attempts: int = 0
    submission_id: str | None = None

    def document(self, body: dict[str, Any]) -> Document:
        """A document of this message, with the message's send time and ledger key."""
        return Document(
            self.message_id, self.sent_at, body, self.request_id, self.attempts, self.submission_id
        )


def parse_message(
    message: Any,
    message_id: str,
    sent_at: float | None,
    request_id: str | None = None,
    attempts: int = 0,
    submission_id: str | None = None,
) -> Parsed:
    """Parse a decoded message without reading anything; raises a PermanentError if malformed."""
    parsed = Parsed(message_id, sent_at, [], [], request_id, attempts, submission_id)
    if isinstance(message, dict) and message.get("Event") == "s3:TestEvent":
        return parsed  # S3 sends this once per new notification
    if _is_s3_event(message):
        parsed.hrefs = list(_s3_event_hrefs(message))
    elif isinstance(message, dict) and "href" in message and "type" not in message:
        if not isinstance(message["href"], str):
            raise InvalidMessage("'href' must be a string URL (s3://, https:// or file://)")
        parsed.hrefs = [message["href"]]
    else:
        parsed.documents = [parsed.document(d) for d in _flatten(message, "message")]
    return parsed


def resolve(parsed: Parsed, fetched: Mapping[str, bytes | BaseException]) -> list[Document]:
    """The message's documents, given what its hrefs read; raises the first href's error."""
    docs = list(parsed.documents)
    for href in parsed.hrefs:
        data = fetched[href]
        if isinstance(data, BaseException):
            raise data
        name = shown(href)
        for obj in _decode_stac_bytes(data, name):
            docs.extend(parsed.document(d) for d in _flatten(obj, name, True))
    return docs


def _read_one(fetcher: Fetcher, href: str) -> bytes | BaseException:
    try:
        return fetcher(href)
    except Exception as e:  # kept for the record that named it; never fails the others
        return e


def documents_from_message(
    message: Any, message_id: str, sent_at: float | None, fetcher: Fetcher | None = None
) -> list[Document]:
    """Expand a decoded message into documents, reading its hrefs one by one.

    Raises a PermanentError saying what was wrong, or a TransientError when a read may succeed
    later (S3 throttling, a 5xx).
    """
    parsed = parse_message(message, message_id, sent_at)
    fetch = fetcher or _default_fetcher()
    return resolve(parsed, {href: _read_one(fetch, href) for href in dict.fromkeys(parsed.hrefs)})


class BatchReader:
    """Parses every record of a batch first, then reads all their hrefs at once.

    Reading one by one, a batch of S3 notifications costs the sum of their latencies; a
    bounded pool costs about the slowest. Each record keeps its own outcome: a refused or
    failed href fails only the records that named it, through ``documents``.
    """

    def __init__(self, fetcher: Fetcher, workers: int = 16) -> None:
        self.fetcher = fetcher
        self.workers = workers
        self._parsed: dict[str, Parsed | BaseException] = {}
        self._fetched: dict[str, bytes | BaseException] = {}

    def read(
        self,
        records: Iterable[tuple[str, R]],
        parse: Callable[[str, R], Parsed],
        start_window: float | None = None,
    ) -> None:
        """Parse each ``(message id, record)`` (``parse`` raising fails that record alone), then
        read every href the batch names, each once.

        An href not started within ``start_window`` seconds fails with a TransientError, so a
        batch full of slow hrefs ends in time to load the rest and SQS retries those later.
        """
        start_by = None if start_window is None else time.monotonic() + start_window
        self._parsed, self._fetched = {}, {}
        for message_id, record in records:
            try:
                self._parsed[message_id] = parse(message_id, record)
            except Exception as e:  # re-raised by documents() for this record alone
                self._parsed[message_id] = e
        hrefs = list(
            dict.fromkeys(
                href for p in self._parsed.values() if isinstance(p, Parsed) for href in p.hrefs
            )
        )

        def read_one(href: str) -> bytes | BaseException:
            if start_by is not None and time.monotonic() > start_by:
                return FetchUnavailable(
                    f"{shown(href)}: not read, the invocation ran out of time for reading "
                    "hrefs; will retry"
                )
            return _read_one(self.fetcher, href)

        if len(hrefs) <= 1:
            self._fetched = {href: read_one(href) for href in hrefs}
            return
        with ThreadPoolExecutor(min(self.workers, len(hrefs)), "href") as pool:
            self._fetched = dict(zip(hrefs, pool.map(read_one, hrefs), strict=True))

    def documents(self, message_id: str) -> list[Document]:
        """The documents of one record read by ``read``; raises the error that record met."""
        parsed = self._parsed.pop(message_id)
        if isinstance(parsed, BaseException):
            raise parsed
        return resolve(parsed, self._fetched)

    def clear(self) -> None:
        """Drop the batch's bytes and documents once the batch is done."""
        self._parsed, self._fetched = {}, {}
