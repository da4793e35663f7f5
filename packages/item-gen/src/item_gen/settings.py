"""ItemGen settings, read once at start-up from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GenSettings(BaseSettings):
    """Where items go and how long a stactools command may run."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    item_load_topic_arn: str | None = None
    """SNS topic of the load stage; required by the Lambda."""

    payload_bucket: str | None = None
    """Bucket for items over SNS's 256 KiB limit; they are published as ``{"href": "s3://…"}``."""

    request_timeout_seconds: float = 300.0
    """A stactools command running longer than this is killed and the request fails."""

    uvx: str = "uvx"
    """The uvx executable used to run stactools packages in their own environments."""

    stactools_spec: str = "stactools==0.5.3"
    """The stactools distribution (and version) providing the ``stac`` command."""

    warm_runner: bool = True
    """One long-lived stactools process per package environment; false: one ``uvx`` per request."""

    warm_workers_per_env: int = 2
    """At most this many warm processes per environment, started only when threads run at once."""

    ledger: bool = True
    """Report each request's outcome to the ledger as status messages on the load topic."""
    max_receives: int = Field(5, ge=1, le=1000)
    """The queue's maxReceiveCount: a request failing on its last receive is reported as
    dead-lettered, since SQS moves it to the DLQ."""
    dead_letter_queue_url: str | None = None
    """The stage's DLQ: requests that can never succeed are sent there at once (body unchanged,
    attributes ``error`` and ``stage``); unset, they are retried by SQS until its redrive."""

    warm_max_environments: int = 4
    """Warm workers are kept for this many package environments; the least recently used goes."""

    prebaked_manifest: Path | None = None
    """The image's list of prebaked environments (``item_gen.prebake``); a request whose
    environment it lists runs with ``UV_OFFLINE=1``. Set by the image; unset, none is prebaked."""
