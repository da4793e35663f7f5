"""ItemLoad settings, read once at start-up from the environment."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KNOWN_HREF_SCHEMES = frozenset({"s3", "https", "http", "file"})


class LoadSettings(BaseSettings):
    """How ItemLoad reaches pgstac and what it does with items of unknown collections."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    pgstac_secret_arn: str | None = None
    """Secrets Manager secret (host, port, dbname, username, password); else libpq env vars."""

    create_collections_if_missing: bool = False
    """Create a minimal collection for items whose collection is not in pgstac yet."""

    connect_timeout: int = 10
    """Seconds to wait for the database before treating the batch as transiently failed."""

    lock_timeout_ms: int = 60_000
    """How long a loader waits for another loader of the same collection before retrying later."""

    partition_stats_interval_seconds: float = 60.0
    """How often a partition's pgstac stats are refreshed when batches only add inside its
    bounds; batches that widen a partition refresh them at once."""

    toast_compression: Literal["lz4", "pglz", "server"] = "lz4"
    """How PostgreSQL compresses the item content this loader writes: lz4 compresses several
    times faster than pglz (PostgreSQL's default) and decompresses faster for every read, at a
    few percent more space; ``server`` keeps the database's ``default_toast_compression``. A
    server built without lz4 keeps its default (logged once per connection)."""

    href_schemes: Annotated[frozenset[str], NoDecode] = frozenset({"s3", "https"})
    """Schemes an href pointer or S3 event may make ItemLoad read (``HREF_SCHEMES=s3,https``);
    a bare path counts as ``file``, and ``http`` is not ``https``."""

    href_max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """Largest document an href may point at; a longer one is refused while it is being read."""

    href_timeout_seconds: float = Field(60.0, gt=0, le=900)
    """Total time one href may take (resolve, connect, redirects, body), however it trickles."""

    href_allow_private_hosts: bool = False
    """Let https hrefs reach loopback, link-local, private and other non-public addresses."""

    href_fetch_workers: int = Field(16, ge=1, le=128)
    """How many hrefs of one batch are read at the same time."""

    @field_validator("href_schemes", mode="before")
    @classmethod
    def _split_schemes(cls, value: Any) -> Any:
        """Accept the comma-separated form an environment variable carries, and refuse typos."""
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple | set | frozenset):
            schemes = frozenset(str(part).strip().lower() for part in value)
            unknown = sorted(schemes - KNOWN_HREF_SCHEMES)
            if unknown:
                raise ValueError(
                    f"unknown href scheme(s) {', '.join(unknown)}; "
                    f"choose from {', '.join(sorted(KNOWN_HREF_SCHEMES))}"
                )
            return schemes
        return value

    dead_letter_queue_url: str | None = None
    """The stage's DLQ: records that can never succeed are sent there at once (body unchanged,
    attributes ``error`` and ``stage``); unset, they are retried by SQS until its redrive."""
    post_ingest_topic_arn: str | None = None
    """After a load commits, one message per item it created or changed goes to this topic
    (``item_load.notify``); unset, none."""
    ledger: bool = True
    """Record each request's state in ``stactools_ingest.ledger`` (``stactools-ingest status``)."""
    ledger_retention_days: int = Field(30, ge=1, le=3650)
    """Ledger rows not updated for this many days are deleted by the maintenance schedule."""
    max_receives: int = Field(5, ge=1, le=1000)
    """The queue's maxReceiveCount: a record failing on its last receive is recorded as
    dead-lettered, since SQS moves it to the DLQ."""
