"""The ingest API's routes that ``serve`` mounts under ``/ingest``, beside the STAC API at ``/``.

``POST /ingest/requests`` queues item requests, collection requests and STAC documents (one, or
a list) for the local workers and answers 202 with their request ids; ``GET
/ingest/requests/{id}`` answers what ``status ID --json`` prints; ``GET /ingest/requests``
lists, newest first, a page at a time; ``POST /ingest/redrive/{id}`` puts a dead-lettered
request back; ``GET /ingest/`` is the status page for people (``ingest_page``). The ledger is
the only source of answers: the API knows nothing the CLI does not.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import ip_address
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from psycopg_pool import ConnectionPool

from ingest_api import core
from ingest_api.ages import parse_since
from item_load import ledger
from stactools_ingest.ingest_page import render_page
from stactools_ingest.pipeline import LocalPipeline

MAX_BODY_BYTES = 32 * 1024 * 1024
SERVE_MAX_OBJECTS = 10_000
"""Per post to ``serve``: queueing is local, so more than the deployment's API takes a call."""
State = Literal["queued", "generated", "loaded", "failed", "dead_lettered", "superseded"]
JSON_TYPES = ("application/json", "application/geo+json")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) names this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _bounded_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it is over ``MAX_BODY_BYTES``: never held whole."""
    too_large = HTTPException(
        413, f"body over {MAX_BODY_BYTES} bytes; send fewer objects, or hrefs to documents"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def caller_guard(loopback_only: bool) -> Any:
    """A check for every ingest route: only this server's own pages and non-browser clients.

    ``serve`` runs whatever stactools package a request names, so a page on another site must
    not be able to make a visitor's browser post one. stac-fastapi allows every origin (CORS),
    so a change (any method but GET/HEAD) from a foreign ``Origin`` is refused; and while
    serving on a loopback address, so is a ``Host`` that is not a loopback name, on every route
    (DNS rebinding: the browser believes another site is this server, and could read the
    ledger too).
    """

    def guard(request: Request) -> None:
        host = request.headers.get("host", "").lower()
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:
            raise HTTPException(400, f"Host {host!r} is not a host name") from None
        if loopback_only and not is_loopback(name):
            raise HTTPException(
                403,
                f"Host {host!r} is not this server's; serve on a loopback address answers only "
                "to localhost names (serve --host ADDRESS listens elsewhere)",
            )
        if request.method in ("GET", "HEAD"):
            return
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"{request.url.scheme}://{host}":
            raise HTTPException(
                403, f"a page from {origin!r} may not change what this server ingests"
            )

    return Depends(guard)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as e:
        raise HTTPException(422, f"since: {e}") from None


def ingest_router(
    pipeline: LocalPipeline, pool: ConnectionPool, *, loopback_only: bool = True
) -> APIRouter:
    """The ``/ingest`` routes over ``pipeline`` (which queues) and ``pool`` (which reads);
    ``loopback_only``: serve listens on a loopback address (see ``caller_guard``)."""
    router = APIRouter(
        prefix="/ingest", tags=["ingest"], dependencies=[caller_guard(loopback_only)]
    )

    @router.post("/requests", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        """Queue an ItemRequest, CollectionRequest or STAC document, or a list of them."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in JSON_TYPES:
            # a browser sends text/plain or a form across sites without asking first
            raise HTTPException(415, f"send the body as application/json, not {media!r}")
        body = await _bounded_body(request)
        try:
            objs = core.parse_body(
                body, SERVE_MAX_OBJECTS, "stactools-ingest run FILE takes files of any size"
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        try:
            ids = await run_in_threadpool(pipeline.submit, objs, "api")
        except core.Unusable as e:
            raise HTTPException(422, e.detail()) from None
        base = str(request.url_for("request_status", request_id="_")).removesuffix("_")
        return JSONResponse(
            {
                "request_ids": ids,
                "links": [{"rel": "status", "href": base + quote(i, safe="")} for i in ids],
            },
            status_code=202,
        )

    @router.get("/requests/{request_id:path}", name="request_status")
    def request_status(request_id: str) -> dict[str, Any]:
        """What happened to one request: the ledger's row."""
        with pool.connection() as conn:
            row = core.one(conn, request_id)
        if row is None:
            raise HTTPException(404, f"no request {request_id!r} in the ledger")
        return row

    @router.get("/requests")
    def list_requests(
        request: Request,
        state: State | None = None,
        since: str | None = None,
        collection: str | None = None,
        submission: str | None = None,
        limit: int = Query(100, ge=1, le=core.PAGE_MAX),
        token: str | None = None,
    ) -> dict[str, Any]:
        """Requests newest first, ``limit`` at a time; ``next`` pages on."""
        try:
            with pool.connection() as conn:
                rows, after = core.page(
                    conn,
                    state=state,
                    since=_since(since),
                    collection=collection,
                    submission_id=submission,
                    limit=limit,
                    token=token,
                )
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        following = str(request.url.include_query_params(token=after)) if after else None
        return {"requests": rows, "next": following, "next_token": after}

    @router.get("/counts")
    def count_requests(
        since: str | None = None, collection: str | None = None, submission: str | None = None
    ) -> dict[str, Any]:
        """How many requests are in each state: the whole of what matches."""
        try:
            with pool.connection() as conn:
                found = core.counts(
                    conn, since=_since(since), collection=collection, submission_id=submission
                )
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return {"counts": found}

    @router.post("/redrive/{request_id:path}", response_model=None)
    def redrive(request: Request, request_id: str) -> Response:
        """Put a dead-lettered request back on its queue; from the page, back to the page."""
        count = 0
        if "\x00" not in request_id:  # no id holds NUL: nothing to redrive
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
        with pool.connection() as conn:
            html = render_page(conn if ledger.exists(conn) else None, root, pipeline.errors)
        return HTMLResponse(html)

    return router
