"""Dataset definitions: one YAML file per dataset under ``datasets/``, as stactools-pipelines keeps
one ``config.yaml`` per dataset.

A definition names the stactools package (pinned), its CLI group, the collection request, how an
href of the inventory becomes an item request, and the inventory itself. ``dataset run`` turns it
into the requests ``run`` and ``inventory`` already know; nothing here talks to a database or AWS.
A definition is validated as a whole before anything runs, and a mistake is one line naming the
file and the key (a misspelt key is refused, not ignored: it would silently change nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest_common.errors import IngestError
from item_gen.models import CollectionRequest
from stactools_ingest.checkpoint import Row
from stactools_ingest.inputs import InputProblem, InputRecord
from stactools_ingest.inventories import HrefFilter, count_hrefs, read_hrefs, request_for
from stactools_ingest.target import project_dir

DATASETS_DIR = "datasets"


class DatasetError(IngestError):
    """A dataset definition is missing or wrong; nothing ran."""

    exit_code = 2


class _Strict(BaseModel):
    # Unknown keys are refused: a typo in a key must not silently fall back to a default. Values
    # are not coerced: YAML reads 1.10 as 1.1 and 12:30:00 as 45000, so a string option must be
    # written as a string (quoted), not rewritten behind the user's back.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise DatasetError(f"{key}: given twice (lines {lines[key]} and {line})")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


class CollectionSpec(_Strict):
    """The collection request: ``stac <group> create-collection <args> <options>``."""

    id: str | None = Field(default=None, min_length=1, description="overrides the package's id")
    args: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    partition_trunc: Literal["year", "month"] | None = None


class ItemSpec(_Strict):
    """How each href of the inventory becomes ``stac <group> create-item <args> <options>``."""

    href_template: str = Field(default="{href}", description="the create-item argument")
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("href_template")
    @classmethod
    def _has_href(cls, value: str) -> str:
        if "{href}" not in value:
            raise ValueError("must contain {href}")
        return value


class InventorySpec(_Strict):
    """Where the hrefs come from: a list of hrefs or an S3 Inventory manifest.json."""

    source: str = Field(min_length=1)
    prefix: str | None = None
    suffix: str | None = None
    match: str | None = None

    @field_validator("match")
    @classmethod
    def _is_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"not a regular expression ({e})") from None
        return value

    def keep(self) -> HrefFilter:
        return HrefFilter(
            prefix=self.prefix,
            suffix=self.suffix,
            pattern=re.compile(self.match) if self.match else None,
        )

    def hrefs(self) -> Iterator[tuple[str, str]]:
        """``(where, href)`` of each href kept by the filters, in the inventory's order."""
        return read_hrefs(self.source, self.keep())


class Dataset(_Strict):
    """One dataset: the package, its collection and how its items are made from an inventory."""

    description: str | None = None
    package: str = Field(min_length=1, description="PyPI name with a pin: stactools-x==0.1.1")
    extra_packages: list[str] = Field(default_factory=list)
    group: str = Field(min_length=1)
    collection: CollectionSpec | None = None
    items: ItemSpec = Field(default_factory=ItemSpec)
    inventory: InventorySpec

    @field_validator("package")
    @classmethod
    def _pinned(cls, value: str) -> str:
        # A backfill of months must not change package version halfway through.
        try:
            requirement = Requirement(value)
        except InvalidRequirement as e:
            raise ValueError(f"not a package requirement ({e})") from None
        specs = list(requirement.specifier)
        exact = len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version
        if not (exact or requirement.url):
            raise ValueError(
                f"pin one exact version ({requirement.name}==X.Y.Z), so every item of a "
                "backfill is made by the same"
            )
        return value

    def _shared(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"package_name": self.package, "group_name": self.group}
        if self.extra_packages:
            fields["extra_packages"] = list(self.extra_packages)
        if self.collection and self.collection.id:
            fields["collection_id"] = self.collection.id
        return fields

    def collection_request(self) -> dict[str, Any] | None:
        """The collection request, as `run` and the ItemGen topic take it (None: none)."""
        if self.collection is None:
            return None
        request = CollectionRequest.model_validate(
            {
                **self._shared(),
                "create_collection_args": self.collection.args,
                "create_collection_options": self.collection.options,
                "partition_trunc": self.collection.partition_trunc,
            }
        )
        doc = request.model_dump(exclude_none=True)
        if not doc["extra_packages"]:
            del doc["extra_packages"]
        return doc

    def item_request(self, where: str, href: str) -> InputRecord | InputProblem:
        """The item request for one href of the inventory (as ``inventory`` builds them)."""
        template = {**self._shared(), "create_item_options": self.items.options}
        return request_for(where, href, template, self.items.href_template)

    def count(self) -> int | None:
        """How many requests ``records`` yields (None for an inventory in S3: not read twice)."""
        hrefs = count_hrefs(self.inventory.source, self.inventory.keep())
        return None if hrefs is None else hrefs + (self.collection is not None)

    def records(self, name: str) -> Iterator[InputRecord | InputProblem]:
        """The collection request, then one item request per href of the inventory."""
        return (row.record for row in self.rows(name) if row.record is not None)

    def rows(self, name: str, skip: int = 0) -> Iterator[Row]:
        """``records`` as a backfill's rows (keyed by href; the first ``skip`` not built)."""
        collection = self.collection_request()
        head = [] if collection is None else [("collection", "", collection)]
        items = ((href, where, None) for where, href in self.inventory.hrefs())
        for n, (key, where, request) in enumerate(chain(head, items)):
            if n < skip:
                yield Row(key, None)
            elif request is not None:
                yield Row(key, InputRecord(f"{name}:collection", request))
            else:
                yield Row(key, self.item_request(where, key))


def find(name: str) -> Path:
    """The definition file NAME stands for: a path, else ``datasets/NAME.yaml`` here or at the
    project's top (the git checkout holding the current directory)."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") or given.is_file():
        if not given.is_file():
            raise DatasetError(f"{name}: no such file")
        return given
    for place in _places():
        for suffix in (".yaml", ".yml"):
            if (place / f"{name}{suffix}").is_file():
                return place / f"{name}{suffix}"
    known = sorted({p.stem for p in definitions()})
    hint = f" (known: {', '.join(known)})" if known else ""
    raise DatasetError(f"no dataset {name!r}: no {DATASETS_DIR}/{name}.yaml{hint}")


def definitions() -> list[Path]:
    """Every definition file under ``datasets/`` here and at the project's top."""
    return sorted({p for place in _places() if place.is_dir() for p in place.glob("*.y*ml")})


def _places() -> list[Path]:
    return list(dict.fromkeys([Path.cwd() / DATASETS_DIR, project_dir() / DATASETS_DIR]))


def load(path: Path) -> Dataset:
    """The definition in ``path``, or DatasetError: one line naming the file and the key."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except DatasetError as e:
        raise DatasetError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DatasetError(f"{where}: not valid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a dataset definition is a mapping of keys (package, group, …)")
    try:
        dataset = Dataset.model_validate(data)
    except ValidationError as e:
        raise DatasetError(_first_error(path, e)) from None
    try:  # what ItemGen checks of a request (the group's form, …), once, before any href
        dataset.collection_request()
    except ValidationError as e:
        first = e.errors()[0]
        raise DatasetError(f"{path}: {first['msg'].removeprefix('Value error, ')}") from None
    sample = dataset.item_request(str(path), "example.tif")
    if isinstance(sample, InputProblem):
        raise DatasetError(f"{path}: {sample.reason.removeprefix('invalid request: ')}")
    return dataset


def _first_error(path: Path, error: ValidationError) -> str:
    errors = error.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        model: type[BaseModel] = Dataset
        for part in first["loc"][:-1]:
            annotation = model.model_fields[str(part)].annotation
            model = next(
                (
                    t
                    for t in getattr(annotation, "__args__", (annotation,))
                    if isinstance(t, type) and issubclass(t, BaseModel)
                ),
                model,
            )
        message = f"unknown key (known: {', '.join(model.model_fields)})"
    elif first["type"] == "missing":
        message = "missing (required)"
    elif first["type"] == "string_type" and not isinstance(first.get("input"), dict | list):
        message += (
            f" (quote it: YAML reads {first['input']!r} as a {type(first['input']).__name__})"
        )
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {key}: {message}{more}"
