"""The ingest API that ``serve`` mounts under ``/ingest``, beside the STAC API at ``/``.

``POST /ingest/requests`` queues item requests, collection requests and STAC documents (one, or
a list) for the local workers and answers 202 with their request ids; ``GET
/ingest/requests/{id}`` answers what ``status ID --json`` prints; ``GET /ingest/requests``
lists, newest first, a page at a time; ``POST /ingest/redrive/{id}`` puts a dead-lettered
request back; ``GET /ingest/`` is the status page for people (``ingest_page``). The ledger is
the only source of answers: the API knows nothing the CLI does not.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from psycopg_pool import ConnectionPool

from ingest_common.ledger import STATES
from item_load import ledger
from stactools_ingest.ages import parse_since
from stactools_ingest.ingest_page import render_page
from stactools_ingest.pipeline import LocalPipeline, Unusable

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_OBJECTS = 10_000
State = Literal["queued", "generated", "loaded", "failed", "dead_lettered", "superseded"]
assert set(State.__args__) == set(STATES)  # type: ignore[attr-defined]


def _token(row: dict[str, Any]) -> str:
    raw = orjson.dumps([row["updated_at"], row["request_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> tuple[datetime, str]:
    try:
        updated, request_id = orjson.loads(
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        )
        return datetime.fromisoformat(updated), str(request_id)
    except Exception:
        raise HTTPException(
            422, "token is not one this API gave out; start from the first page"
        ) from None


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as e:
        raise HTTPException(422, f"since: {e}") from None


def ingest_router(pipeline: LocalPipeline, pool: ConnectionPool) -> APIRouter:
    """The ``/ingest`` routes over ``pipeline`` (which queues) and ``pool`` (which reads)."""
    router = APIRouter(prefix="/ingest", tags=["ingest"])

    def read(query: Callable[[Any], Any]) -> Any:
        with pool.connection() as conn:
            if not ledger.exists(conn):
                return None
            return query(conn)

    @router.post("/requests", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        """Queue an ItemRequest, CollectionRequest or STAC document, or a list of them."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes; send a pointer instead")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise HTTPException(400, f"body is not valid JSON: {e}") from None
        objs = data if isinstance(data, list) else [data]
        if not objs:
            raise HTTPException(422, "an empty list: nothing to queue")
        if len(objs) > MAX_OBJECTS:
            raise HTTPException(413, f"{len(objs)} objects; send at most {MAX_OBJECTS} per call")
        try:
            ids = await run_in_threadpool(pipeline.submit, objs, "api")
        except Unusable as e:
            detail = [{"index": n, "reason": reason} for n, reason in e.problems]
            raise HTTPException(422, detail) from None
        base = str(request.url_for("request_status", request_id="_")).removesuffix("_")
        return JSONResponse(
            {"request_ids": ids, "links": [{"rel": "status", "href": base + i} for i in ids]},
            status_code=202,
        )

    @router.get("/requests/{request_id:path}", name="request_status")
    def request_status(request_id: str) -> dict[str, Any]:
        """What happened to one request: the ledger's row."""
        row = read(lambda conn: ledger.get(conn, request_id))
        if row is None:
            raise HTTPException(404, f"no request {request_id!r} in the ledger")
        return row

    @router.get("/requests")
    def list_requests(
        request: Request,
        state: State | None = None,
        since: str | None = None,
        collection: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        token: str | None = None,
    ) -> dict[str, Any]:
        """Requests newest first, ``limit`` at a time; ``next`` pages on."""
        filters = {"since": _since(since), "collection": collection}
        before = _untoken(token) if token else None
        rows = (
            read(lambda conn: ledger.find(conn, state=state, limit=limit, before=before, **filters))
            or []
        )
        page: dict[str, Any] = {"requests": rows, "next": None}
        if len(rows) == limit:
            page["next"] = str(request.url.include_query_params(token=_token(rows[-1])))
        return page

    @router.post("/redrive/{request_id:path}", response_model=None)
    def redrive(request: Request, request_id: str) -> Response:
        """Put a dead-lettered request back on its queue; from the page, back to the page."""
        session = pipeline.session()
        try:
            count = session.call(lambda q: q.redrive(request_id=request_id))
        finally:
            session.close()
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(str(request.url_for("status_page")), status_code=303)
        if not count:
            raise HTTPException(404, f"request {request_id!r} has no dead letter to redrive")
        return JSONResponse({"request_id": request_id, "redriven": count}, status_code=202)

    @router.get("/", response_class=HTMLResponse, name="status_page")
    def status_page(request: Request) -> HTMLResponse:
        """The page for people: counts, loads over time, failures, what landed."""
        root = str(request.url_for("status_page")).removesuffix("ingest/")
        html = read(lambda conn: render_page(conn, root, pipeline.errors))
        if html is None:
            html = render_page(None, root, pipeline.errors)
        return HTMLResponse(html)

    return router
