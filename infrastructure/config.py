"""Deployment settings for the CDK app: read from config.yml and the environment, validated once."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from item_gen.prebake import PrebakedPackage

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH_ENV = "STACTOOLS_INGEST_CONFIG"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.yml"

# AWS limits for SQS event source mappings and SQS queues.
MAX_SQS_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW_SECONDS = 300
MAX_VISIBILITY_TIMEOUT_SECONDS = 43_200
MAX_LAMBDA_TIMEOUT_SECONDS = 900
# AWS guidance: queue visibility timeout at least six times the function timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
# Retention periods CloudWatch Logs accepts (a subset; ingestion.py sets the days as given).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    3653,
)

_config_path: ContextVar[Path | None] = ContextVar("_config_path", default=None)


class _Section(BaseModel):
    """A config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class NetworkConfig(_Section):
    """The VPC the database and the ItemLoad function live in."""

    max_azs: int = Field(2, ge=2, le=6)
    nat_gateways: int = Field(1, ge=0, le=6)
    interface_endpoints: bool = True


class DatabaseConfig(_Section):
    """The pgstac database (eoapi-cdk PgStacDatabase)."""

    instance_type: str = "t4g.small"
    allocated_storage_gib: int = Field(20, ge=20, le=65_536)
    max_allocated_storage_gib: int | None = Field(100, ge=20, le=65_536)
    # A pinned minor (the newest 17.x aws-cdk-lib knows): a bare major lets RDS choose the
    # minor at each create, so two deployments of one config could differ.
    postgres_version: str = "17.9"
    pgstac_version: str = "0.9.8"
    multi_az: bool = False
    backup_retention_days: int = Field(7, ge=1, le=35)
    deletion_protection: bool = True
    publicly_accessible: bool = False
    db_allowed_cidrs: list[str] = Field(default_factory=list)

    @field_validator("instance_type")
    @classmethod
    def _instance_type_shape(cls, value: str) -> str:
        value = value.removeprefix("db.")
        if not re.fullmatch(r"[a-z0-9]+\.[a-z0-9]+", value):
            raise ValueError(f"instance_type {value!r} is not like 't4g.small' or 'm6g.large'")
        return value

    @field_validator("postgres_version")
    @classmethod
    def _postgres_version_shape(cls, value: str) -> str:
        if re.fullmatch(r"1[3-9]", value):
            raise ValueError(
                f"postgres_version {value!r}: give the minor version too, like '17.9' or '16.13' "
                "(a bare major lets RDS pick the minor at deploy time)"
            )
        if not re.fullmatch(r"1[3-9]\.\d+", value):
            raise ValueError(
                f"postgres_version {value!r} must be a PostgreSQL 13+ version like '17.9' or '16.8'"
            )
        return value

    @field_validator("db_allowed_cidrs")
    @classmethod
    def _no_open_cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            network = ipaddress.ip_network(value, strict=False)
            if network.prefixlen == 0:
                raise ValueError(
                    f"db_allowed_cidrs must not contain {value}: the database must never be open "
                    "to the whole internet; list your office or VPN ranges instead"
                )
        return values

    @model_validator(mode="after")
    def _public_needs_cidrs(self) -> DatabaseConfig:
        if self.publicly_accessible and not self.db_allowed_cidrs:
            raise ValueError(
                "database.publicly_accessible is true but database.db_allowed_cidrs is empty: "
                "list the CIDR ranges allowed to connect, or keep the database private"
            )
        if (
            self.max_allocated_storage_gib is not None
            and self.max_allocated_storage_gib < self.allocated_storage_gib
        ):
            raise ValueError(
                "database.max_allocated_storage_gib must be >= allocated_storage_gib "
                "(or null to turn storage autoscaling off)"
            )
        return self


class _StageConfig(_Section):
    """Settings shared by both stages: one SQS queue, its DLQ, and one container Lambda."""

    memory_mb: int = Field(ge=128, le=10_240)
    timeout_seconds: int = Field(ge=1, le=MAX_LAMBDA_TIMEOUT_SECONDS)
    batch_size: int = Field(ge=1)
    max_batching_window_seconds: int = Field(ge=0)
    max_concurrency: int | None = Field(ge=2, le=1000)
    reserved_concurrency: int | None = Field(None, ge=1)
    visibility_timeout_seconds: int | None = Field(None, ge=0)
    max_receive_count: int = Field(5, ge=1, le=1000)
    ephemeral_storage_mb: int = Field(512, ge=512, le=10_240)
    log_retention_days: int = 30

    @field_validator("log_retention_days")
    @classmethod
    def _retention_allowed(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_size_limit(cls, value: int) -> int:
        if value > MAX_SQS_BATCH_SIZE:
            raise ValueError(f"batch_size {value} is above the SQS maximum of {MAX_SQS_BATCH_SIZE}")
        return value

    @field_validator("max_batching_window_seconds")
    @classmethod
    def _window_limit(cls, value: int) -> int:
        if value > MAX_BATCHING_WINDOW_SECONDS:
            raise ValueError(
                f"max_batching_window_seconds {value} is above the SQS maximum of "
                f"{MAX_BATCHING_WINDOW_SECONDS} s"
            )
        return value

    @model_validator(mode="after")
    def _queue_fits_function(self) -> _StageConfig:
        if self.batch_size > 10 and self.max_batching_window_seconds < 1:
            raise ValueError(
                f"batch_size {self.batch_size} > 10 needs max_batching_window_seconds >= 1 "
                "(an SQS requirement)"
            )
        minimum = self.minimum_visibility_timeout
        if (
            self.visibility_timeout_seconds is not None
            and self.visibility_timeout_seconds < minimum
        ):
            raise ValueError(
                f"visibility_timeout_seconds {self.visibility_timeout_seconds} is too short for "
                f"timeout_seconds {self.timeout_seconds}: AWS recommends at least "
                f"{VISIBILITY_TIMEOUT_FACTOR} x the function timeout plus the batching window "
                f"({minimum} s); raise it or leave it unset"
            )
        if self.queue_visibility_timeout_seconds > MAX_VISIBILITY_TIMEOUT_SECONDS:
            raise ValueError(
                f"visibility timeout {self.queue_visibility_timeout_seconds} s is above the SQS "
                f"maximum of {MAX_VISIBILITY_TIMEOUT_SECONDS} s; lower timeout_seconds"
            )
        return self

    @property
    def minimum_visibility_timeout(self) -> int:
        """Six times the function timeout plus the batching window (AWS guidance)."""
        return VISIBILITY_TIMEOUT_FACTOR * self.timeout_seconds + self.max_batching_window_seconds

    @property
    def queue_visibility_timeout_seconds(self) -> int:
        """The visibility timeout the queue gets: configured, or the recommended minimum."""
        return self.visibility_timeout_seconds or self.minimum_visibility_timeout


class ItemGenConfig(_StageConfig):
    """Stage 1: item requests -> `stac <group> create-item` -> items on the load topic."""

    memory_mb: int = Field(2048, ge=128, le=10_240)
    timeout_seconds: int = Field(600, ge=1, le=MAX_LAMBDA_TIMEOUT_SECONDS)
    request_timeout_seconds: int = Field(300, ge=1)
    batch_size: int = Field(1, ge=1)
    max_batching_window_seconds: int = Field(0, ge=0)
    max_concurrency: int | None = Field(50, ge=2, le=1000)
    ephemeral_storage_mb: int = Field(4096, ge=512, le=10_240)
    # Package environments built into the image: a package, or {package, extra_packages}.
    prebaked_packages: list[PrebakedPackage] = Field(default_factory=list)
    # Buckets a request's create-item arguments may name (s3://bucket/...): read and list only.
    readable_buckets: list[str] = Field(default_factory=list)
    warm_runner: bool = True
    warm_workers_per_env: int = Field(2, ge=1, le=64)
    warm_max_environments: int = Field(4, ge=1, le=64)

    @field_validator("readable_buckets")
    @classmethod
    def _gen_bucket_names(cls, values: list[str]) -> list[str]:
        return _bucket_names(values)

    @model_validator(mode="after")
    def _request_fits_function(self) -> ItemGenConfig:
        if self.request_timeout_seconds * self.batch_size >= self.timeout_seconds:
            raise ValueError(
                f"item_gen.request_timeout_seconds ({self.request_timeout_seconds}) x batch_size "
                f"({self.batch_size}) must be below timeout_seconds ({self.timeout_seconds}), "
                "or a slow batch is killed before it can report its failures"
            )
        return self


class ItemLoadConfig(_StageConfig):
    """Stage 2: items, collections and pointers -> pgstac."""

    memory_mb: int = Field(1024, ge=128, le=10_240)
    timeout_seconds: int = Field(300, ge=1, le=MAX_LAMBDA_TIMEOUT_SECONDS)
    batch_size: int = Field(1000, ge=1)
    max_batching_window_seconds: int = Field(60, ge=0)
    # Few concurrent loaders: each holds a database connection and pgstac creates partitions
    # under locks, so many parallel writers mostly wait on each other. 2 is the SQS minimum.
    max_concurrency: int | None = Field(2, ge=2, le=1000)
    create_collections_if_missing: bool = False
    partition_stats_interval_seconds: int = Field(60, ge=0)
    # How item content is compressed as it is written (TOAST_COMPRESSION; see the README).
    toast_compression: Literal["lz4", "pglz", "server"] = "lz4"
    # How often a schedule runs the stats refreshes batches skipped (item_load/maintenance.py).
    maintenance_interval_minutes: int = Field(5, ge=1, le=1440)
    # The ledger (stactools-ingest status): each request's state, written with the items.
    ledger: bool = True
    ledger_retention_days: int = Field(30, ge=1, le=3650)
    # One message per item a load created or changed, on a topic others subscribe to.
    post_ingest_notifications: bool = True
    s3_event_buckets: list[str] = Field(default_factory=list)
    readable_buckets: list[str] = Field(default_factory=list)
    # What a message may make ItemLoad read (HREF_SCHEMES, HREF_MAX_BYTES, HREF_TIMEOUT_SECONDS).
    href_schemes: list[str] = Field(default_factory=lambda: ["s3", "https"], min_length=1)
    href_max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    href_timeout_seconds: float = Field(60.0, gt=0, le=MAX_LAMBDA_TIMEOUT_SECONDS)

    @field_validator("s3_event_buckets", "readable_buckets")
    @classmethod
    def _bucket_names(cls, values: list[str]) -> list[str]:
        return _bucket_names(values)

    @field_validator("href_schemes")
    @classmethod
    def _schemes(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in {"s3", "https", "http", "file"}:
                raise ValueError(f"href scheme {value!r} is not one of s3, https, http, file")
        return values


def _bucket_names(values: list[str]) -> list[str]:
    """Bucket names, not URLs: they become IAM resource ARNs."""
    for value in values:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", value):
            raise ValueError(f"{value!r} is not an S3 bucket name (give the name, not a URL)")
    return values


class PayloadBucketConfig(_Section):
    """The bucket ItemGen writes oversized items to and ItemLoad reads them from."""

    expire_after_days: int = Field(7, ge=1)


class AlarmsConfig(_Section):
    """CloudWatch alarms on the queues and where they notify."""

    email: str | None = None
    queue_age_threshold_seconds: int = Field(3600, ge=60)


class IngestApiConfig(_Section):
    """The ingest API: API Gateway (HTTP API, IAM auth) and a Lambda in the VPC that publishes
    posted requests and answers from the ledger (stactools-ingest status --stack)."""

    enabled: bool = True
    memory_mb: int = Field(512, ge=128, le=10_240)
    timeout_seconds: int = Field(29, ge=1, le=29)  # API Gateway waits at most 29 s
    ephemeral_storage_mb: int = Field(512, ge=512, le=10_240)
    reserved_concurrency: int | None = Field(None, ge=1)
    log_retention_days: int = 30

    @field_validator("log_retention_days")
    @classmethod
    def _retention_allowed(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return value


class StacApiConfig(_Section):
    """An optional STAC API (eoapi-cdk PgStacApiLambda) to look at what landed."""

    enabled: bool = False


class DeploymentConfig(BaseSettings):
    """Every deployment setting: `config.yml`, overridden by STACTOOLS_INGEST_* variables."""

    model_config = SettingsConfigDict(
        env_prefix="STACTOOLS_INGEST_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    project_name: str = "stactools-ingest"
    stage: str = "dev"
    aws_account: str | None = None
    aws_region: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    raw_message_delivery: bool = True
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    item_gen: ItemGenConfig = Field(default_factory=ItemGenConfig)
    item_load: ItemLoadConfig = Field(default_factory=ItemLoadConfig)
    payload_bucket: PayloadBucketConfig = Field(default_factory=PayloadBucketConfig)
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    stac_api: StacApiConfig = Field(default_factory=StacApiConfig)
    ingest_api: IngestApiConfig = Field(default_factory=IngestApiConfig)

    @field_validator("project_name", "stage")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{0,30}", value):
            raise ValueError(
                f"{value!r} must start with a letter and hold only letters, digits and '-' "
                "(it becomes part of stack and resource names)"
            )
        return value

    @model_validator(mode="after")
    def _pgstac_matches_lock(self) -> DeploymentConfig:
        locked = locked_pypgstac_version()
        if locked is not None and locked != self.database.pgstac_version:
            raise ValueError(
                f"database.pgstac_version {self.database.pgstac_version} does not match "
                f"pypgstac {locked} in uv.lock, which the ItemLoad image loads with; "
                "the two must be the same version"
            )
        return self

    @property
    def prefix(self) -> str:
        """The prefix of every stack name: `<project_name>-<stage>`."""
        return f"{self.project_name}-{self.stage}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: arguments, then environment variables, then config.yml."""
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_path())
        return (init_settings, env_settings, yaml_source)


def config_path() -> Path:
    """The config file in use: load_config's argument, $STACTOOLS_INGEST_CONFIG, or config.yml."""
    explicit = _config_path.get()
    if explicit is not None:
        return explicit
    return Path(os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path | str | None = None, **overrides: object) -> DeploymentConfig:
    """Read and validate the deployment settings (a missing file means all defaults)."""
    token = _config_path.set(Path(path) if path is not None else None)
    try:
        chosen = config_path()
        if path is not None and not chosen.is_file():
            raise FileNotFoundError(f"config file {chosen} does not exist")
        try:
            return DeploymentConfig(**overrides)
        except ValidationError as e:
            raise ConfigError(describe_errors(e, chosen)) from e
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{chosen}: not valid YAML: {problem}{where}") from e
    finally:
        _config_path.reset(token)


class ConfigError(ValueError):
    """The deployment settings are invalid; the message is one line naming file and key."""


def describe_errors(error: ValidationError, path: Path) -> str:
    """One line for a person: the file, each bad key and, for unknown keys, the allowed ones."""
    parts = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            section, allowed = _allowed_keys(problem["loc"][:-1])
            parts.append(f"unknown key {key} (allowed in {section}: {', '.join(allowed)})")
        elif key:
            parts.append(f"{key}: {problem['msg']}")
        else:
            parts.append(problem["msg"])
    return f"{path}: " + "; ".join(parts)


def _allowed_keys(section: tuple) -> tuple[str, list[str]]:
    """The keys the config section at `section` (a location tuple) accepts."""
    model: type[BaseModel] = DeploymentConfig
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    name = ".".join(str(part) for part in section) or "the top level"
    return name, list(model.model_fields)


def locked_pypgstac_version(lock_file: Path = REPO_ROOT / "uv.lock") -> str | None:
    """The pypgstac version pinned in uv.lock, or None when there is no lock file."""
    if not lock_file.is_file():
        return None
    lock = tomllib.loads(lock_file.read_text())
    for package in lock.get("package", []):
        if package.get("name") == "pypgstac":
            return package.get("version")
    return None
