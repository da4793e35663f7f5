"""The ingest API Lambda behind API Gateway (HTTP API, IAM auth): thin routes over
``ingest_api.core``, the same answers ``stactools-ingest serve`` gives locally."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import unquote, urlencode

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from ingest_api import core
from ingest_api.ages import parse_since
from ingest_api.publish import TopicPublisher
from ingest_api.settings import ApiSettings
from item_gen.publish import Publisher
from item_load.db import ConnectionCache
from item_load.errors import DatabaseUnavailable
from item_load.settings import LoadSettings

settings = ApiSettings()
logger = Logger(service="ingest-api")
connections = ConnectionCache(LoadSettings())
app = APIGatewayHttpResolver()


def _json(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@cache
def publisher() -> TopicPublisher:
    """Made on first use: reading the ledger needs neither SNS nor S3."""
    if not settings.item_gen_topic_arn or not settings.item_load_topic_arn:
        raise RuntimeError("ITEM_GEN_TOPIC_ARN and ITEM_LOAD_TOPIC_ARN must be set to publish")
    topics = {"gen": settings.item_gen_topic_arn, "load": settings.item_load_topic_arn}
    payloads = None
    if settings.payload_bucket:
        payloads = Publisher(topics["load"], settings.payload_bucket, None, boto3.client("s3"))
    return TopicPublisher(topics, boto3.client("sns"), payloads)


def _read(query: Any) -> Any:
    try:
        return query(connections.get())
    except DatabaseUnavailable:
        connections.discard()
        raise


@app.post("/ingest/requests")
def post_requests() -> Response:
    """Publish requests and documents; 202 with their request ids."""
    try:
        objs = core.parse_body(app.current_event.decoded_body)
    except ValueError as e:
        return _json(400, {"detail": str(e)})
    try:
        routed = core.validate(objs)
    except core.Unusable as e:
        return _json(422, {"detail": e.detail()})
    published = publisher().publish(routed)
    if published.errors:
        logger.error("not all published", extra={"errors": published.errors})
        return _json(502, {"request_ids": published.request_ids, "errors": published.errors})
    return _json(202, {"request_ids": published.request_ids})


@app.get("/ingest/requests/<request_id>")
def get_request(request_id: str) -> Response:
    """One request's ledger row, or 404."""
    request_id = unquote(request_id)
    row = _read(lambda conn: core.one(conn, request_id))
    if row is None:
        return _json(404, {"detail": f"no request {request_id!r} in the ledger"})
    return _json(200, row)


@app.get("/ingest/requests")
def list_requests() -> Response:
    """Requests newest first, a page at a time (``token`` pages on)."""
    query = app.current_event.query_string_parameters or {}
    try:
        since = parse_since(query["since"]) if query.get("since") else None
        limit = int(query.get("limit") or 100)
        rows, after = _read(
            lambda conn: core.page(
                conn,
                state=query.get("state"),
                since=since,
                collection=query.get("collection"),
                submission_id=query.get("submission"),
                limit=limit,
                token=query.get("token"),
            )
        )
    except ValueError as e:
        return _json(422, {"detail": str(e)})
    following = None
    if after:
        event = app.current_event
        following = f"https://{event.request_context.domain_name}{event.raw_path}?" + urlencode(
            {**query, "token": after}
        )
    return _json(200, {"requests": rows, "next": following, "next_token": after})


@app.get("/ingest/counts")
def count_requests() -> Response:
    """How many requests are in each state (``since``, ``collection``, ``submission``)."""
    query = app.current_event.query_string_parameters or {}
    try:
        since = parse_since(query["since"]) if query.get("since") else None
        found = _read(
            lambda conn: core.counts(
                conn,
                since=since,
                collection=query.get("collection"),
                submission_id=query.get("submission"),
            )
        )
    except ValueError as e:
        return _json(422, {"detail": str(e)})
    return _json(200, {"counts": found})


@app.exception_handler(DatabaseUnavailable)
def database_unavailable(error: DatabaseUnavailable) -> Response:
    """The ledger cannot be read right now: 503, try again."""
    logger.error("database unavailable", extra={"reason": str(error)})
    return _json(503, {"detail": "the ledger's database is unavailable; try again shortly"})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for API Gateway's HTTP API (payload format 2.0)."""
    return app.resolve(event, context)
