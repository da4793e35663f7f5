"""Requests ItemGen accepts: the original stactools-ingest ItemRequest and a collection twin."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from item_gen.errors import InvalidRequest

logger = logging.getLogger(__name__)

_NAMES_SHOWN = 20
"""At most this many unknown field names in a warning, so a hostile request cannot flood logs."""
_NAME_CHARS = 64

_warned: set[tuple[str, ...]] = set()
"""Sets of unknown fields already warned about: a file of 10,000 requests from a newer upstream
warns once, then logs each request at debug level."""
_WARNED_MAX = 256


class _PackageRequest(BaseModel):
    """What both request kinds share: which package, which CLI group, which extras."""

    # Unknown fields are ignored, not refused: requests written for a newer upstream ItemRequest
    # must still run. They are named in a warning, so a misspelt field does not pass unseen.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    package_name: str = Field(
        min_length=1, description="PyPI name, optionally with a version: 'stactools-x==0.1.1'"
    )
    group_name: str = Field(
        min_length=1, description="The `stac` sub-command, e.g. 'gladglclu2020'"
    )
    collection_id: str | None = Field(default=None, description="Overrides the produced collection")
    extra_packages: list[str] = Field(
        default_factory=list, description="Extra pins the package needs, e.g. 'affine<3'"
    )
    request_id: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[^\x00]+$",
        description="The ledger's key for this request (stactools-ingest status); else the "
        "message id it came in",
    )

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown_fields(cls, data: Any) -> Any:
        """Log the fields this version does not know, naming the request they came with.

        A warning the first time a process sees a set of unknown fields, debug lines after.
        """
        if isinstance(data, dict):
            unknown = sorted(str(k)[:_NAME_CHARS] for k in data if k not in cls.model_fields)
            if unknown:
                shown = ", ".join(unknown[:_NAMES_SHOWN])
                if len(unknown) > _NAMES_SHOWN:
                    shown += f" and {len(unknown) - _NAMES_SHOWN} more"
                label = data.get("request_id") or (
                    f"{data.get('package_name')} {data.get('group_name')}"
                )
                key = tuple(unknown[:_NAMES_SHOWN])
                first = key not in _warned
                if first and len(_warned) < _WARNED_MAX:
                    _warned.add(key)
                logger.log(
                    logging.WARNING if first else logging.DEBUG,
                    "request %s: ignoring unknown fields %s (known: %s)%s",
                    str(label)[:200],
                    shown,
                    ", ".join(sorted(cls.model_fields)),
                    "; later requests with these fields are logged at debug level" if first else "",
                    extra={"unknown_fields": unknown[:_NAMES_SHOWN]},
                )
        return data

    @field_validator("group_name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(c.isspace() for c in value) or value.startswith("-"):
            raise ValueError("group_name must be a single `stac` sub-command name")
        return value

    @property
    def packages(self) -> list[str]:
        """Everything uv must install next to stactools for this request."""
        return [self.package_name, *self.extra_packages]

    @property
    def label(self) -> str:
        """How logs and errors name this request."""
        return self.request_id or f"{self.package_name} {self.group_name}"


def _options(options: dict[str, str]) -> list[str]:
    """``{"href-format": "x"}`` becomes ``["--href-format", "x"]``, as in the original."""
    args: list[str] = []
    for name, value in options.items():
        args += [f"--{name.lstrip('-')}", value]
    return args


class ItemRequest(_PackageRequest):
    """Run ``stac <group> create-item <args> <options> <destination>``."""

    create_item_args: list[str] = Field(default_factory=list)
    create_item_options: dict[str, str] = Field(default_factory=dict)

    @property
    def command(self) -> str:
        return "create-item"

    @property
    def cli_args(self) -> list[str]:
        return [*self.create_item_args, *_options(self.create_item_options)]


class CollectionRequest(_PackageRequest):
    """Run ``stac <group> create-collection <args> <options> <destination>``."""

    create_collection_args: list[str] = Field(default_factory=list)
    create_collection_options: dict[str, str] = Field(default_factory=dict)
    partition_trunc: Literal["year", "month"] | None = Field(
        default=None,
        description="pgstac partitions the collection's items by year or month (else one "
        "partition); set before its items load",
    )

    @property
    def command(self) -> str:
        return "create-collection"

    @property
    def cli_args(self) -> list[str]:
        return [*self.create_collection_args, *_options(self.create_collection_options)]


Request = ItemRequest | CollectionRequest


def is_request(obj: Any) -> bool:
    """Whether a JSON object looks like a request rather than a STAC document."""
    return isinstance(obj, dict) and "package_name" in obj and "group_name" in obj


def parse_request(obj: Any) -> Request:
    """Validate a decoded message as a collection request (if it says so) or an item request."""
    if not isinstance(obj, dict):
        raise InvalidRequest(f"a request must be a JSON object, got {type(obj).__name__}")
    is_collection = "create_collection_args" in obj or "create_collection_options" in obj
    model = CollectionRequest if is_collection else ItemRequest
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
            for err in e.errors()
        )
        raise InvalidRequest(f"invalid {model.__name__}: {problems}") from None
