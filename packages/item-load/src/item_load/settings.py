"""ItemLoad settings, read once at start-up from the environment."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


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
