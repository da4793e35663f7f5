"""Publish requests and STAC documents to a deployed stack's topics, in SNS batches.

What goes where (``route``) is decided here; the batching and retrying is
``ingest_common.sns_batches``, which the ingest API's Lambda shares.
"""

from __future__ import annotations

import json
from typing import Any

from ingest_common.envelope import SNS_MAX_BYTES
from ingest_common.errors import PermanentError
from ingest_common.sns_batches import SNS_CONFIG
from stactools_ingest.aws_stack import client
from stactools_ingest.inputs import InputProblem, InputRecord, classify

SPLIT_BYTES = SNS_MAX_BYTES - 2048
"""What a piece of a split FeatureCollection may weigh: SNS counts the message attributes
(``submission_id``, ``request_id``) in the 256 KiB too."""


def sns_client() -> Any:
    """An SNS client whose whole calls are retried by botocore's adaptive mode."""
    return client("sns", SNS_CONFIG)


class InvalidDocument(PermanentError):
    """An input is neither a request nor a document the load topic accepts; it is not published."""


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def route(doc: Any) -> list[tuple[str, str]]:
    """The ``(stage, message)`` pairs one input becomes: requests go to ItemGen, STAC to ItemLoad.

    Classified (and a request validated) as ``run`` does, so a bad input is reported by the caller
    and never published; an item without a collection is refused for the same reason. A
    FeatureCollection over SNS's size limit is split into several that fit.
    """
    verdict = classify(InputRecord("", doc))
    if isinstance(verdict, InputProblem):
        raise InvalidDocument(verdict.reason)
    stage, _ = verdict
    kind = doc.get("type")
    if kind == "Feature" and not doc.get("collection"):
        raise InvalidDocument(f"item {doc.get('id')!r} has no 'collection'; set one to load it")
    if kind == "FeatureCollection":
        return [(stage, m) for m in _split_feature_collection(doc)]
    return [(stage, _dumps(doc))]


def _split_feature_collection(doc: dict) -> list[str]:
    """One message when it fits, else FeatureCollections of as many features as fit each."""
    whole = _dumps(doc)
    if len(whole.encode()) <= SPLIT_BYTES or len(doc.get("features") or []) < 2:
        return [whole]
    shell = {k: v for k, v in doc.items() if k != "features"}
    overhead = len(_dumps({**shell, "features": []}).encode())
    chunks: list[list[str]] = [[]]
    size = overhead
    for feature in doc["features"]:
        text = _dumps(feature)
        n = len(text.encode()) + 1  # the comma
        if chunks[-1] and size + n > SPLIT_BYTES:
            chunks.append([])
            size = overhead
        chunks[-1].append(text)
        size += n
    prefix = _dumps({**shell, "features": []})[:-3]  # everything before `[]}`
    return [f"{prefix}[{','.join(chunk)}]}}" for chunk in chunks]
