"""The ingest API Lambda's settings, read once at start-up (its database settings are ItemLoad's:
``PGSTAC_SECRET_ARN`` or the PG* variables, through ``item_load.settings.LoadSettings``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Where posted requests and documents go."""

    model_config = SettingsConfigDict(extra="ignore")

    item_gen_topic_arn: str | None = None
    item_load_topic_arn: str | None = None
    payload_bucket: str | None = None
    """STAC documents over SNS's 256 KiB limit are put here and published as ``{"href": …}``."""
