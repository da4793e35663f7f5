"""``stactools-ingest serve``: the STAC API of what landed, the ingest API, and the workers.

One process: stac-fastapi-pgstac at ``/`` (so pystac-client and STAC Browser work against it),
the ingest API and the status page under ``/ingest`` (``stactools_ingest.ingest_api``), and the
local pipeline's workers, so a request posted there is processed without another command.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Any

import click
import psycopg
from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from stactools_ingest.commands.run import RUN_WORKERS
from stactools_ingest.ingest_routes import ingest_router, is_loopback
from stactools_ingest.pipeline import LocalPipeline
from stactools_ingest.target import connect, redact, resolve_dsn

API_METADATA = {
    "STAC_FASTAPI_TITLE": "stactools-ingest",
    "STAC_FASTAPI_DESCRIPTION": "What stactools-ingest loaded into this pgstac.",
    "STAC_FASTAPI_LANDING_ID": "stactools-ingest",
    "STAC_FASTAPI_VERSION": "1.0.0",
}
LIBPQ_DEFAULTS = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}


def postgres_settings(dsn: str) -> Any:
    """stac-fastapi-pgstac's connection settings for ``dsn`` (or the PG* variables)."""
    from stac_fastapi.pgstac.config import PostgresSettings

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    for key, variable in LIBPQ_DEFAULTS.items():
        if key not in info and os.environ.get(variable):
            info[key] = os.environ[variable]
    return PostgresSettings(
        pguser=info.get("user", "postgres"),
        pgpassword=info.get("password", os.environ.get("PGPASSWORD", "")),
        pghost=info.get("host", "localhost"),
        pgport=int(info.get("port", 5432)),
        pgdatabase=info.get("dbname", info.get("user", "postgres")),
    )


def build_app(
    dsn: str, pipeline: LocalPipeline, pool: ConnectionPool, *, loopback_only: bool = True
) -> FastAPI:
    """The STAC API over ``dsn`` with the ingest API mounted under ``/ingest``."""
    from stac_fastapi.pgstac.app import instantiate_api
    from stac_fastapi.pgstac.config import Settings
    from stac_fastapi.pgstac.db import close_db_connection, connect_to_db

    settings = postgres_settings(dsn)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await connect_to_db(app, postgres_settings=settings)
        pool.open()
        try:
            yield
        finally:
            pool.close()
            await close_db_connection(app)

    api = instantiate_api(
        lifespan=lifespan,
        settings=Settings(**{k.lower(): v for k, v in API_METADATA.items()}),
    )
    api.app.include_router(ingest_router(pipeline, pool, loopback_only=loopback_only))
    return api.app


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--dsn", help="Target pgstac (default: PGSTAC_DSN, PG* variables, else embedded).")
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=RUN_WORKERS,
    show_default=True,
    help="ItemGen workers (0: only serve; posted requests wait for a `run`).",
)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--max-receives", type=click.IntRange(1, 1000), default=5, show_default=True)
def serve(
    host: str, port: int, dsn: str | None, workers: int, batch_size: int, max_receives: int
) -> None:
    """Serve the STAC API at /, the ingest API at /ingest and a status page at /ingest/.

    POST /ingest/requests takes an item request, a collection request, a STAC document or a
    list of them and answers 202 with their request ids; GET /ingest/requests/ID says what
    happened to one. The workers process what is posted (and anything already queued).
    """
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # stac-fastapi warns about unset API metadata at import; these are ours to set
    for variable, value in API_METADATA.items():
        os.environ.setdefault(variable, value)
    dsn = resolve_dsn(dsn)
    connect(dsn).close()  # a target without pgstac is one line, before anything listens
    pipeline = LocalPipeline(
        dsn, gen_workers=workers, batch_size=batch_size, max_receives=max_receives
    )
    pool = ConnectionPool(
        dsn,
        kwargs={"autocommit": True, "options": "-c search_path=pgstac,public"},
        min_size=1,
        max_size=4,
        open=False,
    )
    app = build_app(dsn, pipeline, pool, loopback_only=is_loopback(host))
    monitor = pipeline.session()
    threads = pipeline.start(monitor) if workers else []
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    click.echo(
        f"STAC API {base}/  ingest API {base}/ingest/requests  status page {base}/ingest/  "
        f"({redact(dsn) or 'PG* variables'}; Ctrl-C stops)",
        err=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        pipeline.stop(threads)
        monitor.close()
