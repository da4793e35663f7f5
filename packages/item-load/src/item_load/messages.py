"""Turn one load-topic message into the STAC documents it carries.

Accepted shapes (design.md): an Item, a Collection, a FeatureCollection, a pointer
``{"href": "s3://…" | "https://…" | "file://…"}`` to any of those (JSON or NDJSON), and S3
``ObjectCreated`` notifications for ``.json`` / ``.geojson`` / ``.ndjson`` objects. Which hrefs
may actually be read, and how much of them, is the fetcher's policy (``item_load.fetch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

import orjson

from item_load.errors import InvalidMessage
from item_load.fetch import HrefFetcher, HrefPolicy, shown

STAC_SUFFIXES = (".json", ".geojson", ".ndjson")


@dataclass(slots=True)
class Document:
    """One STAC object and the message it came from, so failures map back to that message."""

    message_id: str
    sent_at: float | None
    body: dict[str, Any]

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


def _flatten(obj: Any, origin: str, fetched: bool = False) -> Iterator[dict[str, Any]]:
    """The STAC objects in one decoded document; reasons never quote a fetched document."""
    if not isinstance(obj, dict):
        raise InvalidMessage(f"{origin} is a JSON {type(obj).__name__}, not a STAC object")
    kind = obj.get("type")
    if kind in ("Feature", "Collection"):
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
            f"{origin} is not a STAC Item, Collection, FeatureCollection, href pointer or "
            f"S3 event{what}"
        )


def documents_from_message(
    message: Any, message_id: str, sent_at: float | None, fetcher: Fetcher | None = None
) -> list[Document]:
    """Expand a decoded message into documents; raises a PermanentError saying what was wrong."""
    if isinstance(message, dict) and message.get("Event") == "s3:TestEvent":
        return []  # S3 sends this once when a notification is configured: nothing to load
    if _is_s3_event(message):
        hrefs: list[str] = list(_s3_event_hrefs(message))
    elif isinstance(message, dict) and "href" in message and "type" not in message:
        if not isinstance(message["href"], str):
            raise InvalidMessage("'href' must be a string URL (s3://, https:// or file://)")
        hrefs = [message["href"]]
    else:
        return [Document(message_id, sent_at, d) for d in _flatten(message, "message")]
    fetch = fetcher or _default_fetcher()
    docs = []
    for href in hrefs:
        name = shown(href)
        for obj in _decode_stac_bytes(fetch(href), name):
            docs.extend(Document(message_id, sent_at, d) for d in _flatten(obj, name, True))
    return docs
